package main

// End-to-end tests of the guarantees: replicas are separate processes of the real
// binary (built with -tags e2e, which adds the e2e-fast and e2e-slow probe jobs), on a
// real PostgreSQL.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// e2eBinary builds bg-worker with the probe jobs once per test binary.
func e2eBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bgw-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "bg-worker")
		out, err := exec.Command("go", "build", "-tags", "e2e", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type proc struct {
	id  string
	cmd *exec.Cmd
	out *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// e2eEnv is the environment every replica gets; tests override entries.
func e2eEnv(url string) map[string]string {
	return map[string]string{
		"DATABASE_URL":       url,
		"WORKER_INTERVAL_MS": "200",
		"WORKER_JOBS":        "e2e-fast,e2e-slow",
		"HTTP_ADDR":          "",
		"LOCK_HEARTBEAT":     "250ms",
		"LOCK_TIMEOUT":       "3s",
		"SHUTDOWN_TIMEOUT":   "2s",
		"LOG_LEVEL":          "debug",
	}
}

func startReplica(t *testing.T, id string, env map[string]string) *proc {
	t.Helper()
	cmd := exec.Command(e2eBinary(t), "run")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "WORKER_ID=" + id}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{id: id, cmd: cmd, out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", id, tail(p.out.String(), 60))
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM, want 0\n%s", p.id, err, tail(p.out.String(), 30))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30s of SIGTERM", p.id)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func e2eDB(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = pool.Exec(context.Background(), `CREATE TABLE IF NOT EXISTS e2e_events (
		id bigserial PRIMARY KEY, job text NOT NULL, run_id bigint NOT NULL, worker_id text NOT NULL,
		seq int NOT NULL, at timestamptz NOT NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

type runRow struct {
	ID         int64
	Job        string
	TickAt     time.Time
	WorkerID   string
	StartedAt  time.Time
	FinishedAt *time.Time
	Status     string
	Error      *string
}

func loadRuns(t *testing.T, db *pgxpool.Pool, job string) []runRow {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT id, job, tick_at, worker_id, started_at, finished_at, status, error
		FROM job_runs WHERE job = $1 AND trigger = 'schedule' ORDER BY started_at, id`, job)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[runRow])
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func dbNow(t *testing.T, db *pgxpool.Pool) time.Time {
	t.Helper()
	var now time.Time
	if err := db.QueryRow(context.Background(), `SELECT clock_timestamp()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

// holder returns the worker id and lock pid leading job, "" if none.
func holder(t *testing.T, db *pgxpool.Pool, job string) (string, int32) {
	t.Helper()
	var w string
	var pid int32
	err := db.QueryRow(context.Background(), `SELECT worker_id, pid FROM worker_lock_holders WHERE job = $1`, job).Scan(&w, &pid)
	if err != nil {
		return "", 0
	}
	return w, pid
}

// checkNoOverlap asserts that no two executions of job overlap: neither the runs'
// [started_at, finished_at] intervals nor their committed writes (e2e_events).
func checkNoOverlap(t *testing.T, db *pgxpool.Pool, job string) {
	t.Helper()
	var prev *runRow
	for _, r := range loadRuns(t, db, job) {
		if r.Status == "skipped" {
			continue
		}
		if prev != nil && prev.FinishedAt != nil && r.StartedAt.Before(*prev.FinishedAt) && prev.Status != "abandoned" {
			t.Errorf("%s: run %d (%s) started %s before run %d (%s) finished %s", job, r.ID, r.WorkerID, r.StartedAt,
				prev.ID, prev.WorkerID, *prev.FinishedAt)
		}
		rr := r
		prev = &rr
	}
	// Writes: the events of each run form one contiguous block in commit-time order.
	rows, err := db.Query(context.Background(), `SELECT run_id FROM e2e_events WHERE job = $1 ORDER BY at, id`, job)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	done := map[int64]bool{}
	for i, id := range ids {
		if done[id] {
			t.Errorf("%s: run %d wrote again after another run had written (interleaved writes)", job, id)
			break
		}
		if i > 0 && ids[i-1] != id {
			done[ids[i-1]] = true
		}
	}
}

// Guarantees 1 and 2 with three processes started at staggered times, 200ms windows, a
// fast job and a slow job (2.5 intervals), for at least 100 windows.
func TestE2EReplicasRunOncePerTick(t *testing.T) {
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	var ps []*proc
	for i, delay := range []time.Duration{0, 70 * time.Millisecond, 130 * time.Millisecond} {
		time.Sleep(delay)
		ps = append(ps, startReplica(t, fmt.Sprintf("r%d", i+1), env))
	}
	poll(t, 90*time.Second, "110 fast runs", func() bool { return len(loadRuns(t, db, "e2e-fast")) >= 110 })
	for _, p := range ps {
		p.stop(t)
	}
	for _, job := range []string{"e2e-fast", "e2e-slow"} {
		rs := loadRuns(t, db, job)
		checkNoOverlap(t, db, job)
		// Count windows from the first to the last claimed one.
		first, last := rs[0].TickAt, rs[len(rs)-1].TickAt
		windows := int(last.Sub(first)/(200*time.Millisecond)) + 1
		byWindow := map[time.Time]int{}
		byStatus := map[string]int{}
		for _, r := range rs {
			byWindow[r.TickAt]++
			byStatus[r.Status]++
			if r.Status == "failed" || r.Status == "abandoned" {
				t.Errorf("%s: run %d %s: %v", job, r.ID, r.Status, r.Error)
			}
		}
		for w, n := range byWindow {
			if n > 1 {
				t.Errorf("%s: window %s has %d runs", job, w, n)
			}
		}
		covered := len(byWindow) // windows with a run or a recorded skip
		pct := 100 * float64(covered) / float64(windows)
		t.Logf("%s: %d windows, %d with a run or skip (%.1f%%), statuses %v, overlaps 0", job, windows, covered, pct, byStatus)
		if pct < 95 {
			t.Errorf("%s: only %.1f%% of windows have a run", job, pct)
		}
		if job == "e2e-slow" && byStatus["skipped"] == 0 {
			t.Errorf("slow job: no skipped windows recorded")
		}
	}
	// Each window's single run came from whichever replica led; all three replicas
	// existed the whole time, and no replica ran every job once per window on its own.
}

// startAndWaitForSlowRun starts n replicas and returns them with the worker leading
// e2e-slow once it is in a run.
func startAndWaitForSlowRun(t *testing.T, db *pgxpool.Pool, env map[string]string, n int) (map[string]*proc, string, int32, int64) {
	t.Helper()
	ps := map[string]*proc{}
	for i := range n {
		id := fmt.Sprintf("r%d", i+1)
		ps[id] = startReplica(t, id, env)
	}
	var w string
	var pid int32
	var runID int64
	poll(t, 30*time.Second, "e2e-slow running", func() bool {
		err := db.QueryRow(context.Background(), `SELECT h.worker_id, h.pid, r.id FROM worker_lock_holders h
			JOIN job_runs r ON r.job = h.job AND r.status = 'running' AND r.worker_id = h.worker_id
			WHERE h.job = 'e2e-slow' AND h.running_since IS NOT NULL`).Scan(&w, &pid, &runID)
		if err != nil {
			return false
		}
		// Let it write a few events first.
		var events int
		_ = db.QueryRow(context.Background(), `SELECT count(*) FROM e2e_events WHERE run_id = $1`, runID).Scan(&events)
		return events >= 3
	})
	return ps, w, pid, runID
}

// nextRunBy waits for a scheduled e2e-slow run started after t0 and returns it.
func nextRun(t *testing.T, db *pgxpool.Pool, after time.Time, within time.Duration) runRow {
	t.Helper()
	var got runRow
	poll(t, within, "a new e2e-slow run", func() bool {
		for _, r := range loadRuns(t, db, "e2e-slow") {
			if r.StartedAt.After(after) && r.Status != "skipped" {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

func eventsAfter(t *testing.T, db *pgxpool.Pool, runID int64, after time.Time) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM e2e_events WHERE run_id = $1 AND at > $2`, runID, after).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func runStatus(t *testing.T, db *pgxpool.Pool, id int64) string {
	t.Helper()
	var s string
	if err := db.QueryRow(context.Background(), `SELECT status FROM job_runs WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// kill -9 the holder mid-run. For a job whose effects are all fenced writes, another
// replica runs it at its next tick, without waiting (the dead run is marked abandoned at
// once); for a job with effects outside the database, the new leader first waits out the
// old holder's client bound (LOCK_TIMEOUT/2).
func TestE2EKillHolder(t *testing.T) {
	t.Parallel()
	const interval = 200 * time.Millisecond
	const clientBound = 1500 * time.Millisecond // LOCK_TIMEOUT/2
	cases := []struct {
		name     string
		effects  bool
		min, max time.Duration // from the kill to the next run's start
	}{
		// One tick at most (the standby tries the lock at each boundary), plus slack for
		// a loaded CI machine; well under the client bound a wait would add.
		{"fenced writes only", false, 0, interval + 1000*time.Millisecond},
		{"effects outside the database", true, clientBound, interval + clientBound + 2*time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := testenv.DatabaseURL(t)
			db := e2eDB(t, url)
			env := e2eEnv(url)
			env["E2E_SLOW_FOR"] = "30s" // a run that is still going when killed
			if tc.effects {
				env["E2E_SLOW_EFFECTS"] = "true"
			}
			ps, w, _, runID := startAndWaitForSlowRun(t, db, env, 3)
			killedAt := dbNow(t, db)
			if err := ps[w].cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			next := nextRun(t, db, killedAt, 20*time.Second)
			took := next.StartedAt.Sub(killedAt)
			t.Logf("kill -9 of %s: %s ran after %s (want %s … %s)", w, next.WorkerID, took, tc.min, tc.max)
			if next.WorkerID == w {
				t.Errorf("the killed worker ran again")
			}
			if took < tc.min || took > tc.max {
				t.Errorf("next run %s after the kill; want %s … %s", took, tc.min, tc.max)
			}
			if s := runStatus(t, db, runID); s != "abandoned" {
				t.Errorf("killed run status %s, want abandoned", s)
			}
			// The view's held_since is when the new leader took the lock, not when its
			// standby session connected (before the kill).
			var heldBy string
			var heldSince time.Time
			if err := db.QueryRow(context.Background(), `SELECT worker_id, held_since FROM worker_lock_holders WHERE job = 'e2e-slow'`).Scan(&heldBy, &heldSince); err != nil {
				t.Fatal(err)
			}
			if heldBy != next.WorkerID || heldSince.Before(killedAt) {
				t.Errorf("worker_lock_holders: %s held since %s; want %s since after the kill at %s", heldBy, heldSince, next.WorkerID, killedAt)
			}
			checkNoOverlap(t, db, "e2e-slow")
		})
	}
}

// pg_terminate_backend on the holder's lock session: its run is cancelled within the
// bound, no write of it commits after the termination, a replica takes over, and runs
// never overlap.
func TestE2ETerminateHolderBackend(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["E2E_SLOW_FOR"] = "30s"
	_, w, pid, runID := startAndWaitForSlowRun(t, db, env, 3)
	termAt := dbNow(t, db)
	if _, err := db.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	// The old holder notices within the heartbeat and records its run cancelled.
	poll(t, 1500*time.Millisecond+2*time.Second, "old run stops", func() bool { return runStatus(t, db, runID) != "running" })
	var finished time.Time
	_ = db.QueryRow(context.Background(), `SELECT finished_at FROM job_runs WHERE id = $1`, runID).Scan(&finished)
	t.Logf("terminated %s's lock backend: its run %s %s after termination", w, runStatus(t, db, runID), finished.Sub(termAt))
	next := nextRun(t, db, termAt, 20*time.Second)
	t.Logf("takeover by %s after %s", next.WorkerID, next.StartedAt.Sub(termAt))
	if n := eventsAfter(t, db, runID, termAt); n > 0 {
		t.Errorf("old run committed %d writes after its lock session was terminated", n)
	}
	checkNoOverlap(t, db, "e2e-slow")
}

// SIGSTOP the holder past the lock timeout, then SIGCONT: after the takeover it does not
// commit a single write.
func TestE2EPausedHolderCommitsNothingAfterTakeover(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["E2E_SLOW_FOR"] = "30s"
	ps, w, _, runID := startAndWaitForSlowRun(t, db, env, 3)
	stoppedAt := dbNow(t, db)
	if err := ps[w].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	next := nextRun(t, db, stoppedAt, 30*time.Second)
	t.Logf("SIGSTOP of %s: %s took over after %s (LOCK_TIMEOUT 3s + interval + LOCK_TIMEOUT/2)", w, next.WorkerID, next.StartedAt.Sub(stoppedAt))
	if next.WorkerID == w {
		t.Fatalf("the paused worker ran again")
	}
	if err := ps[w].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Give the woken process time to try its writes: poll until its log shows it lost the lock.
	poll(t, 20*time.Second, "woken holder notices it lost the lock", func() bool {
		return strings.Contains(ps[w].out.String(), "Lost lock")
	})
	if n := eventsAfter(t, db, runID, next.StartedAt); n > 0 {
		t.Errorf("paused run committed %d writes after the takeover", n)
	}
	if s := runStatus(t, db, runID); s != "abandoned" {
		t.Errorf("paused run status %s, want abandoned", s)
	}
	checkNoOverlap(t, db, "e2e-slow")
}

// A fast restart of PostgreSQL (like pg_ctl restart -m fast): replicas reconnect, runs resume, nobody crashes.
func TestE2EPostgresRestart(t *testing.T) {
	t.Parallel()
	srv := testenv.NewPostgresServer(t)
	url := srv.CreateDatabase(t, true)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["WORKER_JOBS"] = "e2e-fast"
	ps := []*proc{startReplica(t, "r1", env), startReplica(t, "r2", env)}
	poll(t, 30*time.Second, "runs before restart", func() bool { return len(loadRuns(t, db, "e2e-fast")) >= 5 })
	srv.Restart(t)
	restarted := time.Now()
	db2 := e2eDB(t, url)
	var before int
	_ = db2.QueryRow(context.Background(), `SELECT count(*) FROM job_runs WHERE job = 'e2e-fast' AND status = 'succeeded'`).Scan(&before)
	poll(t, 30*time.Second, "runs resume after restart", func() bool {
		var n int
		_ = db2.QueryRow(context.Background(), `SELECT count(*) FROM job_runs WHERE job = 'e2e-fast' AND status = 'succeeded'`).Scan(&n)
		return n >= before+5
	})
	t.Logf("runs resumed %s after the restart", time.Since(restarted))
	for _, p := range ps {
		if p.cmd.ProcessState != nil {
			t.Fatalf("%s exited: %s", p.id, p.cmd.ProcessState)
		}
		p.stop(t)
	}
	checkNoOverlap(t, db2, "e2e-fast")
}

// worker_lock_holders names the worker id and the pid (its lock session's backend) of the
// replica that runs each job right now; status and once work against live replicas.
func TestE2ELockHoldersStatusAndOnce(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["WORKER_INTERVAL_MS"] = "1000"
	env["E2E_SLOW_FOR"] = "30s"
	_, w, pid, runID := startAndWaitForSlowRun(t, db, env, 2)
	var app string
	if err := db.QueryRow(context.Background(), `SELECT application_name FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&app); err != nil {
		t.Fatal(err)
	}
	var runWorker string
	_ = db.QueryRow(context.Background(), `SELECT worker_id FROM job_runs WHERE id = $1`, runID).Scan(&runWorker)
	if app != w || runWorker != w {
		t.Errorf("holder view says %s (pid %d), the session's application_name is %s, the running run is %s's", w, pid, app, runWorker)
	}
	var n int
	_ = db.QueryRow(context.Background(), `SELECT count(*) FROM worker_lock_holders`).Scan(&n)
	if n != 2 {
		t.Errorf("worker_lock_holders has %d rows, want 2 (one per job)", n)
	}

	ctx := context.Background()
	cliEnv := func(extra map[string]string) func(string) (string, bool) {
		m := map[string]string{"DATABASE_URL": url, "WORKER_ID": "cli"}
		for k, v := range extra {
			m[k] = v
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"status", "--json"}, cliEnv(nil), &out, &errOut); err != nil {
		t.Fatalf("status: %v %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), `"worker_id": "`+w+`"`) {
		t.Errorf("status --json does not name %s:\n%s", w, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"status"}, cliEnv(nil), &out, &errOut); err != nil || !strings.Contains(out.String(), w) {
		t.Errorf("status: %v\n%s", err, out.String())
	}
	// once e2e-fast (a probe job, so through the e2e binary): a replica holds it, so the
	// holder runs it on request.
	once := exec.Command(e2eBinary(t), "once", "e2e-fast", "--timeout", "20s")
	once.Env = []string{"DATABASE_URL=" + url, "WORKER_ID=cli", "WORKER_INTERVAL_MS=1000"}
	outb, err := once.Output()
	if err != nil || !strings.Contains(string(outb), "succeeded on r") {
		t.Errorf("once (remote): %v\nstdout %s", err, outb)
	}
	var manual int
	_ = db.QueryRow(ctx, `SELECT count(*) FROM job_runs WHERE job = 'e2e-fast' AND trigger = 'manual' AND status = 'succeeded' AND worker_id LIKE 'r%'`).Scan(&manual)
	if manual != 1 {
		t.Errorf("%d manual runs recorded by a replica, want 1", manual)
	}
}

// once with no replica running: runs here; an unknown job is a usage error.
func TestE2EOnceLocal(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	_ = db
	env := func(k string) (string, bool) {
		m := map[string]string{"DATABASE_URL": url, "WORKER_ID": "cli", "WORKER_INTERVAL_MS": "200"}
		v, ok := m[k]
		return v, ok
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"once", "prune-runs"}, env, &out, &errOut)
	if err != nil || !strings.Contains(out.String(), "succeeded") {
		t.Fatalf("once prune-runs: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	err = run(context.Background(), []string{"once", "nope"}, env, &out, &errOut)
	if code := exitCode(err, &errOut); code != exitUsage {
		t.Errorf("once nope: exit %d, want 2", code)
	}
}

// once when a holder exists but never answers: exit 3 after --timeout.
func TestE2EOnceNoAnswerExitsThree(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	cfg, err := store.ParseConfig(url, "silent-holder")
	if err != nil {
		t.Fatal(err)
	}
	sess := lock.NewSession(cfg, lock.KeyFor("prune-runs"), lock.Options{})
	defer sess.Close(context.Background())
	if l, _, err := sess.TryAcquire(context.Background()); err != nil || l == nil {
		t.Fatalf("hold the lock: %v", err)
	}
	env := func(k string) (string, bool) {
		m := map[string]string{"DATABASE_URL": url, "WORKER_ID": "cli"}
		v, ok := m[k]
		return v, ok
	}
	var out, errOut bytes.Buffer
	start := time.Now()
	err = run(context.Background(), []string{"once", "prune-runs", "--timeout", "1500ms"}, env, &out, &errOut)
	if code := exitCode(err, &errOut); code != exitTimeout {
		t.Errorf("exit %d, want 3 (%v)\n%s", code, err, errOut.String())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s with --timeout 1.5s", took)
	}
}
