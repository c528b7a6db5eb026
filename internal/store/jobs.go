package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bg-worker/bg-worker/internal/store/dbsqlc"
)

// Run statuses and triggers, as job_runs stores them.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
	StatusAbandoned = "abandoned"
	StatusSkipped   = "skipped"

	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
)

// ErrTickClaimed means another run (here or on another replica) already claimed the
// window, or the claiming session no longer holds the job's lock.
var ErrTickClaimed = errors.New("tick window already claimed")

// JobRun is one row of job_runs (the store's own type: sqlc's stay in this package).
type JobRun struct {
	ID         int64           `json:"id"`
	Job        string          `json:"job"`
	TickAt     time.Time       `json:"tick_at"`
	Trigger    string          `json:"trigger"`
	WorkerID   string          `json:"worker_id"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	Status     string          `json:"status"`
	Error      string          `json:"error,omitempty"` // "" when none
	Stats      json.RawMessage `json:"stats"`
	LockPID    int32           `json:"lock_pid,omitempty"` // the lock session's backend (0: none)
	RequestID  string          `json:"request_id,omitempty"`
}

func toJobRun(r dbsqlc.JobRun) JobRun {
	return JobRun{ID: r.ID, Job: r.Job, TickAt: r.TickAt, Trigger: r.Trigger, WorkerID: r.WorkerID,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Status: r.Status, Error: r.Error.String,
		Stats: r.Stats, LockPID: r.LockPid.Int32, RequestID: r.RequestID.String}
}

// JobInfo is one row of worker_jobs as status shows it.
type JobInfo struct {
	Name          string
	LockNamespace int32
	LockKey       int32
	Interval      time.Duration
	Paused        bool
	PausedUntil   *time.Time // nil: not paused, or until resumed
	PausedAt      *time.Time
	PausedBy      string
	PausedReason  string
}

// Claim is a claimed tick window.
type Claim struct {
	RunID     int64
	TickAt    time.Time
	StartedAt time.Time
}

// RegisterJob records a job and its lock key and returns the recorded interval.
func (s *Store) RegisterJob(ctx context.Context, name string, ns, key int32, interval time.Duration) (recorded time.Duration, err error) {
	params := dbsqlc.WorkerJobRegisterParams{
		Name: name, LockNamespace: ns, LockKey: key, IntervalMs: interval.Milliseconds(),
	}
	row, err := s.q.WorkerJobRegister(ctx, params)
	// Replicas that start together insert the same new row at once. ON CONFLICT (name)
	// settles a conflict on the name only: the losing insert can meet the winner on the
	// unique (lock_namespace, lock_key) index first and fail with unique_violation. By
	// then the winner has committed, so the second attempt takes the ON CONFLICT path.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && s.pool != nil {
		row, err = s.q.WorkerJobRegister(ctx, params)
	}
	if err != nil {
		return 0, fmt.Errorf("register job %s: %w", name, err)
	}
	if row.LockNamespace != ns || row.LockKey != key {
		return 0, fmt.Errorf("register job %s: recorded lock key (%d,%d) differs from (%d,%d)", name, row.LockNamespace, row.LockKey, ns, key)
	}
	return time.Duration(row.IntervalMs) * time.Millisecond, nil
}

// SetJobInterval records a job's interval.
func (s *Store) SetJobInterval(ctx context.Context, name string, interval time.Duration) error {
	return s.q.WorkerJobSetInterval(ctx, dbsqlc.WorkerJobSetIntervalParams{Name: name, IntervalMs: interval.Milliseconds()})
}

// SetHolder records, right after a replica takes a job's lock, who took it and when;
// worker_lock_holders shows it while pg_locks agrees.
func (s *Store) SetHolder(ctx context.Context, job, workerID string, pid int32) error {
	return s.q.WorkerJobSetHolder(ctx, dbsqlc.WorkerJobSetHolderParams{
		Name: job, WorkerID: pgtype.Text{String: workerID, Valid: true}, HolderPid: pgtype.Int4{Int32: pid, Valid: true},
	})
}

// ListJobs returns worker_jobs.
func (s *Store) ListJobs(ctx context.Context) ([]JobInfo, error) {
	rows, err := s.q.WorkerJobList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]JobInfo, len(rows))
	for i, r := range rows {
		out[i] = JobInfo{Name: r.Name, LockNamespace: r.LockNamespace, LockKey: r.LockKey,
			Interval: time.Duration(r.IntervalMs) * time.Millisecond, Paused: r.Paused,
			PausedUntil: msTime(r.PausedUntilMs), PausedAt: r.PausedAt, PausedBy: r.PausedBy, PausedReason: r.PausedReason}
	}
	return out, nil
}

// LockRef names the advisory lock (namespace, key) a session (backend PID) must hold
// for a claim to count.
type LockRef struct {
	Namespace, Key int32
	PID            int32
}

// ClaimTick claims the current window of job (database clock) for a scheduled run with
// the given status (running, or skipped when an earlier run still overlaps it), in one
// statement that also checks the lock session still holds the job's lock.
// ErrTickClaimed when the window is taken or the lock is not held (any more).
func (s *Store) ClaimTick(ctx context.Context, job string, interval time.Duration, workerID, status string, lock LockRef) (Claim, error) {
	row, err := s.q.JobRunClaim(ctx, dbsqlc.JobRunClaimParams{
		Job: job, IntervalMs: interval.Milliseconds(), WorkerID: workerID, Status: status,
		LockPid: lock.PID, LockNamespace: int64(lock.Namespace), LockKey: int64(lock.Key),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, ErrTickClaimed
	}
	if err != nil {
		return Claim{}, fmt.Errorf("claim tick of %s: %w", job, err)
	}
	return Claim{RunID: row.ID, TickAt: row.TickAt, StartedAt: row.StartedAt}, nil
}

// ClaimWindow is ClaimTick for a window the caller computed (a calendar schedule): the
// claim holds only while the database clock is in [tickAt, claimUntil).
func (s *Store) ClaimWindow(ctx context.Context, job string, tickAt, claimUntil time.Time, workerID, status string, lock LockRef) (Claim, error) {
	row, err := s.q.JobRunClaimWindow(ctx, dbsqlc.JobRunClaimWindowParams{
		Job: job, TickAt: tickAt, ClaimUntil: claimUntil, WorkerID: workerID, Status: status,
		LockPid: lock.PID, LockNamespace: int64(lock.Namespace), LockKey: int64(lock.Key),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, ErrTickClaimed
	}
	if err != nil {
		return Claim{}, fmt.Errorf("claim window %s of %s: %w", tickAt.Format(time.RFC3339), job, err)
	}
	return Claim{RunID: row.ID, TickAt: row.TickAt, StartedAt: row.StartedAt}, nil
}

// StartManualRun records a manual run (outside the window claim).
func (s *Store) StartManualRun(ctx context.Context, job, workerID string, lockPID int32, requestID string) (Claim, error) {
	row, err := s.q.JobRunStartManual(ctx, dbsqlc.JobRunStartManualParams{
		Job: job, WorkerID: workerID, LockPid: pgtype.Int4{Int32: lockPID, Valid: lockPID != 0},
		RequestID: pgtype.Text{String: requestID, Valid: requestID != ""},
	})
	if err != nil {
		return Claim{}, fmt.Errorf("start manual run of %s: %w", job, err)
	}
	return Claim{RunID: row.ID, TickAt: row.TickAt, StartedAt: row.StartedAt}, nil
}

// FinishRun records a run's outcome. It reports false when the run was no longer
// running (a new leader marked it abandoned), in which case nothing changed.
func (s *Store) FinishRun(ctx context.Context, id int64, status, errMsg string, stats any) (bool, error) {
	raw := json.RawMessage("{}")
	if stats != nil {
		b, err := json.Marshal(stats)
		if err != nil {
			return false, fmt.Errorf("encode stats: %w", err)
		}
		raw = b
	}
	n, err := s.q.JobRunFinish(ctx, dbsqlc.JobRunFinishParams{
		ID: id, Status: status, Error: pgtype.Text{String: errMsg, Valid: errMsg != ""}, Stats: raw,
	})
	if err != nil {
		return false, fmt.Errorf("finish run %d: %w", id, err)
	}
	return n == 1, nil
}

// FinishSkipped stamps a skipped window's row.
func (s *Store) FinishSkipped(ctx context.Context, id int64) error {
	return s.q.JobRunFinishSkipped(ctx, id)
}

// RunningRun is a run still marked running.
type RunningRun struct {
	ID       int64
	WorkerID string
	TickAt   time.Time
}

// RunningRuns lists runs of job still marked running.
func (s *Store) RunningRuns(ctx context.Context, job string) ([]RunningRun, error) {
	rows, err := s.q.JobRunListRunning(ctx, job)
	if err != nil {
		return nil, fmt.Errorf("list running runs of %s: %w", job, err)
	}
	out := make([]RunningRun, len(rows))
	for i, r := range rows {
		out[i] = RunningRun{ID: r.ID, WorkerID: r.WorkerID, TickAt: r.TickAt}
	}
	return out, nil
}

// AbandonRun marks a running run abandoned; false if it had already finished.
//
// It waits, without the pool's lock_timeout, for fenced writes of that run still in
// flight (they hold its row FOR SHARE): once it returns, none of them can commit. The
// wait is bounded by the old session's idle_in_transaction_session_timeout.
func (s *Store) AbandonRun(ctx context.Context, id int64, reason string) (bool, error) {
	abandon := func(q *dbsqlc.Queries) (bool, error) {
		n, err := q.JobRunAbandon(ctx, dbsqlc.JobRunAbandonParams{ID: id, Error: pgtype.Text{String: reason, Valid: true}})
		return n == 1, err
	}
	if s.pool == nil {
		return abandon(s.q)
	}
	var ok bool
	err := s.Tx(ctx, func(tx *Store) error {
		if _, err := tx.db.Exec(ctx, `SET LOCAL lock_timeout = 0`); err != nil {
			return err
		}
		var err error
		ok, err = abandon(tx.q)
		return err
	})
	return ok, err
}

// GetRun returns one run.
func (s *Store) GetRun(ctx context.Context, id int64) (JobRun, error) {
	r, err := s.q.JobRunGet(ctx, id)
	return toJobRun(r), notFound(err)
}

// GetRunByRequest returns the run a `once` request started.
func (s *Store) GetRunByRequest(ctx context.Context, requestID string) (JobRun, error) {
	r, err := s.q.JobRunGetByRequest(ctx, pgtype.Text{String: requestID, Valid: true})
	return toJobRun(r), notFound(err)
}

// RecentRuns returns the newest runs of job.
func (s *Store) RecentRuns(ctx context.Context, job string, n int) ([]JobRun, error) {
	rows, err := s.q.JobRunListRecent(ctx, dbsqlc.JobRunListRecentParams{Job: job, MaxRows: int32(n)})
	if err != nil {
		return nil, fmt.Errorf("recent runs of %s: %w", job, err)
	}
	out := make([]JobRun, len(rows))
	for i, r := range rows {
		out[i] = toJobRun(r)
	}
	return out, nil
}

// PruneRuns deletes up to max finished runs started before before.
func (s *Store) PruneRuns(ctx context.Context, before time.Time, max int) (int64, error) {
	return s.q.JobRunPrune(ctx, dbsqlc.JobRunPruneParams{Before: before, MaxRows: int32(max)})
}

// Now is the database clock.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	return s.q.JobRunDBNow(ctx)
}

// LockHolder is one row of the worker_lock_holders view.
type LockHolder struct {
	Job          string     `json:"job"`
	WorkerID     string     `json:"worker_id"`
	PID          int32      `json:"pid"`
	ClientAddr   string     `json:"client_addr,omitempty"`
	HeldSince    *time.Time `json:"held_since"`
	RunningSince *time.Time `json:"running_since"`
	TickAt       *time.Time `json:"tick_at"`
}

// LockHolders reads worker_lock_holders (hand-written: sqlc cannot see pg_locks).
func (s *Store) LockHolders(ctx context.Context) ([]LockHolder, error) {
	rows, err := s.db.Query(ctx, `SELECT job, coalesce(worker_id, ''), pid, client_addr, held_since, running_since, tick_at
		FROM worker_lock_holders ORDER BY job`)
	if err != nil {
		return nil, fmt.Errorf("read worker_lock_holders: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (LockHolder, error) {
		var h LockHolder
		var addr *netip.Prefix
		err := r.Scan(&h.Job, &h.WorkerID, &h.PID, &addr, &h.HeldSince, &h.RunningSince, &h.TickAt)
		if addr != nil {
			h.ClientAddr = addr.Addr().String()
		}
		return h, err
	})
}

// Pause is a job's fleet-wide pause.
type Pause struct {
	Paused bool
	Until  *time.Time // nil: until resumed
	By     string
	Reason string
	// CancelRunning: the leader also cancels a run in progress (`pause --now`).
	CancelRunning bool
}

func msTime(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

// PauseJob pauses job on every replica from its next window: for d (0: until resumed).
// ErrNotFound when no replica ever registered the job.
func (s *Store) PauseJob(ctx context.Context, job string, d time.Duration, by, reason string, cancelRunning bool) error {
	n, err := s.q.WorkerJobPause(ctx, dbsqlc.WorkerJobPauseParams{Name: job, ForMs: d.Milliseconds(), PausedBy: by,
		Reason: reason, CancelRunning: cancelRunning})
	if err != nil {
		return fmt.Errorf("pause %s: %w", job, err)
	}
	if n == 0 {
		return fmt.Errorf("pause %s: %w (no replica has registered it)", job, ErrNotFound)
	}
	return nil
}

// ResumeJob ends a job's pause; its leader runs it again from the next window.
func (s *Store) ResumeJob(ctx context.Context, job string) error {
	n, err := s.q.WorkerJobResume(ctx, job)
	if err != nil {
		return fmt.Errorf("resume %s: %w", job, err)
	}
	if n == 0 {
		return fmt.Errorf("resume %s: %w (no replica has registered it)", job, ErrNotFound)
	}
	return nil
}

// JobPause reads job's pause.
func (s *Store) JobPause(ctx context.Context, job string) (Pause, error) {
	r, err := s.q.WorkerJobPauseState(ctx, job)
	if err != nil {
		return Pause{}, notFound(err)
	}
	return Pause{Paused: r.Paused, Until: msTime(r.PausedUntilMs), By: r.PausedBy, Reason: r.PausedReason,
		CancelRunning: r.PauseCancels}, nil
}

// Notify sends payload on a LISTEN/NOTIFY channel (the `once` protocol).
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if _, err := s.db.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}
