package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/store"
)

// RunNowOptions is what RunNow needs: the database, this process's name and lock
// settings, and the hooks a run here reports to.
type RunNowOptions struct {
	Store      *store.Store
	ConnConfig *pgx.ConnConfig // for the dedicated lock and listener sessions
	Logger     *slog.Logger
	WorkerID   string
	Lock       lock.Options
	Hooks      []RunHook
	// KeepRunningOnLeaseLoss exists for tests of the fence alone: a run here is not
	// cancelled when its lease ends, so only its fenced writes notice a lost lock.
	// Production leaves it false (the lease's end cancels the run, as the scheduler does).
	KeepRunningOnLeaseLoss bool
}

// RunNowResult is the outcome of a requested run.
type RunNowResult struct {
	RunID    int64
	Status   string // as recorded in job_runs
	WorkerID string // the replica that ran it
	Here     bool   // this process ran it (no replica held the lock)
	Error    string // the run's error, if any
}

// ErrNoAnswer means the lock holder did not finish the requested run before ctx ended.
var ErrNoAnswer = errors.New("no answer from the lock holder in time")

// RunNow runs job once, now, outside the window claim (trigger manual): here, under the
// job's lock, when no replica holds it; otherwise it asks the holder over LISTEN/NOTIFY
// (RequestChannel) to run it after any run in progress, and waits for that run. ctx
// bounds the whole request: a run here is cancelled when it ends, a remote wait returns
// ErrNoAnswer. The run here follows the scheduler's path exactly: take over from a dead
// holder, the job's timeout, the lease cancelling the run, fenced writes, hooks.
func RunNow(ctx context.Context, o RunNowOptions, job jobs.Job) (RunNowResult, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("job", job.Name)
	// Listen before asking, so the answer cannot slip past.
	listener, err := pgx.ConnectConfig(ctx, o.ConnConfig)
	if err != nil {
		return RunNowResult{}, fmt.Errorf("connect: %w", err)
	}
	defer listener.Close(context.WithoutCancel(ctx))
	if _, err := listener.Exec(ctx, "LISTEN "+DoneChannel); err != nil {
		return RunNowResult{}, fmt.Errorf("listen: %w", err)
	}
	lo := o.Lock
	lo.Logger = log
	sess := lock.NewSession(o.ConnConfig, lock.KeyFor(job.Name), lo)
	defer sess.Close(context.WithoutCancel(ctx))
	lease, _, err := sess.TryAcquire(ctx)
	if err != nil {
		return RunNowResult{}, err
	}
	if lease != nil {
		return runHere(ctx, o, log, job, sess, lease)
	}
	return runRemote(ctx, o, log, listener, job)
}

func runHere(ctx context.Context, o RunNowOptions, log *slog.Logger, job jobs.Job, sess *lock.Session, lease *lock.Lease) (RunNowResult, error) {
	defer func() { _ = sess.Release(context.WithoutCancel(ctx)) }()
	st := o.Store
	if err := st.SetHolder(ctx, job.Name, o.WorkerID, lease.PID); err != nil {
		return RunNowResult{}, err
	}
	if err := takeOverRuns(ctx, st, log, job.Name, o.WorkerID, lease, takeOverWait(job, sess.Options()), 0); err != nil {
		return RunNowResult{}, err
	}
	claim, err := st.StartManualRun(ctx, job.Name, o.WorkerID, lease.PID, "")
	if err != nil {
		return RunNowResult{}, err
	}
	log.Info("No replica holds the lock; running here", "run_id", claim.RunID)
	runCtx, cancel := runContext(ctx, job, lease, o.Hooks, !o.KeepRunningOnLeaseLoss)
	defer cancel(nil)
	status, jobErr := runJob(runCtx, st, log, job, sess.Key(), lease.PID, claim, store.TriggerManual)
	res := RunNowResult{RunID: claim.RunID, Status: status, WorkerID: o.WorkerID, Here: true}
	if jobErr != nil {
		res.Error = jobErr.Error()
	}
	return res, nil
}

func runRemote(ctx context.Context, o RunNowOptions, log *slog.Logger, listener *pgx.Conn, job jobs.Job) (RunNowResult, error) {
	id := newRequestID()
	payload, _ := json.Marshal(ManualRequest{Job: job.Name, RequestID: id})
	if err := o.Store.Notify(ctx, RequestChannel, string(payload)); err != nil {
		return RunNowResult{}, err
	}
	log.Info("Another replica holds the lock; asked it to run now", "request_id", id)
	for {
		// Wake on the answer, or every second to look for the run row in case the
		// notification was lost (the holder's listener reconnects).
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return RunNowResult{}, fmt.Errorf("%w (request %s)", ErrNoAnswer, id)
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return RunNowResult{}, err
		}
		if n != nil && n.Payload != id {
			continue
		}
		r, err := o.Store.GetRunByRequest(ctx, id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && r.Status == store.StatusRunning) {
			continue
		}
		if err != nil {
			return RunNowResult{}, err
		}
		return RunNowResult{RunID: r.ID, Status: r.Status, WorkerID: r.WorkerID, Error: r.Error}, nil
	}
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
