package main

import (
	"bytes"
	"context"
	"maps"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

// runCLI runs one bg-worker command in-process and returns its exit code and output.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := exitCode(run(ctx, args, envOf(env), &out, &out), &out)
	return code, out.String()
}

// scheduledSince lists scheduled, non-skipped runs of job that started after t.
func scheduledSince(t *testing.T, db *pgxpool.Pool, job string, after time.Time) []runRow {
	t.Helper()
	var out []runRow
	for _, r := range loadRuns(t, db, job) {
		if r.StartedAt.After(after) && r.Status != "skipped" {
			out = append(out, r)
		}
	}
	return out
}

// Pause stops new runs on every replica within one window without a restart, while a
// run in flight finishes; the pause survives a change of leader; resume brings runs back
// on whichever replica leads; status and worker_lock_holders tell the story.
func TestE2EPauseResume(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["E2E_SLOW_FOR"] = "600ms" // runs of 3 windows: one is in flight when the pause lands
	ps, leader, _, inflight := startAndWaitForSlowRun(t, db, env, 2)

	cli := maps.Clone(env)
	if code, out := runCLI(t, cli, "pause", "no-such-job"); code != exitUsage || !strings.Contains(out, `unknown job "no-such-job"`) {
		t.Errorf("pause of an unknown job: exit %d\n%s", code, out)
	}
	if code, out := runCLI(t, cli, "pause", "e2e-slow", "--reason", "maintenance", "--by", "ops@test"); code != exitOK {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	pausedAt := dbNow(t, db)
	// The run in flight finishes normally.
	poll(t, 10*time.Second, "the run in flight finishes", func() bool { return runStatus(t, db, inflight) != "running" })
	if s := runStatus(t, db, inflight); s != "succeeded" {
		t.Errorf("run in flight when paused: %s, want succeeded", s)
	}
	// No scheduled run starts more than one window (+ slack) after the pause.
	settle := pausedAt.Add(200*time.Millisecond + 300*time.Millisecond)
	var holder string
	poll(t, 10*time.Second, "worker_lock_holders shows the pause", func() bool {
		var by, reason *string
		err := db.QueryRow(context.Background(), `SELECT worker_id, paused_by, paused_reason FROM worker_lock_holders WHERE job = 'e2e-slow'`).Scan(&holder, &by, &reason)
		return err == nil && by != nil && *by == "ops@test" && reason != nil && *reason == "maintenance"
	})
	code, out := runCLI(t, cli, "status")
	if code != exitOK || !strings.Contains(out, "by ops@test until resumed (maintenance)") {
		t.Errorf("status while paused: exit %d\n%s", code, out)
	}

	// A change of leader while paused: the new leader starts nothing either.
	if err := ps[leader].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var newLeader string
	poll(t, 15*time.Second, "another replica leads e2e-slow", func() bool {
		err := db.QueryRow(context.Background(), `SELECT worker_id FROM worker_lock_holders WHERE job = 'e2e-slow'`).Scan(&newLeader)
		return err == nil && newLeader != leader
	})
	waitUntil := dbNow(t, db).Add(1 * time.Second) // five windows under the new leader
	poll(t, 10*time.Second, "five windows pass", func() bool { return dbNow(t, db).After(waitUntil) })
	if runs := scheduledSince(t, db, "e2e-slow", settle); len(runs) > 0 {
		t.Errorf("%d runs started while paused (first by %s at %s, pause at %s)", len(runs), runs[0].WorkerID, runs[0].StartedAt, pausedAt)
	}
	if !strings.Contains(ps[newLeader].out.String(), "Job paused; starting no new runs") {
		t.Errorf("the new leader did not log the pause:\n%s", tail(ps[newLeader].out.String(), 20))
	}

	// Resume: runs come back at the next window, on the new leader.
	if code, out := runCLI(t, cli, "resume", "e2e-slow"); code != exitOK {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	resumedAt := dbNow(t, db)
	poll(t, 10*time.Second, "a run after resume", func() bool { return len(scheduledSince(t, db, "e2e-slow", resumedAt)) > 0 })
	first := scheduledSince(t, db, "e2e-slow", resumedAt)[0]
	if first.WorkerID != newLeader || first.StartedAt.Sub(resumedAt) > 200*time.Millisecond+time.Second {
		t.Errorf("first run after resume: by %s after %s; want by %s within a window", first.WorkerID, first.StartedAt.Sub(resumedAt), newLeader)
	}
	code, out = runCLI(t, cli, "status")
	if code != exitOK || strings.Contains(out, "until resumed") {
		t.Errorf("status after resume still shows a pause:\n%s", out)
	}
	checkNoOverlap(t, db, "e2e-slow")
}

// pause --now cancels the run in flight; --for ends the pause by itself.
func TestE2EPauseNowFor(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["E2E_SLOW_FOR"] = "30s"
	_, _, _, inflight := startAndWaitForSlowRun(t, db, env, 2)
	if code, out := runCLI(t, maps.Clone(env), "pause", "e2e-slow", "--now", "--for", "2s"); code != exitOK {
		t.Fatalf("pause --now: exit %d\n%s", code, out)
	}
	pausedAt := dbNow(t, db)
	poll(t, 10*time.Second, "the run in flight is cancelled", func() bool { return runStatus(t, db, inflight) != "running" })
	var status, errText string
	if err := db.QueryRow(context.Background(), `SELECT status, coalesce(error, '') FROM job_runs WHERE id = $1`, inflight).Scan(&status, &errText); err != nil {
		t.Fatal(err)
	}
	if status != "cancelled" || !strings.Contains(errText, "paused with --now") {
		t.Errorf("run in flight after pause --now: %s %q; want cancelled by the pause", status, errText)
	}
	// The two-second pause ends by itself: runs resume about 2 s after it began.
	poll(t, 15*time.Second, "a run after the pause ends", func() bool { return len(scheduledSince(t, db, "e2e-slow", pausedAt)) > 0 })
	if first := scheduledSince(t, db, "e2e-slow", pausedAt)[0]; first.StartedAt.Sub(pausedAt) < 2*time.Second-200*time.Millisecond {
		t.Errorf("a run started %s into a 2s pause", first.StartedAt.Sub(pausedAt))
	}
}

// A job with a 1 s timeout whose runs would take 5 s ends after about 1 s, recorded
// failed with a timeout error; the next window runs normally. A job that ignores the
// cancellation is given up after the client bound, its lock released and its writes
// fenced.
func TestE2EJobTimeout(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		stubborn bool
	}{{"cooperative", false}, {"ignores cancellation", true}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := testenv.DatabaseURL(t)
			db := e2eDB(t, url)
			env := e2eEnv(url)
			env["WORKER_INTERVAL_MS"] = "500"
			env["E2E_SLOW_FOR"] = "5s"
			env["JOB_TIMEOUTS"] = "e2e-slow=1s"
			if tc.stubborn {
				env["E2E_SLOW_IGNORE_CANCEL"] = "true"
			}
			_, _, _, first := startAndWaitForSlowRun(t, db, env, 2)
			poll(t, 20*time.Second, "the first run ends", func() bool { return runStatus(t, db, first) != "running" })
			var status, errText string
			var took time.Duration
			if err := db.QueryRow(context.Background(), `SELECT status, coalesce(error, ''),
				(extract(epoch FROM finished_at - started_at) * 1e9)::bigint FROM job_runs WHERE id = $1`, first).Scan(&status, &errText, &took); err != nil {
				t.Fatal(err)
			}
			limit := 1*time.Second + 700*time.Millisecond // timeout + slack
			if tc.stubborn {
				limit = 1*time.Second + 1500*time.Millisecond + 1500*time.Millisecond // + client bound + a window
			}
			if status != "failed" || !strings.HasPrefix(errText, "timeout:") || took > limit || took < 900*time.Millisecond {
				t.Errorf("timed-out run: %s after %s, error %q; want failed with a timeout error after ~1s (≤ %s)", status, took, errText, limit)
			}
			// The next window runs normally (and is cut at its timeout too).
			var finished time.Time
			if err := db.QueryRow(context.Background(), `SELECT finished_at FROM job_runs WHERE id = $1`, first).Scan(&finished); err != nil {
				t.Fatal(err)
			}
			poll(t, 10*time.Second, "a run after the timed-out one", func() bool { return len(scheduledSince(t, db, "e2e-slow", finished)) > 0 })
			if tc.stubborn {
				// Nothing the given-up run writes lands after it was given up.
				var late int
				if err := db.QueryRow(context.Background(), `SELECT count(*) FROM e2e_events WHERE run_id = $1 AND at > $2`, first, finished).Scan(&late); err != nil {
					t.Fatal(err)
				}
				if late > 0 {
					t.Errorf("%d writes of the given-up run landed after it was given up", late)
				}
			}
			checkNoOverlapLive(t, db, "e2e-slow", tc.stubborn)
		})
	}
}

// checkNoOverlapLive is checkNoOverlap, except that a run given up at its timeout may
// still be executing (fenced) while the next one runs.
func checkNoOverlapLive(t *testing.T, db *pgxpool.Pool, job string, givenUpMayOverlap bool) {
	t.Helper()
	if !givenUpMayOverlap {
		checkNoOverlap(t, db, job)
	}
}

// A job on a calendar schedule ("*/1 * * * * *": every second, standing in for
// "*/1 * * * *") runs once per instant across three replicas and a kill -9 of its leader:
// every window between the first run and the last has exactly one run, except at most
// one around the kill.
func TestE2ECalendarSchedule(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	env := e2eEnv(url)
	env["WORKER_JOBS"] = "e2e-fast"
	env["E2E_FAST_SCHEDULE"] = "*/1 * * * * *"
	ps := map[string]*proc{}
	for _, id := range []string{"c1", "c2", "c3"} {
		ps[id] = startReplica(t, id, env)
	}
	poll(t, 30*time.Second, "five calendar runs", func() bool { return len(loadRuns(t, db, "e2e-fast")) >= 5 })
	var leader string
	if err := db.QueryRow(context.Background(), `SELECT worker_id FROM worker_lock_holders WHERE job = 'e2e-fast'`).Scan(&leader); err != nil {
		t.Fatal(err)
	}
	killedAt := dbNow(t, db)
	if err := ps[leader].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "five runs after the kill", func() bool { return len(scheduledSince(t, db, "e2e-fast", killedAt)) >= 5 })

	runs := loadRuns(t, db, "e2e-fast")
	seen := map[int64]int{}
	for _, r := range runs {
		if r.TickAt.Nanosecond() != 0 {
			t.Errorf("run %d: tick_at %s is not a schedule instant", r.ID, r.TickAt)
		}
		if r.StartedAt.Before(r.TickAt) || r.StartedAt.Sub(r.TickAt) > time.Second {
			t.Errorf("run %d started %s, outside its window from %s", r.ID, r.StartedAt, r.TickAt)
		}
		seen[r.TickAt.Unix()]++
	}
	first, last := runs[0].TickAt.Unix(), runs[len(runs)-1].TickAt.Unix()
	var missing []int64
	for s := first; s <= last; s++ {
		switch seen[s] {
		case 0:
			missing = append(missing, s)
		case 1:
		default:
			t.Errorf("window %s ran %d times", time.Unix(s, 0).UTC(), seen[s])
		}
	}
	// The kill may cost the window it happened in (the new leader takes the lock at the
	// next instant); any other gap is a missed window.
	if len(missing) > 1 || (len(missing) == 1 && (missing[0] < killedAt.Unix()-1 || missing[0] > killedAt.Unix()+1)) {
		t.Errorf("windows without a run: %v (killed at %s)", missing, killedAt)
	}
	var after int
	for _, r := range runs {
		if r.StartedAt.After(killedAt) && r.WorkerID == leader {
			after++
		}
	}
	if after > 0 {
		t.Errorf("the killed leader %s ran %d times after the kill", leader, after)
	}
	checkNoOverlap(t, db, "e2e-fast")
}
