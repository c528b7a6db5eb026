package sentryhook_test

import (
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/sentryhook"
	"github.com/bg-worker/bg-worker/internal/sentryhook/sentrytest"
	"github.com/bg-worker/bg-worker/internal/store"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newHook(t *testing.T, srv *sentrytest.Server, dsn string, clk *clock, secrets ...string) *sentryhook.Hook {
	t.Helper()
	o := sentryhook.Options{DSN: dsn, Environment: "test", Release: "bg-worker@v9.9.9", WorkerID: "replica-7",
		Secrets: secrets, HTTPTimeout: 2 * time.Second}
	if clk != nil {
		o.Now = clk.Now
	}
	h, err := sentryhook.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(200 * time.Millisecond) })
	return h
}

func flush(t *testing.T, h *sentryhook.Hook, srv *sentrytest.Server) {
	t.Helper()
	if !h.Flush(5 * time.Second) {
		t.Fatal("Flush timed out")
	}
	if errs := srv.Errors(); len(errs) > 0 {
		t.Fatalf("envelope server: %v", errs)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func runInfo(job string, id int64, tick time.Time, interval time.Duration) scheduler.RunInfo {
	return scheduler.RunInfo{Job: job, RunID: id, TickAt: tick, Trigger: store.TriggerSchedule,
		Interval: interval, Timeout: jobs.DefaultTimeout(interval)}
}

// A failed run is one event (job, run id, worker id, tick, the error chain) and one
// check-in pair (in_progress, then error with the same id and the monitor's config).
func TestSentryFailedRunIsOneEventAndACheckInPair(t *testing.T) {
	srv := sentrytest.New(t)
	clk := &clock{t: t0}
	h := newHook(t, srv, srv.DSN(), clk)
	info := runInfo("sync-uploads", 1234, t0, 5*time.Second)
	h.RunStarted(info)
	clk.Add(1500 * time.Millisecond)
	root := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	h.RunEnded(info, store.StatusFailed, fmt.Errorf("write results: %w", fmt.Errorf("flush batch: %w", root)))
	flush(t, h, srv)

	evs := srv.Events()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	e := evs[0]
	if e.Tags["job"] != "sync-uploads" || e.Tags["worker_id"] != "replica-7" || e.Tags["status"] != "failed" || e.Tags["trigger"] != "schedule" {
		t.Errorf("tags %v", e.Tags)
	}
	run := e.Contexts["run"]
	if run["run_id"] != float64(1234) || run["tick_at"] != "2026-03-01T12:00:00Z" || run["worker_id"] != "replica-7" || run["failures"] != float64(1) {
		t.Errorf("run context %v", run)
	}
	if e.Release != "bg-worker@v9.9.9" || e.Environment != "test" || e.Level != "error" {
		t.Errorf("release %q environment %q level %q", e.Release, e.Environment, e.Level)
	}
	vals := e.Exception.Values
	if len(vals) < 3 {
		t.Fatalf("exception chain of %d, want the wrapped errors: %+v", len(vals), vals)
	}
	top := vals[len(vals)-1]
	if top.Type != "sync-uploads failed" || !strings.HasPrefix(top.Value, "write results: flush batch:") {
		t.Errorf("outermost exception %q: %q", top.Type, top.Value)
	}
	if vals[0].Value != "connection refused" {
		t.Errorf("root exception %q", vals[0].Value)
	}
	if want := []string{"bg-worker", "sync-uploads", "failed", "write results / network dial"}; !slices.Equal(e.Fingerprint, want) {
		t.Errorf("fingerprint %q, want %q", e.Fingerprint, want)
	}

	cis := srv.CheckIns()
	if len(cis) != 2 {
		t.Fatalf("%d check-ins, want 2: %+v", len(cis), cis)
	}
	if cis[0].Status != "in_progress" || cis[1].Status != "error" || cis[0].CheckInID != cis[1].CheckInID || cis[0].CheckInID == "" {
		t.Errorf("check-ins %+v", cis)
	}
	for _, c := range cis {
		if c.MonitorSlug != "sync-uploads" || c.Environment != "test" || c.Release != "bg-worker@v9.9.9" || c.MonitorConfig == nil {
			t.Fatalf("check-in %+v", c)
		}
		mc := c.MonitorConfig
		// 5 s tick: checked in once a minute; margin 5m (≤ timeout 10m); max runtime 11m.
		if mc.Schedule.Type != "interval" || mc.Schedule.Value != 1 || mc.Schedule.Unit != "minute" || mc.CheckInMargin != 5 || mc.MaxRuntime != 11 {
			t.Errorf("monitor config %+v", mc)
		}
	}
	if cis[1].Duration < 1.4 || cis[1].Duration > 1.6 {
		t.Errorf("duration %v, want 1.5", cis[1].Duration)
	}
}

// The same failure every tick is one issue (one fingerprint, whatever ids and keys its
// message carries) and at most one event per RepeatEvery; the next event counts the
// failures it stands for; a success adds a "recovered" breadcrumb.
func TestSentryGroupingAndRepeatRate(t *testing.T) {
	srv := sentrytest.New(t)
	clk := &clock{t: t0}
	h := newHook(t, srv, srv.DSN(), clk)
	fail := func(i int) error {
		return fmt.Errorf("all %d HEAD requests failed; first: %w", 30+i,
			fmt.Errorf("bucket: head %q in bucket %q: %w", fmt.Sprintf("users/%d/avatar-%x.png", i, i*7919), "uploads", &pgconn.PgError{Code: "57014", Message: fmt.Sprintf("canceling statement %d", i)}))
	}
	tick := t0
	for i := range 100 { // 100 ticks of 5 s: 8m20s, inside RepeatEvery (30m)
		info := runInfo("sync-uploads", int64(i+1), tick, 5*time.Second)
		h.RunStarted(info)
		h.RunEnded(info, store.StatusFailed, fail(i))
		tick = tick.Add(5 * time.Second)
		clk.Add(5 * time.Second)
	}
	flush(t, h, srv)
	if n := len(srv.Events()); n != 1 {
		t.Fatalf("%d events for 100 identical failures within 30m, want 1", n)
	}
	first := srv.Events()[0]

	// Another class of failure is its own issue, sent at once.
	info := runInfo("sync-uploads", 500, tick, 5*time.Second)
	h.RunEnded(info, store.StatusFailed, fmt.Errorf("write results: %w", lock.ErrLockLost))
	// The first one again, 30 minutes after its first event: one more, counting 100+1.
	clk.Add(30 * time.Minute)
	h.RunEnded(runInfo("sync-uploads", 501, tick, 5*time.Second), store.StatusFailed, fail(501))
	// A success, then the first failure once more after another 30 minutes: its event
	// carries the "recovered" breadcrumb.
	h.RunEnded(runInfo("sync-uploads", 502, tick, 5*time.Second), store.StatusSucceeded, nil)
	clk.Add(31 * time.Minute)
	h.RunEnded(runInfo("sync-uploads", 503, tick, 5*time.Second), store.StatusFailed, fail(503))
	flush(t, h, srv)

	evs := srv.Events()
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4", len(evs))
	}
	if !slices.Equal(evs[0].Fingerprint, evs[2].Fingerprint) || !slices.Equal(evs[0].Fingerprint, evs[3].Fingerprint) {
		t.Errorf("one failure, several fingerprints: %q %q %q", evs[0].Fingerprint, evs[2].Fingerprint, evs[3].Fingerprint)
	}
	if slices.Equal(evs[0].Fingerprint, evs[1].Fingerprint) {
		t.Errorf("a lost lock grouped with a statement timeout: %q", evs[1].Fingerprint)
	}
	if want := []string{"bg-worker", "sync-uploads", "failed", "all N HEAD requests failed; first / postgres 57014"}; !slices.Equal(first.Fingerprint, want) {
		t.Errorf("fingerprint %q, want %q", first.Fingerprint, want)
	}
	if got := evs[2].Contexts["run"]["failures"]; got != float64(100) {
		t.Errorf("the repeat event stands for %v failures, want 100 (99 suppressed + itself)", got)
	}
	var crumbs []string
	for _, b := range evs[3].Breadcrumbs.Values {
		crumbs = append(crumbs, b.Message)
	}
	if len(crumbs) != 1 || !strings.Contains(crumbs[0], "sync-uploads recovered after 102 failed runs") {
		t.Errorf("breadcrumbs %q, want one recovery", crumbs)
	}
}

// Check-ins respect Sentry's rate limits: a 5 s job checks in for the first run of each
// minute only; an hourly job for every run; a manual run never.
func TestSentryCheckInRateLimit(t *testing.T) {
	srv := sentrytest.New(t)
	clk := &clock{t: t0}
	h := newHook(t, srv, srv.DSN(), clk)
	start := t0.Add(35 * time.Second) // mid-minute: the first run checks in at once
	for i := range 36 {               // 3 minutes of 5 s ticks: 12:00:35 … 12:03:30
		tick := start.Add(time.Duration(i) * 5 * time.Second)
		info := runInfo("sync-uploads", int64(i+1), tick, 5*time.Second)
		h.RunStarted(info)
		h.RunEnded(info, store.StatusSucceeded, nil)
	}
	for i := range 3 {
		info := runInfo("prune-runs", int64(100+i), t0.Add(time.Duration(i)*time.Hour), time.Hour)
		h.RunStarted(info)
		h.RunEnded(info, store.StatusSucceeded, nil)
	}
	manual := runInfo("prune-runs", 200, time.Time{}, time.Hour)
	manual.Trigger = store.TriggerManual
	h.RunStarted(manual)
	h.RunEnded(manual, store.StatusFailed, errors.New("boom"))
	flush(t, h, srv)

	pairs := map[string][]string{}
	var order []string
	for _, c := range srv.CheckIns() {
		if _, ok := pairs[c.CheckInID]; !ok {
			order = append(order, c.MonitorSlug)
		}
		pairs[c.CheckInID] = append(pairs[c.CheckInID], c.Status)
	}
	for id, sts := range pairs {
		if !slices.Equal(sts, []string{"in_progress", "ok"}) {
			t.Errorf("check-in %s: %v, want in_progress then ok", id, sts)
		}
	}
	count := map[string]int{}
	for _, s := range order {
		count[s]++
	}
	// sync-uploads: 12:00:35 (first run), 12:01:00, 12:02:00, 12:03:00.
	if count["sync-uploads"] != 4 || count["prune-runs"] != 3 || len(pairs) != 7 {
		t.Errorf("check-in pairs %v, want sync-uploads 4 (one a minute), prune-runs 3 (the manual run none)", count)
	}
	if n := len(srv.Events()); n != 1 {
		t.Errorf("%d events, want the manual run's failure", n)
	}
	for _, c := range srv.CheckIns() {
		if c.MonitorSlug == "prune-runs" {
			mc := c.MonitorConfig
			// hourly, timeout 10h: interval 60 minutes, margin 60, max runtime 601.
			if mc.Schedule.Value != 60 || mc.Schedule.Unit != "minute" || mc.CheckInMargin != 60 || mc.MaxRuntime != 601 {
				t.Errorf("prune-runs monitor config %+v", mc)
			}
		}
	}
}

// Nothing secret is sent: the DSN, the database password and the R2 secret are redacted
// wherever they occur, URL passwords and password= values too, and quoted strings
// (object keys, bucket names, request URLs) are filtered.
func TestSentryScrubsSecretsAndKeys(t *testing.T) {
	srv := sentrytest.New(t)
	const dbPass, r2Secret, objectKey = "db-p@ss:w0rd/Secret", "R2SECRETabcdef0123456789", "users/alice@example.com/passport.jpg"
	dsn := srv.DSN()
	h := newHook(t, srv, dsn, nil, dbPass, r2Secret, dsn, srv.Key)
	info := runInfo("sync-uploads", 9, t0, 5*time.Second)
	err := fmt.Errorf("connect postgres://app:%s@db:5432/app (password=%s): sentry %s, r2 secret %s: %w",
		"db-p%40ss%3Aw0rd%2FSecret", dbPass, dsn, r2Secret,
		fmt.Errorf("bucket: head %q in bucket %q: %w", objectKey, "uploads",
			fmt.Errorf(`Head "http://127.0.0.1:9000/uploads/%s": dial tcp: connection refused; key=%s token=abc123secret`, objectKey, r2Secret)))
	h.RunStarted(info)
	h.RunEnded(info, store.StatusFailed, err)
	panicked := &scheduler.PanicError{Value: "bad key " + objectKey + " with " + r2Secret, Stack: debug.Stack()}
	h.RunEnded(runInfo("scan-orphans", 10, t0, time.Hour), store.StatusFailed, panicked)
	flush(t, h, srv)

	if n := len(srv.Events()); n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
	raw := srv.Raw()
	for _, secret := range []string{dbPass, "db-p%40ss%3Aw0rd%2FSecret", r2Secret, srv.Key, dsn, objectKey, "alice@example.com", "passport", "abc123secret"} {
		if strings.Contains(raw, secret) {
			t.Errorf("sent %q:\n%s", secret, raw)
		}
	}
	if !strings.Contains(raw, "[redacted]") || !strings.Contains(raw, `[filtered]`) {
		t.Errorf("no redaction marks in:\n%s", raw)
	}
}

// A panic arrives as a fatal event with the job's stack (the panicking function, in app).
func TestSentryPanicHasItsStack(t *testing.T) {
	srv := sentrytest.New(t)
	h := newHook(t, srv, srv.DSN(), nil)
	perr := panickyJob()
	info := runInfo("scan-orphans", 77, t0, time.Hour)
	h.RunStarted(info)
	h.RunEnded(info, store.StatusFailed, perr)
	flush(t, h, srv)
	evs := srv.Events()
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	e := evs[0]
	if e.Level != "fatal" {
		t.Errorf("level %q, want fatal", e.Level)
	}
	var st *sentrytest.Exception
	for i, x := range e.Exception.Values {
		if x.Stacktrace != nil {
			st = &e.Exception.Values[i]
		}
	}
	if st == nil {
		t.Fatalf("no stack trace: %s", e.Raw)
	}
	frames := st.Stacktrace.Frames
	last := frames[len(frames)-1] // Sentry frames: oldest first, the panicking one last
	if !strings.HasSuffix(last.Function, "explode") || !last.InApp || last.Lineno == 0 || !strings.HasSuffix(last.AbsPath, "sentryhook_test.go") {
		t.Errorf("top frame %+v, want explode in sentryhook_test.go", last)
	}
	if st.Mechanism == nil || st.Mechanism.Type != "panic" || st.Mechanism.Handled == nil || *st.Mechanism.Handled {
		t.Errorf("mechanism %+v", st.Mechanism)
	}
	if !strings.Contains(e.Fingerprint[3], "panic runtime.boundsError at github.com/bg-worker/bg-worker/internal/sentryhook_test.explode") {
		t.Errorf("fingerprint %q", e.Fingerprint)
	}
}

// panickyJob recovers a real panic as the scheduler does (safeRun).
func panickyJob() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &scheduler.PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	explode(7)
	return nil
}

//go:noinline
func explode(i int) int {
	var s []int
	return s[i]
}

// An unreachable Sentry never slows a run: a closed port, or a server that accepts and
// never answers. RunStarted and RunEnded return at once (< 50ms each, however many), and
// Flush gives up at its timeout.
func TestSentryUnreachableNeverSlowsARun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedDSN := "http://0123456789abcdef@" + ln.Addr().String() + "/42"
	ln.Close()
	hanging := sentrytest.New(t)
	hanging.Hang()
	for name, dsn := range map[string]string{"closed port": closedDSN, "hanging server": hanging.DSN()} {
		t.Run(name, func(t *testing.T) {
			h, err := sentryhook.New(sentryhook.Options{DSN: dsn, WorkerID: "w", HTTPTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close(10 * time.Millisecond)
			var worst, total time.Duration
			slow := 0
			tick := t0
			const n = 2000
			for i := range n {
				info := runInfo(fmt.Sprintf("job-%d", i%5), int64(i), tick, time.Minute)
				tick = tick.Add(time.Minute)
				start := time.Now()
				h.RunStarted(info)
				h.RunEnded(info, store.StatusFailed, fmt.Errorf("failure %d of class %d", i, i%50))
				d := time.Since(start)
				worst, total = max(worst, d), total+d
				if d >= 50*time.Millisecond {
					slow++
				}
			}
			// Waiting on Sentry would make every call take the HTTP timeout (2s). A loaded
			// 2-core machine may deschedule a few calls, so allow 1% of calls over 50ms.
			t.Logf("RunStarted+RunEnded: worst %v, mean %v, %d of %d over 50ms", worst, total/n, slow, n)
			if slow > n/100 || total > time.Second {
				t.Errorf("RunStarted+RunEnded: %d of %d calls took 50ms or more (worst %v), %v in all; want < 50ms each", slow, n, worst, total)
			}
			start := time.Now()
			h.Flush(300 * time.Millisecond)
			if d := time.Since(start); d > time.Second {
				t.Errorf("Flush(300ms) took %v", d)
			}
		})
	}
}

func TestSentryClass(t *testing.T) {
	for _, tc := range []struct {
		status string
		err    error
		want   string
	}{
		{store.StatusFailed, errors.New("timeout: the run exceeded its job's timeout of 10m0s (JOB_TIMEOUTS): context deadline exceeded"), "timeout"},
		{store.StatusCancelled, fmt.Errorf("shutdown grace period over: %w", errors.New("context canceled")), "cancelled: shutdown grace period over"},
		{store.StatusCancelled, fmt.Errorf("fenced write: %w", lock.ErrLockLost), "lock lost"},
		{store.StatusAbandoned, nil, "abandoned"},
		{store.StatusFailed, fmt.Errorf("run 123 for upload 4f1c2a9e-0f5b-4c3e-9a1d-2b6c7d8e9f00: %w", errors.New("row 77 missing")), "run N for upload UUID / *errors.errorString row N missing"},
	} {
		if got := sentryhook.Class(tc.status, tc.err); got != tc.want {
			t.Errorf("Class(%s, %v) = %q, want %q", tc.status, tc.err, got, tc.want)
		}
	}
}

func TestSentryMonitorConfig(t *testing.T) {
	for _, tc := range []struct {
		interval, timeout                time.Duration
		every, margin, maxRuntimeMinutes int64
	}{
		{5 * time.Second, 10 * time.Minute, 1, 5, 11},
		{90 * time.Second, 15 * time.Minute, 2, 5, 16},
		{time.Hour, 10 * time.Hour, 60, 60, 601},
		{time.Hour, 2 * time.Minute, 60, 2, 3},
		{24 * time.Hour, 240 * time.Hour, 1440, 1440, 14401},
	} {
		mc := sentryhook.MonitorConfig(tc.interval, tc.timeout, time.Minute)
		got := fmt.Sprintf("%+v %d %d", mc.Schedule, mc.CheckInMargin, mc.MaxRuntime)
		want := fmt.Sprintf("{Type:interval Value:%d Unit:minute} %d %d", tc.every, tc.margin, tc.maxRuntimeMinutes)
		if got != want {
			t.Errorf("MonitorConfig(%v, %v) = %s, want %s", tc.interval, tc.timeout, got, want)
		}
	}
	// No timeout: the job's default (jobs.DefaultTimeout), as the scheduler applies it.
	for _, iv := range []time.Duration{5 * time.Second, time.Hour} {
		got, want := sentryhook.MonitorConfig(iv, 0, time.Minute), sentryhook.MonitorConfig(iv, jobs.DefaultTimeout(iv), time.Minute)
		if *got != *want {
			t.Errorf("MonitorConfig(%v, 0) = %+v, want the default timeout's %+v", iv, got, want)
		}
	}
	if s := sentryhook.Slug("Sync Uploads/éx"); s != "sync-uploads--x" {
		t.Errorf("Slug = %q", s)
	}
}

// Runs that end while the hook closes (a run finishing during shutdown) report nothing
// and never panic: Close and RunEnded may race.
func TestSentryRunEndedDuringClose(t *testing.T) {
	srv := sentrytest.New(t)
	for range 50 {
		h, err := sentryhook.New(sentryhook.Options{DSN: srv.DSN(), WorkerID: "w", QueueSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					info := runInfo(fmt.Sprintf("job-%d", g), int64(i), t0.Add(time.Duration(i)*time.Minute), time.Minute)
					h.RunStarted(info)
					h.RunEnded(info, store.StatusFailed, errors.New("boom"))
				}
			}()
		}
		h.Close(time.Millisecond)
		wg.Wait()
	}
}
