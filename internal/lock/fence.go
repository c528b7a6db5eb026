package lock

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrLockLost means the run no longer owns its job: the lock session ended (or the run
// was marked abandoned by a new leader). Writes guarded by a Fence fail with it.
var ErrLockLost = errors.New("job lock lost")

// Querier is a connection, pool or transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Fence identifies a run and the lock session it runs under.
type Fence struct {
	RunID int64
	Key   Key
	PID   int32 // backend pid of the lock session
}

// fenceSQL holds when the run is still marked running and its lock session still holds
// the job's lock. FOR SHARE pins the run row until the caller's transaction ends, so a
// new leader's "mark abandoned" waits for in-flight writes and every later check fails.
const fenceSQL = `SELECT r.id FROM job_runs r
WHERE r.id = $1 AND r.status = 'running'
  AND EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $2
      AND l.classid::bigint = $3 AND l.objid::bigint = $4 AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
FOR SHARE OF r`

// Check verifies the fence on q. Inside a transaction it must be the first statement
// before the writes it guards: they then commit only if the run still owned the job.
func (f Fence) Check(ctx context.Context, q Querier) error {
	var id int64
	err := q.QueryRow(ctx, fenceSQL, f.RunID, f.PID, int64(f.Key.Namespace), int64(f.Key.ID)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("run %d: %w", f.RunID, ErrLockLost)
	}
	if err != nil {
		return fmt.Errorf("fence check of run %d: %w", f.RunID, err)
	}
	return nil
}
