package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/store"
)

// StoreSource is the DBSource of a running replica: its store (search_path = the
// worker's schema) and R2_PREFIX.
type StoreSource struct {
	Store  *store.Store
	Prefix string
}

// NewStoreSource returns the database source for the collector.
func NewStoreSource(st *store.Store, prefix string) *StoreSource {
	return &StoreSource{Store: st, Prefix: prefix}
}

// jobsQuery reads every registered job in one statement: its interval, newest success
// (job_runs_job_id_idx, newest first), runs marked running (job_runs_running_idx) and
// pause (bg-worker pause) and lock holder (worker_lock_holders: pg_locks is the truth),
// with the database clock.
const jobsQuery = `
SELECT clock_timestamp()::timestamptz AS now,
       j.name,
       j.interval_ms,
       (SELECT r.finished_at FROM job_runs r
         WHERE r.job = j.name AND r.status = 'succeeded'
         ORDER BY r.id DESC LIMIT 1) AS last_success,
       (SELECT count(*) FROM job_runs r WHERE r.job = j.name AND r.status = 'running')::int AS running,
       coalesce(j.paused_until > now(), false) AS paused,
       h.worker_id
FROM worker_jobs j
LEFT JOIN (SELECT job, coalesce(worker_id, '') AS worker_id FROM worker_lock_holders) h ON h.job = j.name
ORDER BY j.name, h.worker_id`

// Jobs implements DBSource.
func (s *StoreSource) Jobs(ctx context.Context) (JobsState, error) {
	rows, err := s.Store.DB().Query(ctx, jobsQuery)
	if err != nil {
		return JobsState{}, fmt.Errorf("read jobs: %w", err)
	}
	st, err := scanJobs(rows)
	if err != nil {
		return JobsState{}, fmt.Errorf("read jobs: %w", err)
	}
	return st, nil
}

// scanJobs folds the rows of jobsQuery into a JobsState.
func scanJobs(rows pgx.Rows) (JobsState, error) {
	defer rows.Close()
	var st JobsState
	idx := map[string]int{}
	for rows.Next() {
		var (
			now         time.Time
			name        string
			intervalMS  int64
			lastSuccess *time.Time
			running     int32
			paused      bool
			worker      *string
		)
		if err := rows.Scan(&now, &name, &intervalMS, &lastSuccess, &running, &paused, &worker); err != nil {
			return JobsState{}, err
		}
		st.Now = now
		i, ok := idx[name]
		if !ok {
			i = len(st.Jobs)
			idx[name] = i
			j := JobState{Job: name, Interval: time.Duration(intervalMS) * time.Millisecond, Running: int(running), Paused: paused}
			if lastSuccess != nil {
				j.LastSuccess = *lastSuccess
			}
			st.Jobs = append(st.Jobs, j)
		}
		if worker != nil {
			st.Jobs[i].Leaders = append(st.Jobs[i].Leaders, *worker)
		}
	}
	return st, rows.Err()
}

// Uploads implements DBSource: store.UploadDueSummary, as `bg-worker status` counts them.
func (s *StoreSource) Uploads(ctx context.Context) (UploadsState, error) {
	d, err := s.Store.UploadDueSummary(ctx, s.Prefix)
	if err != nil {
		return UploadsState{}, err
	}
	return UploadsState{Pending: d.Pending, Due: d.Due}, nil
}
