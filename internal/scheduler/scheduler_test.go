package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
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
	testenv.Poll(t, within, what, cond)
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
	if first.Status != store.StatusFailed || first.Error != "panic: boom" {
		t.Errorf("first run = %s %q, want failed \"panic: boom\"", first.Status, first.Error)
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
	if r.Error != "bucket unreachable" || string(r.Stats) != `{"checked": 7}` || r.FinishedAt == nil {
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
		t.Errorf("run status %s (%s), want cancelled", r.Status, r.Error)
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

// checkRuns asserts the two things the window claim and the lock guarantee for job's
// scheduled runs, as recorded in job_runs:
//
//   - no two runs that were not abandoned overlap in time (started_at … finished_at; a
//     run still running overlaps everything that started after it);
//   - every window of interval from the first to the last one recorded has exactly one
//     scheduled row: a run, or a skipped window. Two rows in a window is a second run of
//     that window; none is a window nobody ran, an error unless gapOK (nil: none) allows
//     it for that window's start (a takeover may cost a window).
//
// It returns the number of windows checked.
func checkRuns(t *testing.T, st *store.Store, job string, interval time.Duration, gapOK func(time.Time) bool) int {
	t.Helper()
	rs := runs(t, st, job) // newest first
	slices.Reverse(rs)
	// Overlap: in start order, each run must start after every earlier non-abandoned run
	// ended.
	sorted := slices.Clone(rs)
	slices.SortStableFunc(sorted, func(a, b store.JobRun) int { return a.StartedAt.Compare(b.StartedAt) })
	var last *store.JobRun // the earlier non-abandoned run that ends last
	for i := range sorted {
		r := &sorted[i]
		if r.Status == store.StatusSkipped || r.Status == store.StatusAbandoned {
			continue
		}
		if last != nil && (last.FinishedAt == nil || r.StartedAt.Before(*last.FinishedAt)) {
			t.Errorf("%s: run %d (%s, %s) started at %s, before run %d (%s, %s) ended at %v", job, r.ID, r.WorkerID, r.Status,
				r.StartedAt.Format("15:04:05.000"), last.ID, last.WorkerID, last.Status, fmtEnd(last.FinishedAt))
		}
		if last == nil || last.FinishedAt != nil && (r.FinishedAt == nil || r.FinishedAt.After(*last.FinishedAt)) {
			last = r
		}
	}
	// Coverage of the windows.
	byWindow := map[int64][]store.JobRun{}
	first, end := int64(-1), int64(-1)
	for _, r := range rs {
		if r.Trigger != store.TriggerSchedule {
			continue
		}
		w := r.TickAt.UnixMilli() / interval.Milliseconds()
		byWindow[w] = append(byWindow[w], r)
		if first < 0 || w < first {
			first = w
		}
		end = max(end, w)
	}
	if first < 0 {
		t.Errorf("%s: no scheduled run recorded", job)
		return 0
	}
	for w := first; w <= end; w++ {
		start := time.UnixMilli(w * interval.Milliseconds())
		at := start.Format("15:04:05.000")
		switch in := byWindow[w]; len(in) {
		case 1:
		case 0:
			if gapOK != nil && gapOK(start) {
				continue
			}
			t.Errorf("%s: window %s has no run and no skipped row", job, at)
		default:
			var desc []string
			for _, r := range in {
				desc = append(desc, fmt.Sprintf("run %d by %s (%s)", r.ID, r.WorkerID, r.Status))
			}
			t.Errorf("%s: window %s ran %d times: %s", job, at, len(in), strings.Join(desc, ", "))
		}
	}
	return int(end - first + 1)
}

func fmtEnd(at *time.Time) string {
	if at == nil {
		return "never (still running)"
	}
	return at.Format("15:04:05.000")
}

// Three schedulers on one database, 200ms windows, and the leader replaced three times
// right after it claimed a window (stopped; a fresh scheduler, which tries the lock at
// once, takes it inside that window): every window has exactly one run (or skip), the
// replacement does not run the window its predecessor claimed, and runs of the job never
// overlap.
func TestOncePerTickAcrossSchedulers(t *testing.T) {
	t.Parallel()
	const interval = 200 * time.Millisecond
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	var inFlight, maxInFlight atomic.Int32
	job := jobs.Job{Name: "tick", Interval: interval, Run: func(ctx context.Context, r jobs.Run) error {
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
	reps := map[string]*replica{}
	for _, w := range []string{"w1", "w2", "w3"} {
		reps[w] = start(t, url, w, []jobs.Job{job}, nil)
	}
	waitFor(t, 30*time.Second, "5 runs", func() bool { return countStatus(runs(t, st, "tick"), store.StatusSucceeded) >= 5 })
	sameWindow := 0
	var replaced []time.Time // when a leader was stopped
	for i := range 3 {
		// Right after the leader claimed a window: a new run just appeared.
		newest := runs(t, st, "tick")[0].ID
		var leader store.JobRun
		waitFor(t, 5*time.Second, "a new run", func() bool {
			leader = runs(t, st, "tick")[0]
			return leader.ID > newest
		})
		replaced = append(replaced, time.Now())
		if err := reps[leader.WorkerID].stop(t); err != nil {
			t.Fatal(err)
		}
		delete(reps, leader.WorkerID)
		id := fmt.Sprintf("w%d", 4+i)
		reps[id] = start(t, url, id, []jobs.Job{job}, nil)
		var h store.LockHolder
		waitFor(t, 5*time.Second, "a new leader", func() bool {
			hs, err := st.LockHolders(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(hs) == 1 && hs[0].WorkerID != leader.WorkerID {
				h = hs[0]
				return true
			}
			return false
		})
		if h.HeldSince != nil && h.HeldSince.UnixMilli()/interval.Milliseconds() == leader.TickAt.UnixMilli()/interval.Milliseconds() {
			sameWindow++
		}
	}
	waitFor(t, 30*time.Second, "20 runs", func() bool { return countStatus(runs(t, st, "tick"), store.StatusSucceeded) >= 20 })
	for _, r := range reps {
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
	}
	// A replacement may cost the windows while the old leader stops and the new one
	// starts (a few intervals on a loaded 2-core machine); nothing else may be missed.
	windows := checkRuns(t, st, "tick", interval, func(w time.Time) bool {
		for _, at := range replaced {
			if !w.Before(at.Truncate(interval)) && !w.After(at.Add(3*interval)) {
				return true
			}
		}
		return false
	})
	t.Logf("%d windows; %d of 3 new leaders took the lock inside the window their predecessor had claimed", windows, sameWindow)
	if sameWindow == 0 {
		t.Errorf("no new leader took the lock inside its predecessor's window: the claim was not exercised")
	}
	if maxInFlight.Load() != 1 {
		t.Errorf("max concurrent runs %d, want 1", maxInFlight.Load())
	}
}

// A job slower than its interval never overlaps itself; overlapped windows are recorded
// as skipped, so every window still has exactly one row.
func TestSlowJobWindowsSkipped(t *testing.T) {
	t.Parallel()
	const interval = 200 * time.Millisecond
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	job := jobs.Job{Name: "slow", Interval: interval, Run: func(ctx context.Context, r jobs.Run) error {
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil
	}}
	rep := start(t, url, "w1", []jobs.Job{job}, nil)
	waitFor(t, 30*time.Second, "3 runs", func() bool { return countStatus(runs(t, st, "slow"), store.StatusSucceeded) >= 3 })
	if err := rep.stop(t); err != nil {
		t.Fatal(err)
	}
	checkRuns(t, st, "slow", interval, nil)
	if n := countStatus(runs(t, st, "slow"), store.StatusSkipped); n < 2 {
		t.Errorf("%d skipped windows recorded for 3 runs of 2.5 windows each, want at least 2", n)
	}
}

// A leader whose runs keep failing gives its lock up after MaxFailures and stands back
// for two intervals: alone, it is seen holding no lock after its second failure and
// runs nothing during the cooldown; with a healthy replica up, that one takes over, and
// the failing one runs no more.
func TestFailingLeaderStepsDown(t *testing.T) {
	t.Parallel()
	const interval = 200 * time.Millisecond
	const maxFailures = 2
	url := testenv.DatabaseURL(t)
	st := openStore(t, url)
	mk := func(fail bool) jobs.Job {
		return jobs.Job{Name: "flaky", Interval: interval, Run: func(ctx context.Context, r jobs.Run) error {
			if fail {
				return errors.New("local fault")
			}
			return nil
		}}
	}
	held := func() string {
		hs, err := st.LockHolders(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if h.Job == "flaky" {
				return h.WorkerID
			}
		}
		return ""
	}
	start(t, url, "bad", []jobs.Job{mk(true)}, func(o *scheduler.Options) { o.MaxFailures = maxFailures })
	// Alone: after its maxFailures-th failure the lock is free (nobody else could have
	// taken it), and the next run comes only after the cooldown.
	waitFor(t, 15*time.Second, "the bad replica leads and fails twice", func() bool {
		return countStatus(runs(t, st, "flaky"), store.StatusFailed) >= maxFailures
	})
	waitFor(t, 10*time.Second, "the bad replica gives the lock up", func() bool { return held() == "" })
	waitFor(t, 15*time.Second, "the bad replica leads again after its cooldown and fails twice more", func() bool {
		return countStatus(runs(t, st, "flaky"), store.StatusFailed) >= 2*maxFailures
	})
	rs := runs(t, st, "flaky")
	slices.Reverse(rs)
	for i := 0; i+1 < len(rs); i++ {
		if rs[i].Status != store.StatusFailed {
			t.Fatalf("run %d by %s: %s, want failed", rs[i].ID, rs[i].WorkerID, rs[i].Status)
		}
		gap := rs[i+1].StartedAt.Sub(*rs[i].FinishedAt)
		// The cooldown starts when the run's end is handled (after finished_at) and lasts
		// two intervals; the next run waits for the first boundary after it.
		if (i+1)%maxFailures == 0 && gap < 2*interval-10*time.Millisecond {
			t.Errorf("run %d started %s after failure %d (run %d) ended; want the leader to stand back %s",
				rs[i+1].ID, gap, i+1, rs[i].ID, 2*interval)
		}
	}

	// With a healthy replica: it takes over at the bad one's next step-down and keeps the
	// lock; the bad one runs no more.
	start(t, url, "good", []jobs.Job{mk(false)}, nil)
	waitFor(t, 20*time.Second, "the good replica takes over", func() bool {
		return countStatus(runs(t, st, "flaky"), store.StatusSucceeded) >= 3
	})
	if w := held(); w != "good" {
		t.Errorf("lock held by %q after the good replica's runs, want good", w)
	}
	rs = runs(t, st, "flaky")
	slices.Reverse(rs)
	var firstGood *store.JobRun
	for i, r := range rs {
		switch {
		case r.WorkerID == "good" && r.Status != store.StatusSucceeded:
			t.Errorf("run %d by good: %s", r.ID, r.Status)
		case r.WorkerID == "bad" && r.Status != store.StatusFailed:
			t.Errorf("run %d by bad: %s", r.ID, r.Status)
		case r.WorkerID == "good" && firstGood == nil:
			firstGood = &rs[i]
		case r.WorkerID == "bad" && firstGood != nil:
			t.Errorf("run %d by bad after the good replica took over (run %d)", r.ID, firstGood.ID)
		}
	}
	if bad := len(rs) - countStatus(rs, store.StatusSucceeded); bad%maxFailures != 0 {
		t.Errorf("the bad replica ran %d times before giving the lock up; want a multiple of %d", bad, maxFailures)
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
		return list[0].Interval
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
