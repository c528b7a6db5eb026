package jobs

import (
	"context"
	"time"

	"github.com/bg-worker/bg-worker/internal/schedule"
	"github.com/bg-worker/bg-worker/internal/store"
)

// pruneBatch bounds each DELETE so pruning millions of old rows never holds long locks.
const pruneBatch = 5000

// pruneSchedule: once a day, at a quiet hour (UTC).
const pruneSchedule = "0 3 * * *"

// newPruneRuns deletes job_runs rows older than RUN_HISTORY_RETENTION, daily.
func newPruneRuns(d Deps) Job {
	retention := d.Config.RunHistoryRetention
	sched, err := schedule.ParseCron(pruneSchedule, "UTC")
	if err != nil {
		panic(err) // a constant: caught by every test
	}
	return Job{
		Name:        "prune-runs",
		Interval:    24 * time.Hour,
		Schedule:    sched,
		Description: "deletes job_runs rows and resolved upload state older than RUN_HISTORY_RETENTION",
		Run: func(ctx context.Context, r Run) error {
			total, err := pruneBatches(ctx, r, retention, (*store.Store).PruneRuns)
			if err != nil {
				return err
			}
			r.Stats().Set("pruned", total)
			// The worker's per-upload state: rows resolved before the retention, and rows
			// whose upload the application deleted or resolved itself.
			checks, err := pruneBatches(ctx, r, retention, (*store.Store).UploadPruneChecks)
			if err != nil {
				return err
			}
			r.Stats().Set("pruned_upload_checks", checks)
			r.Logger().Info("Pruned old runs", "pruned", total, "pruned_upload_checks", checks, "retention", retention)
			return nil
		},
	}
}

// pruneBatches calls prune (rows older than retention on the database clock, at most
// pruneBatch at a time) in fenced transactions until a batch comes back short.
func pruneBatches(ctx context.Context, r Run, retention time.Duration,
	prune func(s *store.Store, ctx context.Context, before time.Time, max int) (int64, error)) (int64, error) {
	var total int64
	for {
		var n int64
		err := r.Fenced(ctx, func(tx *store.Store) error {
			now, err := tx.Now(ctx)
			if err != nil {
				return err
			}
			n, err = prune(tx, ctx, now.Add(-retention), pruneBatch)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}
