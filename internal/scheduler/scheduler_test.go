package scheduler_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type replica struct {
	sched  *scheduler.Scheduler
	cancel context.CancelFunc
	done   chan error
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// start runs a scheduler for workerID until the returned replica is stopped (or the test
// ends).
func start(t *testing.T, url, workerID string, js []jobs.Job, mod func(*scheduler.Options)) *replica {
	t.Helper()
	st := openStore(t, url)
	cfg, err := store.ParseConfig(url, workerID)
	if err != nil {
		t.Fatal(err)
	}
	opts := scheduler.Options{WorkerID: workerID, ConnConfig: cfg, Store: st,
		Lock:            lock.Options{Heartbeat: 100 * time.Millisecond, Timeout: 2 * time.Second},
		ShutdownTimeout: 5 * time.Second, MaxFailures: 3}
	if mod != nil {
		mod(&opts)
	}
	s, err := scheduler.New(opts, js)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{sched: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *replica) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("scheduler did not stop within 30s")
		return nil
	}
}

func runs(t *testing.T, st *store.Store, job string) []store.JobRun {
	t.Helper()
	rs, err := st.RecentRuns(context.Background(), job, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countStatus(rs []store.JobRun, status string) int {
	n := 0
	for _, r := range rs {
		if r.Status == status {
			n++
		}
	}
	return n
}

// A panicking run fails (recorded with the panic), the loop survives, and the next tick
// runs the job again.
func TestPanicIsRecoveredAndNextTickRuns(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	var calls atomic.Int32
	job := jobs.Job{Name: "panicky", Interval: 200 * time.Millisecond, Run: func(ctx context.Context, r jobs.Run) error {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return nil
	}}
	start(t, url, "w1", []jobs.Job{job}, nil)
	waitFor(t, 15*time.Second, "a successful run after the panic", func() bool {
		return countStatus(runs(t, st, "panicky"), store.StatusSucceeded) >= 1
	})
	rs := runs(t, st, "panicky")
	first := rs[len(rs)-1]
	if first.Status != store.StatusFailed || first.Error.String != "panic: boom" {
		t.Errorf("first run = %s %q, want failed \"panic: boom\"", first.Status, first.Error.String)
	}
}

// Errors fail the run with the error recorded; counters land in stats.
func TestErrorAndStatsRecorded(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	job := jobs.Job{Name: "failing", Interval: time.Hour, Run: func(ctx context.Context, r jobs.Run) error {
		r.Stats().Add("checked", 7)
		return errors.New("bucket unreachable")
	}}
	start(t, url, "w1", []jobs.Job{job}, nil)
	waitFor(t, 15*time.Second, "a failed run", func() bool { return countStatus(runs(t, st, "failing"), store.StatusFailed) == 1 })
	r := runs(t, st, "failing")[0]
	if r.Error.String != "bucket unreachable" || string(r.Stats) != `{"checked": 7}` || r.FinishedAt == nil {
		t.Errorf("run = %+v (stats %s)", r, r.Stats)
	}
}

// Shutdown: a job that outlives SHUTDOWN_TIMEOUT is cancelled and recorded cancelled,
// Run returns nil, and the lock is released (a standby can take it at once).
func TestShutdownCancelsAfterGraceAndReleases(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	started := make(chan struct{})
	var once sync.Once
	job := jobs.Job{Name: "blocker", Interval: time.Hour, Run: func(ctx context.Context, r jobs.Run) error {
		once.Do(func() { close(started) })
		<-ctx.Done()
		return context.Cause(ctx)
	}}
	rep := start(t, url, "w1", []jobs.Job{job}, func(o *scheduler.Options) { o.ShutdownTimeout = 300 * time.Millisecond })
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("job never started")
	}
	if err := rep.stop(t); err != nil {
		t.Fatalf("Run after shutdown = %v, want nil", err)
	}
	r := runs(t, st, "blocker")[0]
	if r.Status != store.StatusCancelled {
		t.Errorf("run status %s (%s), want cancelled", r.Status, r.Error.String)
	}
	holders, err := st.LockHolders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(holders) != 0 {
		t.Errorf("lock still held after shutdown: %+v", holders)
	}
}

// Shutdown while a job runs briefly: it finishes within the grace and succeeds.
func TestShutdownLetsRunningJobFinish(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	job := jobs.Job{Name: "short", Interval: time.Hour, Run: func(ctx context.Context, r jobs.Run) error {
		once.Do(func() { close(started) })
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	logs := &captureHandler{}
	rep := start(t, url, "w1", []jobs.Job{job}, func(o *scheduler.Options) { o.Logger = slog.New(logs) })
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- rep.stop(t) }()
	// Once shutdown is waiting on the run, let the run finish: it must succeed, not be cancelled.
	waitFor(t, 10*time.Second, "shutdown waits for the run", func() bool { return logs.has("Shutting down: waiting for the running job") })
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if r := runs(t, st, "short")[0]; r.Status != store.StatusSucceeded {
		t.Errorf("status %s, want succeeded", r.Status)
	}
}

// Three schedulers on one database, 200ms windows: every run has its own window, at most
// one run per window, and runs of the job never overlap.
func TestOncePerTickAcrossSchedulers(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	var inFlight, maxInFlight atomic.Int32
	job := jobs.Job{Name: "tick", Interval: 200 * time.Millisecond, Run: func(ctx context.Context, r jobs.Run) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		return nil
	}}
	for _, w := range []string{"w1", "w2", "w3"} {
		start(t, url, w, []jobs.Job{job}, nil)
	}
	waitFor(t, 30*time.Second, "20 runs", func() bool { return countStatus(runs(t, st, "tick"), store.StatusSucceeded) >= 20 })
	rs := runs(t, st, "tick")
	seen := map[time.Time]bool{}
	for _, r := range rs {
		if seen[r.TickAt] {
			t.Errorf("two runs in window %s", r.TickAt)
		}
		seen[r.TickAt] = true
	}
	if maxInFlight.Load() != 1 {
		t.Errorf("max concurrent runs %d, want 1", maxInFlight.Load())
	}
}

// A job slower than its interval never overlaps itself; overlapped windows are recorded
// as skipped.
func TestSlowJobWindowsSkipped(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	job := jobs.Job{Name: "slow", Interval: 200 * time.Millisecond, Run: func(ctx context.Context, r jobs.Run) error {
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil
	}}
	start(t, url, "w1", []jobs.Job{job}, nil)
	waitFor(t, 30*time.Second, "3 runs and 3 skipped windows", func() bool {
		rs := runs(t, st, "slow")
		return countStatus(rs, store.StatusSucceeded) >= 3 && countStatus(rs, store.StatusSkipped) >= 3
	})
	var prevEnd *time.Time
	rs := runs(t, st, "slow")
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		if r.Status != store.StatusSucceeded {
			continue
		}
		if prevEnd != nil && r.StartedAt.Before(*prevEnd) {
			t.Errorf("run %d started at %s before the previous ended at %s", r.ID, r.StartedAt, *prevEnd)
		}
		prevEnd = r.FinishedAt
	}
}

// A leader whose runs keep failing gives its lock up after MaxFailures; a healthy
// replica takes over and succeeds.
func TestFailingLeaderStepsDown(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	mk := func(fail bool) jobs.Job {
		return jobs.Job{Name: "flaky", Interval: 200 * time.Millisecond, Run: func(ctx context.Context, r jobs.Run) error {
			if fail {
				return errors.New("local fault")
			}
			return nil
		}}
	}
	start(t, url, "bad", []jobs.Job{mk(true)}, func(o *scheduler.Options) { o.MaxFailures = 2 })
	waitFor(t, 15*time.Second, "the bad replica leads and fails", func() bool {
		return countStatus(runs(t, st, "flaky"), store.StatusFailed) >= 1
	})
	start(t, url, "good", []jobs.Job{mk(false)}, nil)
	waitFor(t, 20*time.Second, "the good replica takes over", func() bool {
		return countStatus(runs(t, st, "flaky"), store.StatusSucceeded) >= 1
	})
	for _, r := range runs(t, st, "flaky") {
		if r.Status == store.StatusSucceeded && r.WorkerID != "good" {
			t.Errorf("success by %s", r.WorkerID)
		}
	}
}

type captureHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }
func (h *captureHandler) has(msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

func TestHealthy(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	job := jobs.Job{Name: "h", Interval: 100 * time.Millisecond, Run: func(ctx context.Context, r jobs.Run) error { return nil }}
	rep := start(t, url, "w1", []jobs.Job{job}, nil)
	waitFor(t, 10*time.Second, "healthy", func() bool { return rep.sched.Healthy(time.Now()) == nil })
	if err := rep.sched.Healthy(time.Now().Add(time.Minute)); err == nil {
		t.Error("healthy although no tick for a minute")
	}
}

func TestNewRejectsBadJobs(t *testing.T) {
	t.Parallel()
	if _, err := scheduler.New(scheduler.Options{}, []jobs.Job{{Name: "x"}}); err == nil {
		t.Error("zero interval accepted")
	}
}

// A replica configured with another interval than the one recorded for a job warns at
// start (guarantee 2: replicas share a job's interval).
func TestIntervalMismatchWarns(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	ctx := context.Background()
	job := func(iv time.Duration) []jobs.Job {
		return []jobs.Job{{Name: "shared", Interval: iv, Run: func(context.Context, jobs.Run) error { return nil }}}
	}
	first := &captureHandler{}
	if err := scheduler.RegisterJobs(ctx, st, slog.New(first), job(5*time.Second), true); err != nil {
		t.Fatal(err)
	}
	const warning = "Interval differs from the one recorded for this job; replicas should share it"
	if first.has(warning) {
		t.Error("first registration warned")
	}
	same := &captureHandler{}
	if err := scheduler.RegisterJobs(ctx, st, slog.New(same), job(5*time.Second), true); err != nil || same.has(warning) {
		t.Errorf("same interval: err %v, warned %v", err, same.has(warning))
	}
	recorded := func() time.Duration {
		t.Helper()
		list, err := st.ListJobs(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("worker_jobs: %v, %v", list, err)
		}
		return time.Duration(list[0].IntervalMs) * time.Millisecond
	}
	// A one-off command (`once`) with another interval warns but leaves the fleet's.
	once := &captureHandler{}
	if err := scheduler.RegisterJobs(ctx, st, slog.New(once), job(9*time.Second), false); err != nil {
		t.Fatal(err)
	}
	if !once.has(warning) || recorded() != 5*time.Second {
		t.Errorf("once with another interval: warned %v, recorded %s; want a warning and 5s kept", once.has(warning), recorded())
	}
	other := &captureHandler{}
	if err := scheduler.RegisterJobs(ctx, st, slog.New(other), job(7*time.Second), true); err != nil {
		t.Fatal(err)
	}
	if !other.has(warning) || recorded() != 7*time.Second {
		t.Errorf("a replica with a different interval: warned %v, recorded %s", other.has(warning), recorded())
	}
}
