package main

// End-to-end tests of the guarantees: replicas are separate processes of the real
// binary (built with -tags e2e, which adds the e2e-fast and e2e-slow probe jobs), on a
// real PostgreSQL.

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
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

// e2eBinary builds bg-worker with the probe jobs once per test binary.
func e2eBinary(t *testing.T) string {
	t.Helper()
	return testenv.Build(t, "./cmd/bg-worker", "e2e")
}

type proc struct {
	id  string
	cmd *exec.Cmd
	out *syncBuffer

	waitOnce sync.Once
	done     chan struct{} // closed when the process has exited and been waited for
	waitErr  error         // cmd.Wait's answer, set before done closes
}

// exited returns a channel closed once the process has exited (it waits for the process
// in the background from the first call on; a process that already exited is reaped at
// once). Use it instead of cmd.Wait, which may be called only once.
func (p *proc) exited() <-chan struct{} {
	p.waitOnce.Do(func() {
		p.done = make(chan struct{})
		go func() {
			p.waitErr = p.cmd.Wait()
			close(p.done)
		}()
	})
	return p.done
}

// checkRunning fails the test if the process has exited.
func (p *proc) checkRunning(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited():
		t.Fatalf("%s exited: %v\n%s", p.id, p.waitErr, tail(p.out.String(), 30))
	case <-time.After(100 * time.Millisecond): // an exited process is reaped well within this
	}
}

// syncBuffer collects a replica's output.
type syncBuffer = testenv.LogBuffer

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
		select {
		case <-p.exited():
		case <-time.After(30 * time.Second):
			t.Errorf("%s still running 30s after SIGKILL", id)
		}
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
	select {
	case <-p.exited():
		if p.waitErr != nil {
			t.Errorf("%s exited with %v after SIGTERM, want 0\n%s", p.id, p.waitErr, tail(p.out.String(), 30))
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
	testenv.Poll(t, within, what, cond)
}

func dbNow(t *testing.T, db *pgxpool.Pool) time.Time {
	t.Helper()
	var now time.Time
	if err := db.QueryRow(context.Background(), `SELECT clock_timestamp()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

// sleepIntoWindow sleeps until into past the start of the next window of interval on the
// database clock (windows are aligned to the Unix epoch).
func sleepIntoWindow(t *testing.T, db *pgxpool.Pool, interval, into time.Duration) {
	t.Helper()
	now := dbNow(t, db)
	time.Sleep(now.Truncate(interval).Add(interval + into).Sub(now))
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
	countOverlaps(t, db, job)
}

// countOverlaps reports (as errors) and counts the overlaps checkNoOverlap looks for:
// pairs of runs of job, scheduled or manual, neither skipped nor abandoned, where one
// started before the other ended (a run still marked running has not ended), and runs
// that wrote again after another run had written.
func countOverlaps(t *testing.T, db *pgxpool.Pool, job string) int {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT id, job, tick_at, worker_id, started_at, finished_at, status, error
		FROM job_runs WHERE job = $1 AND status NOT IN ('skipped', 'abandoned') ORDER BY started_at, id`, job)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[runRow])
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var last *runRow // the earlier run that ends last (FinishedAt nil: has not ended)
	for i := range rs {
		r := &rs[i]
		if last != nil && (last.FinishedAt == nil || r.StartedAt.Before(*last.FinishedAt)) {
			n++
			end := "has not ended"
			if last.FinishedAt != nil {
				end = "ended " + last.FinishedAt.Format("15:04:05.000")
			}
			t.Errorf("%s: run %d (%s, %s) started %s before run %d (%s, %s) %s", job, r.ID, r.WorkerID, r.Status,
				r.StartedAt.Format("15:04:05.000"), last.ID, last.WorkerID, last.Status, end)
		}
		if last == nil || last.FinishedAt != nil && (r.FinishedAt == nil || r.FinishedAt.After(*last.FinishedAt)) {
			last = r
		}
	}
	// Writes: the events of each run form one contiguous block in commit-time order.
	rows, err = db.Query(context.Background(), `SELECT run_id FROM e2e_events WHERE job = $1 ORDER BY at, id`, job)
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
			n++
			t.Errorf("%s: run %d wrote again after another run had written (interleaved writes)", job, id)
			break
		}
		if i > 0 && ids[i-1] != id {
			done[ids[i-1]] = true
		}
	}
	return n
}

// checkWindows asserts per-window coverage of job's scheduled runs: every window of
// interval from the first to the last one claimed has exactly one scheduled row (a run,
// whatever its outcome, or a skipped window). Two rows is a window run twice; none is a
// window nobody ran, which is an error unless gapOK(window start) says the test allows
// it (a takeover may cost a window; nil allows none). It returns the number of windows
// and of allowed gaps.
func checkWindows(t *testing.T, db *pgxpool.Pool, job string, interval time.Duration, gapOK func(time.Time) bool) (windows, gaps int) {
	t.Helper()
	rs := loadRuns(t, db, job)
	if len(rs) == 0 {
		t.Errorf("%s: no scheduled run", job)
		return 0, 0
	}
	byWindow := map[time.Time][]runRow{}
	first, last := rs[0].TickAt.Truncate(interval), rs[0].TickAt.Truncate(interval)
	for _, r := range rs {
		w := r.TickAt.Truncate(interval)
		byWindow[w] = append(byWindow[w], r)
		if w.Before(first) {
			first = w
		}
		if w.After(last) {
			last = w
		}
	}
	for w := first; !w.After(last); w = w.Add(interval) {
		windows++
		switch in := byWindow[w]; {
		case len(in) == 0 && gapOK != nil && gapOK(w):
			gaps++
		case len(in) == 0:
			t.Errorf("%s: window %s has no run and no skipped row", job, w.Format("15:04:05.000"))
		case len(in) > 1:
			var desc []string
			for _, r := range in {
				desc = append(desc, fmt.Sprintf("run %d by %s (%s)", r.ID, r.WorkerID, r.Status))
			}
			t.Errorf("%s: window %s ran %d times: %s", job, w.Format("15:04:05.000"), len(in), strings.Join(desc, ", "))
		}
	}
	return windows, gaps
}

// Guarantees 1 and 2 with three processes started at staggered times, 200ms windows, a
// fast job and a slow job (2.5 intervals), for at least 100 windows: every window from
// the first to the last has exactly one scheduled run or skipped row, no two runs of a
// job overlap in time nor interleave their writes, and no run fails.
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
		overlaps := countOverlaps(t, db, job)
		// Nobody died or let go of a lock: every window must have its run or skip.
		windows, _ := checkWindows(t, db, job, 200*time.Millisecond, nil)
		byStatus := map[string]int{}
		byWorker := map[string]int{}
		for _, r := range loadRuns(t, db, job) {
			byStatus[r.Status]++
			if r.Status != "skipped" {
				byWorker[r.WorkerID]++
			}
			if r.Status == "failed" || r.Status == "abandoned" {
				t.Errorf("%s: run %d %s: %v", job, r.ID, r.Status, r.Error)
			}
		}
		t.Logf("%s: %d windows, statuses %v, runs by replica %v, overlaps %d", job, windows, byStatus, byWorker, overlaps)
		if windows < 100 {
			t.Errorf("%s: %d windows observed, want at least 100", job, windows)
		}
		if job == "e2e-slow" && byStatus["skipped"] == 0 {
			t.Errorf("slow job: no skipped windows recorded")
		}
	}
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
	waitStandbys(t, db, ps)
	return ps, w, pid, runID
}

// waitStandbys waits until every replica of ps tries, as a standby, the lock of each job
// it does not lead (its lock session for the job exists and last ran
// pg_try_advisory_lock): from then on they all try at each window boundary, and none
// takes a lock mid-window with the first tick of a late start.
func waitStandbys(t *testing.T, db *pgxpool.Pool, ps map[string]*proc) {
	t.Helper()
	poll(t, 30*time.Second, "every replica trying the locks it does not hold", func() bool {
		rows, err := db.Query(context.Background(), `SELECT w.id,
				(SELECT count(*) FROM pg_stat_activity a WHERE a.datname = current_database() AND a.application_name = w.id
					AND a.query LIKE 'SELECT pg_try_advisory_lock(%'),
				(SELECT count(*) FROM worker_jobs j WHERE NOT EXISTS (SELECT 1 FROM worker_lock_holders h WHERE h.job = j.name AND h.worker_id = w.id))
			FROM unnest($1::text[]) AS w(id)`, slices.Collect(maps.Keys(ps)))
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			ID             string
			Trying, NotLed int64
		}
		rs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Trying < r.NotLed {
				return false
			}
		}
		return true
	})
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
			// Every window has its run or skip, except those between the kill and the new
			// leader's first run (the wait, for a job with external effects).
			windows, gaps := checkWindows(t, db, "e2e-slow", interval, func(w time.Time) bool {
				return !w.Before(killedAt.Truncate(interval)) && w.Before(next.StartedAt)
			})
			t.Logf("%d windows, %d without a run during the takeover", windows, gaps)
		})
	}
}

// pg_terminate_backend on the holder's lock session, early in a window: its run fails
// its next fenced write and is recorded cancelled within about a heartbeat; no write of
// it commits after the termination; the old holder logs that it no longer leads and runs
// nothing more; another replica runs the job at the next window (the job's effects are
// all fenced writes, so the new leader does not wait), and runs never overlap.
func TestE2ETerminateHolderBackend(t *testing.T) {
	t.Parallel()
	const (
		interval  = 200 * time.Millisecond // e2eEnv's WORKER_INTERVAL_MS
		heartbeat = 250 * time.Millisecond // e2eEnv's LOCK_HEARTBEAT
		slack     = time.Second            // a loaded CI machine
	)
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["E2E_SLOW_FOR"] = "30s"
	ps, w, pid, runID := startAndWaitForSlowRun(t, db, env, 3)
	// 50ms into a window: the run's next write (every 50ms) fails its fence well before
	// the next boundary, where a standby takes the lock and would abandon a run still
	// marked running.
	sleepIntoWindow(t, db, interval, 50*time.Millisecond)
	termAt := dbNow(t, db)
	var terminated bool
	if err := db.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, terminated, err)
	}
	// The backend exits, and its lock is freed, a moment after the call returns.
	var lockGone time.Time
	poll(t, 5*time.Second, "the terminated backend's lock freed", func() bool {
		var held bool
		if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'), clock_timestamp()`,
			pid).Scan(&held, &lockGone); err != nil {
			t.Fatal(err)
		}
		return !held
	})
	t.Logf("terminated %s's lock backend %s into a window; its lock freed %s later", w,
		termAt.Sub(termAt.Truncate(interval)), lockGone.Sub(termAt))
	poll(t, heartbeat+slack, "the old run stops", func() bool { return runStatus(t, db, runID) != "running" })
	var status string
	var finished *time.Time
	if err := db.QueryRow(ctx, `SELECT status, finished_at FROM job_runs WHERE id = $1`, runID).Scan(&status, &finished); err != nil {
		t.Fatal(err)
	}
	if status != "cancelled" || finished == nil {
		t.Errorf("terminated %s's lock backend: its run %d is %s (finished %v), want cancelled", w, runID, status, finished)
	}
	if finished != nil {
		t.Logf("terminated %s's lock backend: its run %s %s after", w, status, finished.Sub(termAt))
	}

	next := nextRun(t, db, termAt, 20*time.Second)
	took := next.StartedAt.Sub(termAt)
	t.Logf("next run %d by %s, %s after the termination (want another replica within %s)", next.ID, next.WorkerID, took, interval+slack)
	if next.WorkerID == w {
		t.Errorf("the terminated holder %s ran next (run %d); want another replica", w, next.ID)
	}
	if took > interval+slack {
		t.Errorf("next run %s after the termination, want within one interval + %s", took, slack)
	}
	// The old holder stops leading: it says so, the lock is the new runner's, and a few
	// windows later it has run nothing since.
	poll(t, heartbeat+slack, w+" logs that it no longer leads", func() bool {
		return strings.Contains(ps[w].out.String(), "Lost lock; no longer leading")
	})
	poll(t, 10*time.Second, "3 windows after the takeover", func() bool {
		n := 0
		for _, r := range loadRuns(t, db, "e2e-slow") {
			if r.StartedAt.After(next.StartedAt) {
				n++
			}
		}
		return n >= 3
	})
	if h, _ := holder(t, db, "e2e-slow"); h != next.WorkerID {
		t.Errorf("e2e-slow held by %q, want %s (the replica that ran next)", h, next.WorkerID)
	}
	for _, r := range loadRuns(t, db, "e2e-slow") {
		if r.WorkerID == w && r.ID != runID && r.StartedAt.After(termAt) {
			t.Errorf("the terminated holder %s claimed window %s (run %d, %s) after the termination", w, r.TickAt.Format("15:04:05.000"), r.ID, r.Status)
		}
	}
	if n := eventsAfter(t, db, runID, lockGone); n > 0 {
		t.Errorf("old run committed %d writes after its lock was freed", n)
	}
	checkNoOverlap(t, db, "e2e-slow")
	// The terminated window's skip may have been claimed after the termination (and
	// refused by the fence); every other window has its run or skip.
	checkWindows(t, db, "e2e-slow", interval, func(w time.Time) bool { return w.Equal(termAt.Truncate(interval)) })
	if t.Failed() {
		for _, r := range loadRuns(t, db, "e2e-slow") {
			t.Logf("run %d window %s by %s %s, %s … %s", r.ID, r.TickAt.Format("15:04:05.000"), r.WorkerID, r.Status,
				r.StartedAt.Format("15:04:05.000"), fmtEnd(r.FinishedAt))
		}
	}
}

func fmtEnd(at *time.Time) string {
	if at == nil {
		return "-"
	}
	return at.Format("15:04:05.000")
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
	// Only runs that started after the restart show that runs resumed.
	since := dbNow(t, db2)
	poll(t, 30*time.Second, "5 runs succeed after the restart", func() bool {
		var n int
		if err := db2.QueryRow(context.Background(), `SELECT count(*) FROM job_runs
			WHERE job = 'e2e-fast' AND status = 'succeeded' AND started_at > $1`, since).Scan(&n); err != nil {
			t.Fatalf("count runs after the restart: %v", err)
		}
		return n >= 5
	})
	t.Logf("runs resumed %s after the restart", time.Since(restarted))
	for _, p := range ps {
		p.checkRunning(t)
	}
	for _, p := range ps {
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
