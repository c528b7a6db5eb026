package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/sentryhook/sentrytest"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

// A SENTRY_DSN that does not parse exits 2 naming SENTRY_DSN, and its key never shows.
func TestSentryBadDSNExitsTwo(t *testing.T) {
	t.Parallel()
	const key = "f00dfacef00dfacef00dface"
	for _, dsn := range []string{"ftp://" + key + "@o1.ingest.sentry.io/1", "https://" + key + "@o1.ingest.sentry.io/", "https://" + key + ":zz@host:port/1"} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"run"}, envOf(map[string]string{
			"DATABASE_URL": "postgres://u:p@h/db", "SENTRY_DSN": dsn}), &stdout, &stderr)
		if code := exitCode(err, &stderr); code != exitUsage {
			t.Errorf("%s: exit %d, want 2", dsn, code)
		}
		if !strings.Contains(stderr.String(), "SENTRY_DSN") || strings.Contains(stderr.String()+stdout.String(), key[:8]) {
			t.Errorf("stderr must name SENTRY_DSN without its key:\n%s", stderr.String())
		}
	}
}

// sentryEnv is e2eEnv with a failing e2e-slow (every run is cut at its 1 s timeout) and
// Sentry pointing at srv.
func sentryEnv(url string, srv *sentrytest.Server) map[string]string {
	env := e2eEnv(url)
	env["WORKER_JOBS"] = "e2e-slow"
	env["WORKER_INTERVAL_MS"] = "500"
	env["E2E_SLOW_FOR"] = "5s"
	env["JOB_TIMEOUTS"] = "e2e-slow=1s"
	env["SENTRY_DSN"] = srv.DSN()
	env["SENTRY_ENVIRONMENT"] = "e2e"
	return env
}

// With SENTRY_DSN pointing at a local envelope server, the real scheduler's failing run
// produces one event (repeats are grouped and held back) and a check-in pair
// (in_progress, then error, one check_in_id); once every replica is killed, nothing more
// arrives, so Sentry's missed check-in is what fires.
func TestSentryE2EFailedRunEventAndCheckIns(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	db := e2eDB(t, url)
	srv := sentrytest.New(t)
	p := startReplica(t, "sentry-1", sentryEnv(url, srv))

	if !srv.Wait(30*time.Second, func(s *sentrytest.Server) bool { return len(s.Events()) > 0 && len(s.CheckIns()) >= 2 }) {
		t.Fatalf("no event and check-in pair within 30s: events %d, check-ins %+v\n%s", len(srv.Events()), srv.CheckIns(), tail(p.out.String(), 30))
	}
	// More failed runs of the same kind: still one event.
	poll(t, 30*time.Second, "three failed runs", func() bool {
		n := 0
		for _, r := range loadRuns(t, db, "e2e-slow") {
			if r.Status == "failed" {
				n++
			}
		}
		return n >= 3
	})
	time.Sleep(500 * time.Millisecond) // the last run's reports are on their way
	p.checkRunning(t)
	_ = p.cmd.Process.Kill()
	<-p.exited()
	sent := len(srv.CheckIns())

	evs := srv.Events()
	if len(evs) != 1 {
		t.Fatalf("%d events for one repeating failure, want 1", len(evs))
	}
	e := evs[0]
	if e.Tags["job"] != "e2e-slow" || e.Tags["worker_id"] != "sentry-1" || e.Tags["error_class"] != "timeout" || e.Environment != "e2e" ||
		e.Contexts["run"]["run_id"] == nil || e.Contexts["run"]["tick_at"] == nil {
		t.Errorf("event %s", e.Raw)
	}
	if !strings.HasPrefix(e.Exception.Values[len(e.Exception.Values)-1].Value, "timeout: ") {
		t.Errorf("exception %+v", e.Exception.Values)
	}
	cis := srv.CheckIns()
	if len(cis) < 2 || cis[0].Status != "in_progress" || cis[1].Status != "error" || cis[0].CheckInID != cis[1].CheckInID || cis[0].MonitorSlug != "e2e-slow" {
		t.Fatalf("check-ins %+v, want in_progress then error with one id", cis)
	}
	// One pair a minute at most (the 500ms job checks in for the first run of a minute).
	if len(cis) > 4 {
		t.Errorf("%d check-ins in well under two minutes, want at most two pairs", len(cis))
	}
	if mc := cis[0].MonitorConfig; mc == nil || mc.Schedule.Value != 1 || mc.Schedule.Unit != "minute" || mc.MaxRuntime != 2 || mc.CheckInMargin != 1 {
		t.Errorf("monitor config %+v, want every minute, margin 1 (the 1s timeout), max runtime 2", mc)
	}
	// Every replica is gone: nothing arrives any more.
	time.Sleep(2 * time.Second)
	if n := len(srv.CheckIns()); n != sent {
		t.Errorf("%d check-ins after every replica was killed", n-sent)
	}
	if strings.Contains(p.out.String(), srv.Key) {
		t.Error("the replica logged the DSN's key")
	}
	if errs := srv.Errors(); len(errs) > 0 {
		t.Errorf("envelope server: %v", errs)
	}
}

// `once` reports a failed manual run (flushed before it exits) and sends no check-in: a
// manual run is not the schedule.
func TestSentryE2EOnceReportsWithoutCheckIns(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	e2eDB(t, url)
	srv := sentrytest.New(t)
	env := sentryEnv(url, srv)
	// The job's timeout (JOB_TIMEOUTS e2e-slow=1s) applies to a manual run as well: the
	// 5 s run fails at 1 s, well before once's own --timeout.
	cmd := exec.Command(e2eBinary(t), "once", "e2e-slow", "--timeout", "30s")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "WORKER_ID=sentry-once"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailed || !strings.Contains(string(out), "timeout:") {
		t.Fatalf("once: %v, want exit 1 with the job's timeout\n%s", err, out)
	}
	// Flushed before exit: the event is there already.
	evs := srv.Events()
	if len(evs) != 1 || evs[0].Tags["trigger"] != "manual" || evs[0].Tags["worker_id"] != "sentry-once" || evs[0].Tags["status"] != "failed" {
		t.Fatalf("events %+v, want one for the manual run\n%s", evs, out)
	}
	if n := len(srv.CheckIns()); n != 0 {
		t.Errorf("%d check-ins for a manual run, want none", n)
	}
}
