//go:build e2e

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/schedule"
	"github.com/bg-worker/bg-worker/internal/store"
)

// extraJobs are the end-to-end tests' probes. Each run records itself in e2e_events (a
// table the test creates) through the fenced path, so the test sees exactly which writes
// committed and when (database clock):
//
//   - e2e-fast: one event per run.
//   - e2e-slow: an event every E2E_SLOW_STEP (50ms) for E2E_SLOW_FOR (default 2.5
//     intervals), so it overlaps later windows and writes throughout its run; with
//     E2E_SLOW_IGNORE_CANCEL=true it ignores cancellation and write errors.
func extraJobs(d jobs.Deps) []jobs.Job {
	interval := d.Config.Interval
	slowFor := envDuration("E2E_SLOW_FOR", interval*5/2)
	step := envDuration("E2E_SLOW_STEP", 50*time.Millisecond)
	stubborn := os.Getenv("E2E_SLOW_IGNORE_CANCEL") == "true"
	event := func(ctx context.Context, r jobs.Run, job string, seq int) error {
		return r.Fenced(ctx, func(tx *store.Store) error {
			_, err := tx.DB().Exec(ctx, `INSERT INTO e2e_events (job, run_id, worker_id, seq, at)
				VALUES ($1, $2, $3, $4, clock_timestamp())`, job, r.ID(), d.Config.WorkerID, seq)
			return err
		})
	}
	// E2E_FAST_SCHEDULE gives e2e-fast a calendar schedule (a cron expression, e.g.
	// "*/1 * * * * *" for every second) instead of the interval.
	var fastSched schedule.Schedule
	fastInterval := interval
	if v := os.Getenv("E2E_FAST_SCHEDULE"); v != "" {
		s, err := schedule.Parse(v)
		if err != nil {
			panic(fmt.Sprintf("E2E_FAST_SCHEDULE: %v", err))
		}
		fastSched, fastInterval = s, s.Period()
	}
	return []jobs.Job{
		{Name: "e2e-fast", Interval: fastInterval, Schedule: fastSched, Description: "test probe: one fenced write per run",
			Run: func(ctx context.Context, r jobs.Run) error { return event(ctx, r, "e2e-fast", 0) }},
		// E2E_SLOW_EFFECTS=true declares effects outside the database (the takeover
		// then waits out the lock bound).
		{Name: "e2e-slow", Interval: interval, Description: "test probe: fenced writes for 2.5 intervals",
			ExternalEffects: os.Getenv("E2E_SLOW_EFFECTS") == "true",
			Run: func(ctx context.Context, r jobs.Run) error {
				end := time.Now().Add(slowFor)
				for seq := 0; time.Now().Before(end); seq++ {
					if stubborn {
						// A job that ignores cancellation and errors: it keeps trying to
						// write until its time is up (the fence must stop every write).
						_ = event(context.WithoutCancel(ctx), r, "e2e-slow", seq)
						time.Sleep(step)
						continue
					}
					if err := event(ctx, r, "e2e-slow", seq); err != nil {
						return err
					}
					select {
					case <-ctx.Done():
						return context.Cause(ctx)
					case <-time.After(step):
					}
				}
				return nil
			}},
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		if ms, err := strconv.Atoi(v); err == nil {
			return time.Duration(ms) * time.Millisecond
		}
	}
	return def
}
