package main

// The whole binary's HTTP side (moved from internal/httpapi, whose own tests cover the
// handler): /healthz, /readyz and /metrics of a running worker, readiness across
// migrate, and `bg-worker healthcheck`.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

// worker is a running bg-worker process.
type worker struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

func (w *worker) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs.Write(p)
}

func startWorker(t *testing.T, bin string, env ...string) *worker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w := &worker{t: t, base: "http://" + addr, done: make(chan struct{})}
	w.cmd = exec.Command(bin, "run")
	w.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HTTP_ADDR=" + addr, "WORKER_ID=" + "httpapi-" + t.Name(),
		"LOG_LEVEL=debug", "SHUTDOWN_TIMEOUT=5s"}, env...)
	w.cmd.Stdout, w.cmd.Stderr = w, w
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = w.cmd.Process.Kill()
			<-w.done
		}
		if t.Failed() {
			w.mu.Lock()
			t.Logf("bg-worker log:\n%s", w.logs.String())
			w.mu.Unlock()
		}
	})
	return w
}

// get returns the status code and body of a GET, or 0 and the error text.
func (w *worker) get(path string) (int, string) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(w.base + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond every 100ms until it holds or timeout passes.
func (w *worker) eventually(what string, timeout time.Duration, cond func() (bool, string)) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		select {
		case <-w.done:
			w.t.Fatalf("bg-worker exited (%s) while waiting for %s (last: %s)", w.cmd.ProcessState, what, detail)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: not within %s (last: %s)", what, timeout, detail)
		}
	}
}

func (w *worker) status(path string, want int) func() (bool, string) {
	return func() (bool, string) {
		code, body := w.get(path)
		return code == want, fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
	}
}

// metric returns the value of the sample of family name whose labels include want (sum of
// matching samples; histograms count observations), and whether the family exists.
func (w *worker) metric(name string, want map[string]string) (float64, bool) {
	code, body := w.get("/metrics")
	if code != 200 {
		return 0, false
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		w.t.Fatalf("/metrics does not parse: %v", err)
	}
	fam, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		if !labelsMatch(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, true
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// TestRunningWorker runs the real binary on a PostgreSQL server of its own and a real
// bucket: probes answer, a tick shows up as a run in /metrics, readiness fails while the
// database is down and recovers when it is back, and runs resume.
func TestRunningWorker(t *testing.T) {
	srv := testenv.NewPostgresServer(t)
	dbURL := srv.CreateDatabase(t, true)
	b := testenv.Bucket(t)
	// One due upload, so the first run talks to the bucket (an idle run sends nothing).
	seed, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Exec(context.Background(), `INSERT INTO uploads (object_key) VALUES ('probe/missing.txt')`); err != nil {
		t.Fatal(err)
	}
	seed.Close(context.Background())
	bin := e2eBinary(t)
	w := startWorker(t, bin,
		"DATABASE_URL="+dbURL,
		"WORKER_JOBS=sync-uploads",
		"WORKER_INTERVAL_MS=500",
		"R2_ENDPOINT="+b.Endpoint, "R2_REGION="+b.Region, "R2_BUCKET_NAME="+b.Name,
		"R2_ACCESS_KEY_ID="+b.AccessKeyID, "R2_SECRET_ACCESS_KEY="+b.SecretAccessKey,
	)
	w.eventually("/healthz 200", 30*time.Second, w.status("/healthz", 200))
	w.eventually("/readyz 200", 30*time.Second, w.status("/readyz", 200))

	job := map[string]string{"job": "sync-uploads"}
	succeeded := map[string]string{"job": "sync-uploads", "status": "succeeded"}
	w.eventually("a succeeded run in bgworker_runs_total", 15*time.Second, func() (bool, string) {
		v, _ := w.metric("bgworker_runs_total", succeeded)
		return v >= 1, fmt.Sprint(v)
	})
	if v, _ := w.metric("bgworker_run_duration_seconds", job); v < 1 {
		t.Errorf("bgworker_run_duration_seconds{job=sync-uploads} has %v observations, want ≥ 1", v)
	}
	if v, _ := w.metric("bgworker_lock_held", job); v != 1 {
		t.Errorf("bgworker_lock_held{job=sync-uploads} = %v, want 1 (the only replica leads)", v)
	}
	if v, _ := w.metric("bgworker_lock_attempts_total", map[string]string{"job": "sync-uploads", "result": "acquired"}); v != 1 {
		t.Errorf("bgworker_lock_attempts_total{result=acquired} = %v, want 1", v)
	}
	for _, name := range []string{"bgworker_bucket_requests_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := w.metric(name, nil); !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	before, _ := w.metric("bgworker_runs_total", succeeded)

	// The database goes away: not ready, but alive (restarting the process would not help).
	srv.Stop(t)
	w.eventually("/readyz 503 while the database is down", 15*time.Second, w.status("/readyz", 503))
	if code, body := w.get("/readyz"); code != 503 || !strings.HasPrefix(body, "not ok: ") || len(body) <= len("not ok: \n") {
		t.Errorf("/readyz = %d %q while the database is down, want 503 saying what is wrong", code, body)
	}
	w.eventually("bgworker_lock_held 0 while the database is down", 15*time.Second, func() (bool, string) {
		v, _ := w.metric("bgworker_lock_held", job)
		return v == 0, fmt.Sprint(v)
	})
	time.Sleep(time.Second) // a few more ticks without a database
	if code, body := w.get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q while the database is down, want 200: the loop still ticks", code, body)
	}

	// It comes back: ready again, and the leader runs the job again.
	srv.Start(t)
	w.eventually("/readyz 200 after the database is back", 30*time.Second, w.status("/readyz", 200))
	w.eventually("runs resume after the database is back", 30*time.Second, func() (bool, string) {
		v, _ := w.metric("bgworker_runs_total", succeeded)
		return v > before, fmt.Sprintf("%v succeeded runs, %v before the outage", v, before)
	})

	// SIGTERM: clean exit 0.
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
		if code := w.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
}

// TestReadyzWaitsForMigrations: a worker on a database without the schema is alive but not
// ready (its log says to run migrate); after `bg-worker migrate` it becomes ready.
func TestReadyzWaitsForMigrations(t *testing.T) {
	dbURL := testenv.EmptyDatabaseURL(t)
	bin := e2eBinary(t)
	w := startWorker(t, bin, "DATABASE_URL="+dbURL, "WORKER_JOBS=prune-runs")
	w.eventually("/healthz 200 before the schema exists", 30*time.Second, w.status("/healthz", 200))
	w.eventually("the log asking for migrate", 30*time.Second, func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return strings.Contains(w.logs.String(), "run `bg-worker migrate`"), "no such line"
	})
	if code, body := w.get("/readyz"); code != 503 || !strings.HasPrefix(body, "not ok: ") {
		t.Errorf("/readyz = %d %q without the schema, want 503 not ok", code, body)
	}
	migrate := exec.Command(bin, "migrate")
	migrate.Env = []string{"DATABASE_URL=" + dbURL}
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("bg-worker migrate: %v\n%s", err, out)
	}
	w.eventually("/readyz 200 after migrate", 30*time.Second, w.status("/readyz", 200))
	// prune-runs runs daily: after migrate the worker leads it (its first run waits for
	// 03:00 UTC).
	w.eventually("leading prune-runs in /metrics", 15*time.Second, func() (bool, string) {
		v, _ := w.metric("bgworker_lock_held", map[string]string{"job": "prune-runs"})
		return v == 1, fmt.Sprint(v)
	})
}

// TestHealthcheckCommand: `bg-worker healthcheck` (the Docker HEALTHCHECK in distroless
// images) exits 0 against a live worker and 1 when nothing listens.
func TestHealthcheckCommand(t *testing.T) {
	dbURL := testenv.DatabaseURL(t)
	bin := e2eBinary(t)
	w := startWorker(t, bin, "DATABASE_URL="+dbURL, "WORKER_JOBS=prune-runs")
	w.eventually("/healthz 200", 30*time.Second, w.status("/healthz", 200))
	addr := strings.TrimPrefix(w.base, "http://")
	hc := func(extra ...string) (int, string) {
		cmd := exec.Command(bin, append([]string{"healthcheck"}, extra...)...)
		cmd.Env = []string{"HTTP_ADDR=" + addr}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := hc(); code != 0 {
		t.Errorf("healthcheck: exit %d (%s), want 0", code, out)
	}
	w.eventually("/readyz 200", 30*time.Second, w.status("/readyz", 200))
	if code, out := hc("--path", "/readyz"); code != 0 {
		t.Errorf("healthcheck --path /readyz: exit %d (%s), want 0", code, out)
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	<-w.done
	if code, out := hc(); code != 1 {
		t.Errorf("healthcheck with nothing listening: exit %d (%s), want 1", code, out)
	}
}
