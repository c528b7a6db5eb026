package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/schedule"
	"github.com/bg-worker/bg-worker/internal/store"
)

// leader is one job's loop on this replica.
type leader struct {
	s     *Scheduler
	job   jobs.Job
	log   *slog.Logger
	sess  *lock.Session
	lease *lock.Lease
	cur   *activeRun

	pending       []manualRequest
	paused        bool // the job was paused at the last look (logged once per pause)
	failures      int
	cooldownUntil time.Time
	acquireErrs   int
}

func newLeader(s *Scheduler, job jobs.Job) *leader {
	log := s.log.With("job", job.Name)
	lo := s.opts.Lock
	lo.Logger = log
	return &leader{s: s, job: job, log: log, sess: lock.NewSession(s.opts.ConnConfig, lock.KeyFor(job.Name), lo)}
}

func (l *leader) loop(ctx context.Context) {
	obs := l.s.opts.Observer
	timer := time.NewTimer(0) // first tick now: a fresh replica tries the lock at once
	defer timer.Stop()
	for {
		var leaseDone <-chan struct{}
		if l.lease != nil {
			leaseDone = l.lease.Done()
		}
		var runDone <-chan struct{}
		if l.cur != nil {
			runDone = l.cur.done
		}
		select {
		case <-ctx.Done():
			l.shutdown()
			return
		case <-timer.C:
			l.s.markTick(l.job.Name)
			l.tick(ctx)
			timer.Reset(l.nextWake())
		case <-leaseDone:
			l.log.Warn("Lost lock; no longer leading", "error", l.lease.Err())
			l.lease = nil
			// Stand back one interval: the replica whose session just failed should not
			// race the standbys for the lock at the very next boundary.
			l.cooldownUntil = time.Now().Add(l.job.Interval)
			obs.Leading(l.job.Name, false)
			if l.cur != nil {
				l.cur.cancel(lock.ErrLockLost)
			}
		case <-runDone:
			l.finished(ctx)
		case req := <-l.s.manual[l.job.Name]:
			if l.lease == nil {
				continue // only the holder answers
			}
			if l.cur == nil {
				l.startManual(ctx, req)
			} else {
				l.pending = append(l.pending, req)
			}
		}
	}
}

func (l *leader) tick(ctx context.Context) {
	obs := l.s.opts.Observer
	if l.lease == nil {
		if time.Now().Before(l.cooldownUntil) {
			obs.LockAttempt(l.job.Name, "cooldown")
			return
		}
		lease, _, err := l.sess.TryAcquire(ctx)
		if err != nil {
			obs.LockAttempt(l.job.Name, "error")
			l.acquireErrs++
			if l.acquireErrs == 1 || l.acquireErrs%60 == 0 {
				l.log.Warn("Could not try the job's lock", "error", err, "attempts", l.acquireErrs)
			}
			return
		}
		if l.acquireErrs > 0 {
			l.log.Info("Lock session reconnected", "failed_attempts", l.acquireErrs)
			l.acquireErrs = 0
		}
		if lease == nil {
			obs.LockAttempt(l.job.Name, "held_elsewhere")
			return
		}
		obs.LockAttempt(l.job.Name, "acquired")
		obs.Leading(l.job.Name, true)
		l.lease = lease
		l.log.Info("Acquired lock; leading", "lock_pid", lease.PID)
		if err := l.s.opts.Store.SetHolder(ctx, l.job.Name, l.s.opts.WorkerID, lease.PID); err != nil {
			l.log.Warn("Could not record lock holder", "error", err)
		}
		if err := l.takeOver(ctx); err != nil {
			l.log.Warn("Taking over from the previous leader failed; giving the lock up", "error", err)
			l.release(ctx)
			return
		}
		if ctx.Err() != nil || l.lease.Err() != nil {
			return
		}
	}
	if l.cur != nil && l.giveUpOverdue(ctx) {
		return
	}
	st := l.s.opts.Store
	// A claim is fenced in its statement (the lock must be held by our lock session when
	// it executes) and bounded by the lease: a claim stuck in a partition gives up within
	// the client bound instead of landing when the network heals.
	key := l.sess.Key()
	ref := store.LockRef{Namespace: key.Namespace, Key: key.ID, PID: l.lease.PID}
	lctx, lcancel := withLease(ctx, l.lease) // ends with the lease, not T/2 after the claim began
	defer lcancel(nil)
	cctx, cancel := context.WithTimeout(lctx, l.sess.Options().ClientBound())
	defer cancel()
	if l.cur != nil {
		claim, err := l.claim(cctx, store.StatusSkipped, ref)
		if errors.Is(err, errOutsideWindow) {
			return
		}
		if err == nil {
			_ = st.FinishSkipped(cctx, claim.RunID)
			obs.TickSkipped(l.job.Name)
			l.log.Info("Skipped tick: previous run still running", "tick_at", claim.TickAt, "running_run_id", l.cur.id)
		} else if errors.Is(err, store.ErrTickClaimed) {
			l.checkPause(cctx)
		}
		return
	}
	claim, err := l.claim(cctx, store.StatusRunning, ref)
	if errors.Is(err, errOutsideWindow) {
		return
	}
	if errors.Is(err, store.ErrTickClaimed) {
		if !l.checkPause(cctx) {
			l.log.Debug("Tick window already claimed")
		}
		return
	}
	if err != nil {
		l.log.Warn("Could not claim tick", "error", err)
		return
	}
	if l.paused {
		l.paused = false
		l.log.Info("Job resumed; running again")
	}
	l.start(ctx, claim, store.TriggerSchedule, nil)
}

// calendarGrace is how long after a calendar schedule's instant its window may still be
// claimed (a replica that starts, or takes over, later than that waits for the next
// instant: a missed calendar run is not caught up hours later).
const calendarGrace = 5 * time.Minute

// maxWake bounds a leader's sleep between ticks (a daily schedule still tries its lock
// and reports itself alive every minute).
const maxWake = time.Minute

var errOutsideWindow = errors.New("not inside a claimable window")

// claim claims the current window: by interval in the database (date_bin), or, for a
// calendar schedule, the instant the schedule gives for the database clock now.
func (l *leader) claim(ctx context.Context, status string, ref store.LockRef) (store.Claim, error) {
	st := l.s.opts.Store
	sched := l.job.Windows()
	if _, every := sched.(schedule.Every); every {
		return st.ClaimTick(ctx, l.job.Name, l.job.Interval, l.s.opts.WorkerID, status, ref)
	}
	now := time.Now().Add(l.sess.ClockOffset())
	start, next := sched.Window(now)
	if start.IsZero() {
		return store.Claim{}, errOutsideWindow
	}
	until := start.Add(calendarGrace)
	if !next.IsZero() && next.Before(until) {
		until = next
	}
	if !now.Before(until) {
		return store.Claim{}, errOutsideWindow
	}
	return st.ClaimWindow(ctx, l.job.Name, start, until, l.s.opts.WorkerID, status, ref)
}

// nextWake is how long to sleep until just after the next window starts (database clock),
// at most maxWake for calendar schedules.
func (l *leader) nextWake() time.Duration {
	sched := l.job.Windows()
	if e, every := sched.(schedule.Every); every {
		return nextBoundary(time.Now(), l.sess.ClockOffset(), time.Duration(e))
	}
	now := time.Now().Add(l.sess.ClockOffset())
	_, next := sched.Window(now)
	if next.IsZero() {
		return maxWake
	}
	return min(next.Sub(now)+5*time.Millisecond, maxWake)
}

// giveUpOverdue handles a run that ignored its timeout's cancellation for the client
// bound, as shutdown does: it records the run failed, releases the lock (a standby takes
// over; the run's writes are fenced from now on) and forgets the run. It reports whether
// it gave one up.
func (l *leader) giveUpOverdue(ctx context.Context) bool {
	a := l.cur
	if a.giveUpAt.IsZero() || time.Now().Before(a.giveUpAt) {
		return false
	}
	select {
	case <-a.done:
		return false // finished; the loop collects it
	default:
	}
	l.log.Error("Job ignored its timeout's cancellation; giving the run up and releasing the lock (its writes are fenced)",
		"run_id", a.id, "timeout", l.job.EffectiveTimeout())
	// Bounded like a claim: a leader cut off from the database must not sit here.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.sess.Options().ClientBound())
	defer cancel()
	if _, err := l.s.opts.Store.FinishRun(fctx, a.id, store.StatusFailed,
		(&TimeoutError{Timeout: l.job.EffectiveTimeout()}).Error()+"; the job ignored cancellation and was given up", nil); err != nil {
		l.log.Warn("Could not record the run given up", "run_id", a.id, "error", err)
	}
	a.givenUp.Store(true)
	info := RunInfo{Job: l.job.Name, RunID: a.id, TickAt: a.tickAt, Trigger: store.TriggerSchedule, Interval: l.job.Interval,
		Timeout: l.job.EffectiveTimeout()}
	if a.manual != nil {
		info.Trigger = store.TriggerManual
	}
	for _, h := range l.s.opts.Hooks {
		h.RunEnded(info, store.StatusFailed, fmt.Errorf("%w; the job ignored cancellation and was given up", &TimeoutError{Timeout: l.job.EffectiveTimeout()}))
	}
	l.s.opts.Observer.RunFinished(l.job.Name, StatusTimeout, l.job.EffectiveTimeout()+l.sess.Options().ClientBound())
	if a.manual != nil {
		l.s.notifyDone(ctx, a.manual.RequestID)
	}
	l.cur = nil
	l.release(ctx)
	return true
}

// errPaused cancels a run when its job is paused with --now.
var errPaused = errors.New("job paused with --now")

// checkPause reads the job's pause after a claim came back empty (the claim itself
// refuses paused jobs, so a running fleet pays nothing for the feature). It logs a pause
// and a resume once each, and cancels the running run for `pause --now`. It reports
// whether the job is paused.
func (l *leader) checkPause(ctx context.Context) bool {
	p, err := l.s.opts.Store.JobPause(ctx, l.job.Name)
	if err != nil {
		l.log.Warn("Could not read the job's pause state", "error", err)
		return false
	}
	if !p.Paused {
		if l.paused {
			l.paused = false
			l.log.Info("Job resumed; running again from the next window")
		}
		return false
	}
	if !l.paused {
		l.paused = true
		args := []any{"paused_by", p.By, "reason", p.Reason}
		if p.Until != nil {
			args = append(args, "until", p.Until.Format(time.RFC3339))
		}
		l.log.Info("Job paused; starting no new runs", args...)
	}
	if p.CancelRunning && l.cur != nil && !l.cur.pauseCancelled {
		l.cur.pauseCancelled = true
		l.log.Warn("Cancelling the running job: paused with --now", "run_id", l.cur.id)
		l.cur.cancel(errPaused)
	}
	return true
}

func (l *leader) takeOver(ctx context.Context) error {
	var skip int64
	if l.cur != nil {
		skip = l.cur.id
	}
	return takeOverRuns(ctx, l.s.opts.Store, l.log, l.job.Name, l.s.opts.WorkerID, l.lease, takeOverWait(l.job, l.sess.Options()), skip)
}

func (l *leader) start(ctx context.Context, claim store.Claim, trigger string, req *manualRequest) {
	lease := l.lease
	runCtx, cancel := runContext(context.WithoutCancel(ctx), l.job, lease, l.s.opts.Hooks, true)
	timeout := l.job.EffectiveTimeout()
	a := &activeRun{id: claim.RunID, tickAt: claim.TickAt, cancel: cancel, done: make(chan struct{}), manual: req,
		giveUpAt: time.Now().Add(timeout + l.sess.Options().ClientBound())}
	l.cur = a
	key := l.sess.Key()
	started := time.Now()
	go func() {
		defer close(a.done)
		status, _ := runJob(runCtx, l.s.opts.Store, l.log, l.job, key, lease.PID, claim, trigger)
		var te *TimeoutError
		timedOut := errors.As(context.Cause(runCtx), &te)
		cancel(nil)
		a.status = status
		if timedOut && status == store.StatusFailed {
			status = StatusTimeout
		}
		if !a.givenUp.Load() {
			l.s.opts.Observer.RunFinished(l.job.Name, status, time.Since(started))
		}
	}()
}

func (l *leader) startManual(ctx context.Context, req manualRequest) {
	claim, err := l.s.opts.Store.StartManualRun(ctx, l.job.Name, l.s.opts.WorkerID, l.lease.PID, req.RequestID)
	if err != nil {
		l.log.Warn("Could not start manual run", "request_id", req.RequestID, "error", err)
		return
	}
	l.log.Info("Running now on request", "request_id", req.RequestID, "run_id", claim.RunID)
	l.start(ctx, claim, store.TriggerManual, &req)
}

// finished handles the end of the current run.
func (l *leader) finished(ctx context.Context) {
	a := l.cur
	l.cur = nil
	if a.manual != nil {
		l.s.notifyDone(ctx, a.manual.RequestID)
	}
	switch a.status {
	case store.StatusFailed:
		l.failures++
	case store.StatusSucceeded:
		l.failures = 0
	}
	if l.failures >= l.s.opts.MaxFailures && l.lease != nil {
		l.log.Warn("Giving leadership up after consecutive failed runs", "failures", l.failures,
			"stand_back", 2*l.job.Interval)
		l.failures = 0
		l.release(ctx)
		l.cooldownUntil = time.Now().Add(2 * l.job.Interval)
		l.pending = nil
		return
	}
	if len(l.pending) > 0 && l.lease != nil && ctx.Err() == nil {
		req := l.pending[0]
		l.pending = l.pending[1:]
		l.startManual(ctx, req)
	}
}

func (l *leader) release(ctx context.Context) {
	if l.lease == nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.sess.Release(rctx); err != nil {
		l.log.Warn("Releasing the lock", "error", err)
	} else {
		l.log.Info("Released lock")
	}
	l.lease = nil
	l.s.opts.Observer.Leading(l.job.Name, false)
}

// shutdown: no new runs; the running one gets the grace, then is cancelled; the lock is
// released on its own session.
func (l *leader) shutdown() {
	if a := l.cur; a != nil {
		grace := l.s.opts.ShutdownTimeout
		l.log.Info("Shutting down: waiting for the running job", "run_id", a.id, "grace", grace)
		t := time.NewTimer(grace)
		select {
		case <-a.done:
			t.Stop()
		case <-t.C:
			l.log.Warn("Shutdown grace over; cancelling the running job", "run_id", a.id)
			a.cancel(errShutdown)
			select {
			case <-a.done:
			case <-time.After(l.sess.Options().ClientBound()):
				l.log.Error("Job did not stop after cancellation; releasing its lock anyway (its writes are fenced)", "run_id", a.id)
			}
		}
		if a.manual != nil {
			l.s.notifyDone(context.Background(), a.manual.RequestID)
		}
		l.cur = nil
	}
	l.release(context.Background())
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.sess.Close(cctx)
}

// takeOverWait is how long a new leader of job waits for a previous run still marked
// running: the previous holder's client bound for a job with effects outside the
// database, nothing for a job whose effects are all fenced writes.
func takeOverWait(job jobs.Job, o lock.Options) time.Duration {
	if job.ExternalEffects {
		return o.ClientBound()
	}
	return 0
}

// takeOverRuns handles runs a previous leader left marked running (guarantee 3b). Call it
// right after taking the lock, before starting a run: it waits until each such run
// leaves "running" or bound (takeOverWait) has passed since the lock was taken, then
// marks it abandoned. The fence's row lock makes the abandon wait for any write that
// run has in flight; after it, the run's writes fail.
func takeOverRuns(ctx context.Context, st *store.Store, log *slog.Logger, job, workerID string, lease *lock.Lease, bound time.Duration, skipRunID int64) error {
	running, err := st.RunningRuns(ctx, job)
	if err != nil {
		return err
	}
	for _, r := range running {
		if r.ID == skipRunID {
			continue
		}
		deadline := lease.Acquired.Add(bound)
		if bound > 0 {
			log.Info("Previous run still marked running; waiting out the lock bound before taking over",
				"previous_run_id", r.ID, "previous_worker_id", r.WorkerID, "bound", bound)
		}
		for time.Now().Before(deadline) {
			run, err := st.GetRun(ctx, r.ID)
			if err != nil {
				return err
			}
			if run.Status != store.StatusRunning {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-lease.Done():
				return lease.Err()
			case <-time.After(min(100*time.Millisecond, time.Until(deadline))):
			}
		}
		ok, err := st.AbandonRun(ctx, r.ID, fmt.Sprintf("worker %s lost the lock; abandoned by %s", r.WorkerID, workerID))
		if err != nil {
			return err
		}
		if ok {
			log.Warn("Marked previous run abandoned", "previous_run_id", r.ID, "previous_worker_id", r.WorkerID)
		}
	}
	return nil
}
