package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/wiring"
)

// cmdOnce runs one job now: here when no replica holds its lock, otherwise on the holder
// (asked over NOTIFY), waiting for that run's outcome.
func cmdOnce(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("once", stderr)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the run")
	name, err := parseJobFlags(fs, args, "bg-worker once JOB [--timeout D]")
	if err != nil {
		return err
	}
	if *timeout <= 0 {
		return &usageError{errors.New("--timeout must be positive")}
	}
	cfg, log, err := setup(env, true, stderr)
	if err != nil {
		return err
	}
	deps, err := newDeps(cfg, log, metrics.New())
	if err != nil {
		return err
	}
	job, ok := jobs.Find(registry(deps), name)
	if !ok {
		return &usageError{fmt.Errorf("unknown job %q (see bg-worker jobs)", name)}
	}
	if job.UsesBucket {
		if err := cfg.RequireBucket(); err != nil {
			return &usageError{err}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := openStore(ctx, cfg, log, 8, false)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := schemaReady(ctx, st); err != nil {
		return err
	}
	if err := scheduler.RegisterJobs(ctx, st, log, []jobs.Job{job}, false); err != nil {
		return err
	}
	connCfg, err := store.ParseConfig(cfg.DatabaseURL, cfg.WorkerID)
	if err != nil {
		return &usageError{&config.Error{Var: "DATABASE_URL", Msg: err.Error()}}
	}
	reporter := newSentry(cfg, log)
	defer reporter.Flush()
	res, err := scheduler.RunNow(ctx, scheduler.RunNowOptions{
		Store: st, ConnConfig: connCfg, Logger: log, WorkerID: cfg.WorkerID,
		Lock: wiring.LockOptions(cfg), Hooks: reporter.Hooks(),
	}, job)
	if errors.Is(err, scheduler.ErrNoAnswer) {
		return &exitError{code: exitTimeout, err: err}
	}
	if err != nil {
		return err
	}
	if res.Here {
		fmt.Fprintf(stdout, "run %d %s\n", res.RunID, res.Status)
	} else {
		fmt.Fprintf(stdout, "run %d %s on %s\n", res.RunID, res.Status, res.WorkerID)
	}
	if res.Status != store.StatusSucceeded {
		if res.Here && ctx.Err() != nil {
			return &exitError{code: exitTimeout, err: fmt.Errorf("run %d %s: %s", res.RunID, res.Status, res.Error)}
		}
		return &exitError{code: exitFailed, err: fmt.Errorf("run %d %s: %s", res.RunID, res.Status, res.Error)}
	}
	return nil
}
