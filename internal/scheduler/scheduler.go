package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/store"
)

// Observer receives the scheduler's events (metrics). All methods must be cheap.
type Observer interface {
	RunFinished(job, status string, d time.Duration)
	LockAttempt(job, result string) // acquired, held_elsewhere, error, cooldown
	Leading(job string, leading bool)
	TickSkipped(job string)
}

type nopObserver struct{}

func (nopObserver) RunFinished(string, string, time.Duration) {}
func (nopObserver) LockAttempt(string, string)                {}
func (nopObserver) Leading(string, bool)                      {}
func (nopObserver) TickSkipped(string)                        {}

// Options configures a Scheduler.
type Options struct {
	WorkerID string
	// ConnConfig is used for the dedicated lock and listener sessions (never the pool).
	ConnConfig *pgx.ConnConfig
	Store      *store.Store
	Logger     *slog.Logger
	Lock       lock.Options
	// ShutdownTimeout is the grace a running job gets after shutdown starts.
	ShutdownTimeout time.Duration
	// MaxFailures consecutive failed runs make a leader give its lock up.
	MaxFailures int
	Observer    Observer
	// Hooks see every run start and end (Sentry); see RunHook.
	Hooks []RunHook
}

// Scheduler runs a set of jobs; see the package documentation.
type Scheduler struct {
	opts   Options
	jobs   []jobs.Job
	log    *slog.Logger
	manual map[string]chan manualRequest

	mu       sync.Mutex
	lastTick map[string]time.Time
	started  time.Time
}

// New checks the jobs (unique names, no lock-key collisions) and builds a Scheduler.
func New(opts Options, js []jobs.Job) (*Scheduler, error) {
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = 3
	}
	var names []string
	for _, j := range js {
		if j.Interval <= 0 {
			return nil, fmt.Errorf("job %s: interval must be positive", j.Name)
		}
		names = append(names, j.Name)
	}
	if err := lock.CheckCollisions(names); err != nil {
		return nil, err
	}
	s := &Scheduler{opts: opts, jobs: js, log: opts.Logger, manual: map[string]chan manualRequest{},
		lastTick: map[string]time.Time{}}
	for _, j := range js {
		s.manual[j.Name] = make(chan manualRequest, 16)
	}
	return s, nil
}

// Register records the jobs and their lock keys in worker_jobs. A job whose recorded
// interval differs from this replica's is logged as a warning: replicas should agree.
func (s *Scheduler) Register(ctx context.Context) error {
	return RegisterJobs(ctx, s.opts.Store, s.log, s.jobs, true)
}

// RegisterJobs records jobs in worker_jobs (shared by run and once). A replica that runs
// the loop (recordInterval) records its interval when it differs; a one-off command
// (`once`) only warns, so a manual run never changes the fleet's schedule.
func RegisterJobs(ctx context.Context, st *store.Store, log *slog.Logger, js []jobs.Job, recordInterval bool) error {
	for _, j := range js {
		k := lock.KeyFor(j.Name)
		recorded, err := st.RegisterJob(ctx, j.Name, k.Namespace, k.ID, j.Interval)
		if err != nil {
			return err
		}
		if recorded != j.Interval {
			log.Warn("Interval differs from the one recorded for this job; replicas should share it",
				"job", j.Name, "configured", j.Interval, "recorded", recorded)
			if !recordInterval {
				continue
			}
			if err := st.SetJobInterval(ctx, j.Name, j.Interval); err != nil {
				return err
			}
		}
	}
	return nil
}

// Healthy reports whether every job loop ticked recently (within 3 intervals plus 5s).
func (s *Scheduler) Healthy(now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started.IsZero() {
		return errors.New("scheduler not started")
	}
	for _, j := range s.jobs {
		last := s.lastTick[j.Name]
		if last.IsZero() {
			last = s.started
		}
		every := j.Interval
		if j.Schedule != nil {
			every = min(j.Interval, maxWake) // a calendar job's leader wakes at least every maxWake
		}
		if now.Sub(last) > 3*every+5*time.Second {
			return fmt.Errorf("job %s has not ticked since %s", j.Name, last.Format(time.RFC3339))
		}
	}
	return nil
}

func (s *Scheduler) markTick(job string) {
	s.mu.Lock()
	s.lastTick[job] = time.Now()
	s.mu.Unlock()
}

// Run runs every job until ctx is cancelled, then shuts down as the package says. It
// returns nil after a clean shutdown.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.started = time.Now()
	s.mu.Unlock()
	var wg sync.WaitGroup
	listenCtx, stopListen := context.WithCancel(ctx)
	defer stopListen()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.listen(listenCtx)
	}()
	for _, j := range s.jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			newLeader(s, j).loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// nextBoundary is how long to wait, on the local clock, until just after the next window
// boundary of interval on the database clock.
func nextBoundary(now time.Time, offset, interval time.Duration) time.Duration {
	db := now.Add(offset).UnixMilli()
	iv := interval.Milliseconds()
	next := (db/iv + 1) * iv
	// A little past the boundary so an offset error of a few ms doesn't wake us in the
	// previous window.
	slack := min(5*time.Millisecond+interval/100, 50*time.Millisecond)
	return time.Duration(next-db)*time.Millisecond + slack
}

// PanicError is a job's panic, with the goroutine's stack at the panic.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// safeRun calls the job and turns a panic into a *PanicError.
func safeRun(ctx context.Context, job jobs.Job, r jobs.Run, log *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			stack := debug.Stack()
			log.Error("Job panicked", "panic", fmt.Sprint(p), "stack", string(stack))
			err = &PanicError{Value: p, Stack: stack}
		}
	}()
	return job.Run(ctx, r)
}

// RunInfo identifies a run for hooks.
type RunInfo struct {
	Job      string
	RunID    int64
	TickAt   time.Time
	Trigger  string
	Interval time.Duration // the job's tick
	Timeout  time.Duration // the job's longest run
	LockPID  int32         // backend pid of the lock session the run holds (its fence)
}

// RunHook sees every run start and end (error reporting, cron monitors). runJob calls it
// on the run's goroutine: implementations must not block (send asynchronously).
type RunHook interface {
	RunStarted(RunInfo)
	// RunEnded gets the recorded status and the job's error (a *PanicError for a panic,
	// context causes such as *TimeoutError wrapped in it).
	RunEnded(info RunInfo, status string, err error)
}

type hooksKey struct{}

// withHooks returns a context under which runJob calls hooks (the leader and RunNow put
// theirs there; runJob's signature stays the same for every caller).
func withHooks(ctx context.Context, hooks ...RunHook) context.Context {
	if len(hooks) == 0 {
		return ctx
	}
	return context.WithValue(ctx, hooksKey{}, hooks)
}

func hooksFrom(ctx context.Context) []RunHook {
	h, _ := ctx.Value(hooksKey{}).([]RunHook)
	return h
}

var errShutdown = errors.New("shutdown grace period over")

// TimeoutError is the cause of a run cancelled at its job's timeout.
type TimeoutError struct{ Timeout time.Duration }

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("timeout: the run exceeded its job's timeout of %s (JOB_TIMEOUTS)", e.Timeout)
}

// StatusTimeout labels runs ended by their timeout in metrics (bgworker_runs_total); in
// job_runs they are failed with an error that starts "timeout:".
const StatusTimeout = "timeout"

// run is the jobs.Run a job gets.
type run struct {
	id      int64
	tickAt  time.Time
	trigger string
	log     *slog.Logger
	store   *store.Store
	fence   lock.Fence
	stats   jobs.Stats
}

func (r *run) ID() int64            { return r.id }
func (r *run) TickAt() time.Time    { return r.tickAt }
func (r *run) Trigger() string      { return r.trigger }
func (r *run) Logger() *slog.Logger { return r.log }
func (r *run) Store() *store.Store  { return r.store }
func (r *run) Stats() *jobs.Stats   { return &r.stats }

func (r *run) Fenced(ctx context.Context, fn func(tx *store.Store) error) error {
	return r.store.Tx(ctx, func(tx *store.Store) error {
		if err := r.fence.Check(ctx, tx.DB()); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (r *run) CheckLock(ctx context.Context) error {
	return r.store.Tx(ctx, func(tx *store.Store) error { return r.fence.Check(ctx, tx.DB()) })
}

// activeRun is a run in progress.
type activeRun struct {
	id     int64
	tickAt time.Time
	cancel context.CancelCauseFunc
	done   chan struct{}
	status string // set before done closes
	manual *manualRequest
	// pauseCancelled: cancelled once for `pause --now` already
	pauseCancelled bool
	// giveUpAt: past its timeout plus the client bound, a run still going ignores its
	// cancellation; the leader then gives it up (see leader.checkOverdue).
	giveUpAt time.Time
	givenUp  atomic.Bool // the leader gave the run up; its late end is not counted again
}

// runContext is what a run executes under, for the leader and RunNow alike: the hooks,
// the lease's end (cause lock.ErrLockLost) unless leaseCancels is false (tests of the fence
// alone), and the job's timeout (cause *TimeoutError). cancel(cause) ends it all.
func runContext(parent context.Context, job jobs.Job, lease *lock.Lease, hooks []RunHook, leaseCancels bool) (context.Context, context.CancelCauseFunc) {
	ctx := withHooks(parent, hooks...)
	var cancelRun context.CancelCauseFunc
	if leaseCancels {
		ctx, cancelRun = withLease(ctx, lease)
	} else {
		ctx, cancelRun = context.WithCancelCause(ctx)
	}
	timeout := job.EffectiveTimeout()
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, timeout, &TimeoutError{Timeout: timeout})
	return ctx, func(cause error) {
		cancelRun(cause)
		cancelTimeout()
	}
}

// withLease returns a context cancelled, with cause lock.ErrLockLost, the moment lease
// ends (not at the caller's next look), and its cancel function.
func withLease(ctx context.Context, lease *lock.Lease) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-lease.Done():
			cancel(lock.ErrLockLost)
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// runJob executes one run of job under lease and records its outcome; shared by the
// scheduler and `bg-worker once`. It returns the final status and the job's error.
func runJob(ctx context.Context, st *store.Store, log *slog.Logger, job jobs.Job, key lock.Key, pid int32, claim store.Claim, trigger string) (string, error) {
	r := &run{id: claim.RunID, tickAt: claim.TickAt, trigger: trigger, store: st,
		log:   log.With("run_id", claim.RunID),
		fence: lock.Fence{RunID: claim.RunID, Key: key, PID: pid}}
	hooks := hooksFrom(ctx)
	info := RunInfo{Job: job.Name, RunID: claim.RunID, TickAt: claim.TickAt, Trigger: trigger,
		Interval: job.Interval, Timeout: job.EffectiveTimeout(), LockPID: pid}
	for _, h := range hooks {
		h.RunStarted(info)
	}
	err := safeRun(ctx, job, r, r.log)
	status := store.StatusSucceeded
	msg := ""
	if err != nil {
		status = store.StatusFailed
		msg = err.Error()
		var te *TimeoutError
		if cause := context.Cause(ctx); errors.As(cause, &te) {
			msg = fmt.Sprintf("%v (%v)", cause, err) // failed, with its own error class
		} else if cause != nil {
			status = store.StatusCancelled
			msg = fmt.Sprintf("%v (%v)", cause, err)
		} else if errors.Is(err, lock.ErrLockLost) {
			status = store.StatusCancelled
		}
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ok, ferr := st.FinishRun(fctx, claim.RunID, status, msg, r.stats.Snapshot())
	if status != store.StatusSucceeded {
		log.Warn("Run "+status, "run_id", claim.RunID, "error", msg)
	}
	switch {
	case ferr != nil:
		log.Error("Could not record run outcome", "run_id", claim.RunID, "status", status, "error", ferr)
	case !ok:
		log.Warn("Run was marked abandoned by a new leader; outcome not recorded", "run_id", claim.RunID, "status", status)
		status = store.StatusAbandoned
	}
	herr := err
	if herr != nil && msg != "" && msg != err.Error() {
		herr = fmt.Errorf("%s: %w", strings.TrimSuffix(msg, " ("+err.Error()+")"), err)
	}
	for _, h := range hooks {
		h.RunEnded(info, status, herr)
	}
	return status, err
}
