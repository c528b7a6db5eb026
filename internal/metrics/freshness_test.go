package metrics_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/bg-worker/bg-worker/internal/httpapi"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// fakeSource answers from fields and counts its query sets.
type fakeSource struct {
	mu         sync.Mutex
	jobs       metrics.JobsState
	uploads    metrics.UploadsState
	jobsErr    error
	uploadsErr error
	delay      time.Duration // each Jobs call waits this long (or until its context ends)
	calls      atomic.Int32
	inFlight   atomic.Int32
	maxFlight  atomic.Int32
}

func (f *fakeSource) Jobs(ctx context.Context) (metrics.JobsState, error) {
	f.calls.Add(1)
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxFlight.Load()
		if n <= m || f.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return metrics.JobsState{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs, f.jobsErr
}

func (f *fakeSource) Uploads(ctx context.Context) (metrics.UploadsState, error) {
	if err := ctx.Err(); err != nil {
		return metrics.UploadsState{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.uploads, f.uploadsErr
}

// families gathers g into name → family.
func families(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// sample returns the value of the sample of family name whose labels include want.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestDBCollectorReportsTheSource(t *testing.T) {
	dbNow := time.Date(2026, 3, 1, 12, 0, 7, 300e6, time.UTC)
	success := time.Date(2026, 3, 1, 12, 0, 5, 250e6, time.UTC)
	src := &fakeSource{
		jobs: metrics.JobsState{Now: dbNow, Jobs: []metrics.JobState{
			{Job: "sync-uploads", Interval: 5 * time.Second, LastSuccess: success, Running: 1, Leaders: []string{"replica-a"}, Paused: true},
			{Job: "scan-orphans", Interval: time.Hour},
		}},
		uploads: metrics.UploadsState{Pending: 12, Due: 3},
	}
	c := metrics.NewDBCollector(time.Second, time.Hour)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	// Not attached yet (the store is still connecting): only the up gauges, at 0.
	fams := families(t, reg)
	for _, q := range []string{"jobs", "uploads"} {
		if v, ok := sample(fams, "bgworker_db_metrics_up", map[string]string{"query": q}); !ok || v != 0 {
			t.Errorf("before Attach: bgworker_db_metrics_up{query=%s} = %v (present %v), want 0", q, v, ok)
		}
	}
	if _, ok := fams["bgworker_last_success_timestamp_seconds"]; ok {
		t.Error("before Attach: bgworker_last_success_timestamp_seconds present")
	}

	c.Attach(src, nil)
	fams = families(t, reg)
	job := map[string]string{"job": "sync-uploads"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bgworker_job_interval_seconds", job, 5},
		{"bgworker_job_interval_seconds", map[string]string{"job": "scan-orphans"}, 3600},
		{"bgworker_last_success_timestamp_seconds", job, float64(success.UnixMicro()) / 1e6},
		// Windows aligned to the interval on the database clock: 12:00:07.3 → 12:00:10.
		{"bgworker_next_tick_timestamp_seconds", job, float64(time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC).Unix())},
		{"bgworker_next_tick_timestamp_seconds", map[string]string{"job": "scan-orphans"}, float64(time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC).Unix())},
		{"bgworker_leader", map[string]string{"job": "sync-uploads", "worker_id": "replica-a"}, 1},
		{"bgworker_runs_in_progress", job, 1},
		{"bgworker_runs_in_progress", map[string]string{"job": "scan-orphans"}, 0},
		{"bgworker_job_paused", job, 1},
		{"bgworker_job_paused", map[string]string{"job": "scan-orphans"}, 0},
		{"bgworker_uploads_pending", nil, 12},
		{"bgworker_uploads_due", nil, 3},
		{"bgworker_db_metrics_up", map[string]string{"query": "jobs"}, 1},
		{"bgworker_db_metrics_up", map[string]string{"query": "uploads"}, 1},
		{"bgworker_db_metrics_errors_total", map[string]string{"query": "jobs"}, 0},
	}
	for _, c := range checks {
		v, ok := sample(fams, c.name, c.labels)
		if !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	// A job nobody leads and that never succeeded has no leader and no last-success series.
	if _, ok := sample(fams, "bgworker_leader", map[string]string{"job": "scan-orphans"}); ok {
		t.Error("bgworker_leader{job=scan-orphans} present, but nobody leads it")
	}
	if _, ok := sample(fams, "bgworker_last_success_timestamp_seconds", map[string]string{"job": "scan-orphans"}); ok {
		t.Error("bgworker_last_success_timestamp_seconds{job=scan-orphans} present, but it never succeeded")
	}
}

// dailyAt3 is a calendar schedule: windows start at 03:00 UTC.
type dailyAt3 struct{}

func (dailyAt3) Window(t time.Time) (time.Time, time.Time) {
	start := time.Date(t.Year(), t.Month(), t.Day(), 3, 0, 0, 0, time.UTC)
	if start.After(t) {
		start = start.AddDate(0, 0, -1)
	}
	return start, start.AddDate(0, 0, 1)
}

// A job with a calendar schedule reports its schedule's next instant, not the next
// multiple of its interval.
func TestDBCollectorNextTickOfACalendarSchedule(t *testing.T) {
	dbNow := time.Date(2026, 3, 1, 12, 0, 7, 0, time.UTC)
	src := &fakeSource{jobs: metrics.JobsState{Now: dbNow, Jobs: []metrics.JobState{
		{Job: "prune-runs", Interval: 24 * time.Hour}, {Job: "sync-uploads", Interval: 5 * time.Second}}}}
	c := metrics.NewDBCollector(time.Second, time.Hour)
	c.Attach(src, nil)
	c.SetSchedule("prune-runs", dailyAt3{})
	fams := families(t, gathererOf(c))
	if v, _ := sample(fams, "bgworker_next_tick_timestamp_seconds", map[string]string{"job": "prune-runs"}); v != float64(time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC).Unix()) {
		t.Errorf("prune-runs next tick %v, want 03:00 UTC the next day", time.Unix(int64(v), 0).UTC())
	}
	if v, _ := sample(fams, "bgworker_next_tick_timestamp_seconds", map[string]string{"job": "sync-uploads"}); v != float64(time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC).Unix()) {
		t.Errorf("sync-uploads next tick %v, want 12:00:10", time.Unix(int64(v), 0).UTC())
	}
}

// The next tick follows the database clock while the answer is cached.
func TestDBCollectorNextTickAdvancesWhileCached(t *testing.T) {
	dbNow := time.Now().UTC()
	src := &fakeSource{jobs: metrics.JobsState{Now: dbNow, Jobs: []metrics.JobState{{Job: "j", Interval: 100 * time.Millisecond}}}}
	c := metrics.NewDBCollector(time.Second, time.Hour)
	c.Attach(src, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	first, _ := sample(families(t, reg), "bgworker_next_tick_timestamp_seconds", nil)
	time.Sleep(250 * time.Millisecond)
	second, _ := sample(families(t, reg), "bgworker_next_tick_timestamp_seconds", nil)
	if src.calls.Load() != 1 {
		t.Fatalf("%d query sets, want 1 (cached)", src.calls.Load())
	}
	if d := second - first; d < 0.15 || d > 0.45 {
		t.Errorf("next tick moved by %.3fs over 250ms of cache, want ≈ 0.2–0.3s", d)
	}
}

// Many scrapes at once, and scrapes in a burst, send one query set per TTL.
func TestDBCollectorCachesAndNeverPilesUp(t *testing.T) {
	src := &fakeSource{delay: 100 * time.Millisecond, jobs: metrics.JobsState{Now: time.Now(), Jobs: []metrics.JobState{{Job: "j", Interval: time.Second}}}}
	c := metrics.NewDBCollector(time.Second, 400*time.Millisecond)
	c.Attach(src, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), `bgworker_job_interval_seconds{job="j"} 1`) {
				t.Errorf("/metrics = %d:\n%s", rec.Code, rec.Body.String())
			}
		}()
	}
	wg.Wait()
	if n := src.calls.Load(); n != 1 {
		t.Errorf("20 concurrent scrapes sent %d query sets, want 1", n)
	}
	if m := src.maxFlight.Load(); m != 1 {
		t.Errorf("%d query sets in flight at once, want 1", m)
	}
	time.Sleep(450 * time.Millisecond)
	families(t, reg)
	families(t, reg)
	if n := src.calls.Load(); n != 2 {
		t.Errorf("after the TTL, two scrapes sent %d query sets in total, want 2", n)
	}
}

// A failing or hanging database: its series are left out, up is 0 and the error counter
// counts query sets (not scrapes); /metrics answers 200 within the timeout.
func TestDBCollectorFailures(t *testing.T) {
	src := &fakeSource{
		jobsErr: errors.New("connection refused"),
		uploads: metrics.UploadsState{Pending: 4, Due: 1},
	}
	c := metrics.NewDBCollector(300*time.Millisecond, time.Hour)
	c.Attach(src, nil)
	m := prometheus.NewRegistry()
	m.MustRegister(c)
	h := promhttp.HandlerFor(m, promhttp.HandlerOpts{})
	for range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			t.Fatalf("/metrics = %d with a failing query set, want 200", rec.Code)
		}
	}
	fams := families(t, m)
	for _, name := range []string{"bgworker_job_interval_seconds", "bgworker_last_success_timestamp_seconds", "bgworker_next_tick_timestamp_seconds", "bgworker_leader", "bgworker_runs_in_progress"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s reported although its query set failed", name)
		}
	}
	want := map[string]float64{"jobs": 0, "uploads": 1}
	for q, w := range want {
		if v, _ := sample(fams, "bgworker_db_metrics_up", map[string]string{"query": q}); v != w {
			t.Errorf("bgworker_db_metrics_up{query=%s} = %v, want %v", q, v, w)
		}
	}
	if v, _ := sample(fams, "bgworker_db_metrics_errors_total", map[string]string{"query": "jobs"}); v != 1 {
		t.Errorf("bgworker_db_metrics_errors_total{query=jobs} = %v after 4 scrapes of one cached failure, want 1", v)
	}
	if v, _ := sample(fams, "bgworker_uploads_due", nil); v != 1 {
		t.Errorf("bgworker_uploads_due = %v, want 1 (its own query set worked)", v)
	}

	// A database that does not answer: the scrape ends after the timeout.
	hang := &fakeSource{delay: time.Hour}
	c2 := metrics.NewDBCollector(300*time.Millisecond, time.Hour)
	c2.Attach(hang, nil)
	start := time.Now()
	fams = families(t, gathererOf(c2))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a scrape against a hanging database took %s, want ≈ the 300ms timeout", d)
	}
	if v, _ := sample(fams, "bgworker_db_metrics_up", map[string]string{"query": "jobs"}); v != 0 {
		t.Errorf("bgworker_db_metrics_up{query=jobs} = %v against a hanging database, want 0", v)
	}
	if jobsErr, _ := c2.Errors(); !errors.Is(jobsErr, context.DeadlineExceeded) {
		t.Errorf("query set error %v, want the deadline", jobsErr)
	}
}

func gathererOf(cs ...prometheus.Collector) prometheus.Gatherer {
	r := prometheus.NewRegistry()
	r.MustRegister(cs...)
	return r
}

// --- against a real database -------------------------------------------------------------

// fleet is a migrated database with jobs registered the way replicas register them.
type fleet struct {
	url string
	st  *store.Store
	db  *pgx.Conn
}

func newFleet(t *testing.T, jobs map[string]time.Duration) *fleet {
	t.Helper()
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, url, store.Options{ApplicationName: "metrics-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	for name, iv := range jobs {
		k := lock.KeyFor(name)
		if _, err := st.RegisterJob(ctx, name, k.Namespace, k.ID, iv); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := store.ParseConfig(url, "metrics-test-admin")
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = store.SearchPath("")
	db, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	return &fleet{url: url, st: st, db: db}
}

func (f *fleet) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// lead takes job's advisory lock on a session named workerID, as a leader does; the
// lock is released when the test ends.
func (f *fleet) lead(t *testing.T, job, workerID string) {
	t.Helper()
	cfg, err := store.ParseConfig(f.url, workerID)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	k := lock.KeyFor(job)
	var ok bool
	if err := conn.QueryRow(context.Background(), `SELECT pg_try_advisory_lock($1, $2)`, k.Namespace, k.ID).Scan(&ok); err != nil || !ok {
		t.Fatalf("take lock of %s: %v %v", job, ok, err)
	}
}

// TestStoreSource reads a real database: last success (the newest succeeded run, not a
// later failure), runs in progress, the lock holder from pg_locks, the uploads backlog.
func TestStoreSource(t *testing.T) {
	f := newFleet(t, map[string]time.Duration{"sync-uploads": 5 * time.Second, "prune-runs": time.Hour})
	ctx := context.Background()
	src := metrics.NewStoreSource(f.st, "")

	// Nothing ran yet.
	js, err := src.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(js.Jobs) != 2 || js.Now.IsZero() {
		t.Fatalf("jobs = %+v, want 2 jobs and the database clock", js)
	}
	for _, j := range js.Jobs {
		if !j.LastSuccess.IsZero() || j.Running != 0 || len(j.Leaders) != 0 {
			t.Errorf("fresh job %+v has history", j)
		}
	}

	f.exec(t, `INSERT INTO job_runs (job, tick_at, worker_id, status, started_at, finished_at) VALUES
		('sync-uploads', '2026-01-01 00:00:00+00', 'a', 'succeeded', '2026-01-01 00:00:00+00', '2026-01-01 00:00:01.5+00'),
		('sync-uploads', '2026-01-01 00:00:05+00', 'a', 'succeeded', '2026-01-01 00:00:05+00', '2026-01-01 00:00:06.25+00'),
		('sync-uploads', '2026-01-01 00:00:10+00', 'a', 'failed',    '2026-01-01 00:00:10+00', '2026-01-01 00:00:11+00'),
		('sync-uploads', '2026-01-01 00:00:15+00', 'b', 'running',   '2026-01-01 00:00:15+00', NULL),
		('prune-runs',   '2026-01-01 00:00:00+00', 'a', 'failed',    '2026-01-01 00:00:00+00', '2026-01-01 00:00:01+00')`)
	f.lead(t, "sync-uploads", "replica-b")
	f.exec(t, `INSERT INTO public.uploads (object_key) VALUES ('a/1'), ('a/2'), ('b/1')`)
	if _, err := f.st.UploadRegister(ctx, ""); err != nil {
		t.Fatal(err)
	}

	js, err = src.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]metrics.JobState{}
	for _, j := range js.Jobs {
		got[j.Job] = j
	}
	su := got["sync-uploads"]
	if want := time.Date(2026, 1, 1, 0, 0, 6, 250e6, time.UTC); !su.LastSuccess.Equal(want) {
		t.Errorf("sync-uploads last success %v, want %v (the newest succeeded run's finish)", su.LastSuccess, want)
	}
	if su.Running != 1 || su.Interval != 5*time.Second {
		t.Errorf("sync-uploads = %+v, want 1 running, interval 5s", su)
	}
	if len(su.Leaders) != 1 || su.Leaders[0] != "replica-b" {
		t.Errorf("sync-uploads leaders %q, want [replica-b] (pg_locks)", su.Leaders)
	}
	pr := got["prune-runs"]
	if !pr.LastSuccess.IsZero() || len(pr.Leaders) != 0 || pr.Interval != time.Hour || pr.Paused {
		t.Errorf("prune-runs = %+v, want no success, no leader, interval 1h, not paused", pr)
	}
	if su.Paused {
		t.Error("sync-uploads paused before anyone paused it")
	}
	// Paused (as bg-worker pause records it), then a pause that has expired.
	f.exec(t, `UPDATE worker_jobs SET paused_until = 'infinity' WHERE name = 'prune-runs'`)
	f.exec(t, `UPDATE worker_jobs SET paused_until = now() - interval '1 minute' WHERE name = 'sync-uploads'`)
	js, err = src.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range js.Jobs {
		if j.Paused != (j.Job == "prune-runs") {
			t.Errorf("%s paused = %v", j.Job, j.Paused)
		}
	}

	up, err := src.Uploads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if up.Pending != 3 || up.Due < 1 {
		t.Errorf("uploads = %+v, want 3 pending and some due", up)
	}
	prefixed, err := metrics.NewStoreSource(f.st, "a/").Uploads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if prefixed.Pending != 2 {
		t.Errorf("uploads under a/ = %+v, want 2 pending (R2_PREFIX)", prefixed)
	}

	// A closed store: an error, not a panic.
	st2, err := store.Open(ctx, f.url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st2.Close()
	if _, err := metrics.NewStoreSource(st2, "").Jobs(ctx); err == nil {
		t.Error("Jobs on a closed store: no error")
	}
}

// Two replicas' collectors on one database answer alike: the standby reports the
// leader's last success, within one tick of what the leader reports.
func TestStandbyReportsLeadersFreshness(t *testing.T) {
	f := newFleet(t, map[string]time.Duration{"sync-uploads": 500 * time.Millisecond})
	leader, standby := metrics.New(), metrics.New()
	leader.DB.Attach(metrics.NewStoreSource(f.st, ""), nil)
	st2, err := store.Open(context.Background(), f.url, store.Options{ApplicationName: "standby"})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	standby.DB.Attach(metrics.NewStoreSource(st2, ""), nil)
	f.lead(t, "sync-uploads", "replica-leader")
	leader.Leading("sync-uploads", true)
	standby.LockAttempt("sync-uploads", "held_elsewhere")

	// The leader finishes a run now.
	f.exec(t, `INSERT INTO job_runs (job, tick_at, worker_id, status, finished_at)
		VALUES ('sync-uploads', clock_timestamp(), 'replica-leader', 'succeeded', clock_timestamp())`)
	job := map[string]string{"job": "sync-uploads"}
	lf, sf := families(t, leader.Registry), families(t, standby.Registry)
	lv, lok := sample(lf, "bgworker_last_success_timestamp_seconds", job)
	sv, sok := sample(sf, "bgworker_last_success_timestamp_seconds", job)
	if !lok || !sok {
		t.Fatalf("last success: leader %v (%v), standby %v (%v), want both", lv, lok, sv, sok)
	}
	if d := lv - sv; d < -0.5 || d > 0.5 {
		t.Errorf("standby's last success %v differs from the leader's %v by more than one tick", sv, lv)
	}
	if age := float64(time.Now().UnixMicro())/1e6 - sv; age < -1 || age > 5 {
		t.Errorf("last success %.3fs ago, want just now", age)
	}
	if v, _ := sample(sf, "bgworker_leader", map[string]string{"job": "sync-uploads", "worker_id": "replica-leader"}); v != 1 {
		t.Errorf("standby's bgworker_leader{worker_id=replica-leader} = %v, want 1", v)
	}
	if v, ok := sample(sf, "bgworker_lock_held", job); !ok || v != 0 {
		t.Errorf("standby's bgworker_lock_held = %v (present %v), want 0", v, ok)
	}
	ln, _ := sample(lf, "bgworker_next_tick_timestamp_seconds", job)
	sn, _ := sample(sf, "bgworker_next_tick_timestamp_seconds", job)
	if ln != sn && (ln-sn > 0.5 || sn-ln > 0.5) {
		t.Errorf("next tick: leader %v, standby %v, want the same window", ln, sn)
	}
}

// TestPromlint runs /metrics of the whole registry, every family populated (a real
// database behind the database-backed gauges), through promlint: any problem fails.
func TestPromlint(t *testing.T) {
	m := populated(t)
	h := httpapi.Handler(httpapi.Checks{}, m.Registry)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics = %d", rec.Code)
	}
	problems, err := promlint.New(strings.NewReader(rec.Body.String())).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	// Every bgworker_* family defined is in the output (nothing left empty by accident).
	fams := families(t, m.Registry)
	for _, name := range registryNames(t) {
		if _, ok := fams[name]; !ok && strings.HasPrefix(name, "bgworker_") {
			t.Errorf("%s is not in the populated registry's output", name)
		}
	}
}

// populated is a registry with every bgworker_* family holding a sample: a run of each
// outcome, a leader, bucket requests, a database with a job, a run and an upload.
func populated(t *testing.T) *metrics.Metrics {
	t.Helper()
	f := newFleet(t, map[string]time.Duration{"sync-uploads": 5 * time.Second})
	f.exec(t, `INSERT INTO job_runs (job, tick_at, worker_id, status, finished_at)
		VALUES ('sync-uploads', clock_timestamp(), 'replica-a', 'succeeded', clock_timestamp())`)
	f.exec(t, `INSERT INTO public.uploads (object_key) VALUES ('a/1')`)
	f.lead(t, "sync-uploads", "replica-a")
	m := metrics.New()
	m.DB.Attach(metrics.NewStoreSource(f.st, ""), nil)
	m.LockAttempt("sync-uploads", "acquired")
	m.Leading("sync-uploads", true)
	m.RunFinished("sync-uploads", "succeeded", 120*time.Millisecond)
	m.TickSkipped("sync-uploads")
	m.BucketRequest("head", "ok")
	m.UploadsChecked.WithLabelValues("uploaded").Inc()
	m.FanoutInFlight.Set(0)
	return m
}

// registryNames lists the family names the Metrics collectors describe.
func registryNames(t *testing.T) []string {
	t.Helper()
	m := metrics.New()
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range []prometheus.Collector{m.RunsTotal, m.RunDuration, m.LockAttempts, m.Leader, m.TicksSkipped, m.BucketRequests, m.UploadsChecked, m.FanoutInFlight, m.DB} {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		s := d.String()
		i := strings.Index(s, `fqName: "`)
		if i < 0 {
			t.Fatalf("no name in %s", s)
		}
		s = s[i+len(`fqName: "`):]
		out = append(out, s[:strings.Index(s, `"`)])
	}
	return out
}
