package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
)

// cmdOnce runs one job now: here when no replica holds its lock, otherwise on the holder
// (asked over NOTIFY), waiting for that run's outcome.
func cmdOnce(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("once", stderr)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the run")
	// Accept flags before or after JOB.
	var name string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" || fs.NArg() > 1 || (fs.NArg() == 1 && fs.Arg(0) != name) {
		return &usageError{errors.New("usage: bg-worker once JOB [--timeout D]")}
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
	jlog := log.With("job", job.Name)

	// Listen before asking, so the answer cannot slip past.
	listener, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, "LISTEN "+scheduler.DoneChannel); err != nil {
		return err
	}

	sess := lock.NewSession(connCfg, lock.KeyFor(job.Name), lock.Options{Heartbeat: cfg.LockHeartbeat, Timeout: cfg.LockTimeout, Logger: jlog})
	defer sess.Close(context.Background())
	lease, _, err := sess.TryAcquire(ctx)
	if err != nil {
		return err
	}
	if lease != nil {
		return onceHere(ctx, st, jlog, cfg, job, sess, lease, stdout)
	}
	return onceRemote(ctx, st, jlog, listener, job, stdout)
}

func onceHere(ctx context.Context, st *store.Store, log *slog.Logger, cfg config.Config, job jobs.Job, sess *lock.Session, lease *lock.Lease, stdout io.Writer) error {
	if err := st.SetHolder(ctx, job.Name, cfg.WorkerID, lease.PID); err != nil {
		return err
	}
	if err := scheduler.TakeOver(ctx, st, log, job.Name, cfg.WorkerID, lease, scheduler.TakeOverWait(job, sess.Options()), 0); err != nil {
		return err
	}
	claim, err := st.StartManualRun(ctx, job.Name, cfg.WorkerID, lease.PID, "")
	if err != nil {
		return err
	}
	log.Info("No replica holds the lock; running here", "run_id", claim.RunID)
	reporter := newSentry(cfg, log)
	defer reporter.Flush()
	// The job's timeout applies to a manual run too (JOB_TIMEOUTS), as on the scheduler.
	tctx, cancelTimeout := context.WithTimeoutCause(ctx, job.EffectiveTimeout(), &scheduler.TimeoutError{Timeout: job.EffectiveTimeout()})
	defer cancelTimeout()
	runCtx, cancel := scheduler.WithLease(scheduler.WithHooks(tctx, reporter.Hooks()...), lease)
	defer cancel(nil)
	status, jobErr := scheduler.RunJob(runCtx, st, log, job, sess.Key(), lease.PID, claim, store.TriggerManual)
	_ = sess.Release(context.WithoutCancel(ctx))
	fmt.Fprintf(stdout, "run %d %s\n", claim.RunID, status)
	if status != store.StatusSucceeded {
		if ctx.Err() != nil {
			return &exitError{code: exitTimeout, err: fmt.Errorf("run %d %s: %v", claim.RunID, status, jobErr)}
		}
		return &exitError{code: exitFailed, err: fmt.Errorf("run %d %s: %v", claim.RunID, status, jobErr)}
	}
	return nil
}

func onceRemote(ctx context.Context, st *store.Store, log *slog.Logger, listener *pgx.Conn, job jobs.Job, stdout io.Writer) error {
	id := requestID()
	payload, _ := json.Marshal(scheduler.ManualRequest{Job: job.Name, RequestID: id})
	if _, err := st.DB().Exec(ctx, `SELECT pg_notify($1, $2)`, scheduler.RequestChannel, string(payload)); err != nil {
		return err
	}
	log.Info("Another replica holds the lock; asked it to run now", "request_id", id)
	for {
		// Wake on the answer, or every second to look for the run row in case the
		// notification was lost (listener reconnects on the holder's side).
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return &exitError{code: exitTimeout, err: fmt.Errorf("no answer from the lock holder in time (request %s)", id)}
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if n != nil && n.Payload != id {
			continue
		}
		r, err := st.GetRunByRequest(ctx, id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && r.Status == store.StatusRunning) {
			continue
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "run %d %s on %s\n", r.ID, r.Status, r.WorkerID)
		if r.Status != store.StatusSucceeded {
			return &exitError{code: exitFailed, err: fmt.Errorf("run %d %s: %s", r.ID, r.Status, r.Error.String)}
		}
		return nil
	}
}

func requestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
