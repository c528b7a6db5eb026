package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/devservers"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

// The demo is exercised as a user runs it: the real bg-demo binary, which builds and runs
// the real bg-worker against a real PostgreSQL and versitygw.

// needTools skips (fails under CI=true) when the demo's servers cannot run here.
func needTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"initdb", "postgres"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" not on PATH")
		}
	}
	if _, err := findVersitygw("", findRepoRoot()); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("demo needs: %s", strings.Join(missing, "; "))
	}
	t.Skipf("demo needs: %s (set CI=true to fail instead)", strings.Join(missing, "; "))
}

// binaries builds bg-demo and bg-worker once for all tests of this package.
func binaries(t *testing.T) (demo, worker string) {
	t.Helper()
	return testenv.Build(t, "./cmd/bg-demo"), testenv.Build(t, "./cmd/bg-worker")
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// demoProc is a running bg-demo with its output collected.
type demoProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  testenv.LogBuffer
	done chan struct{}
	err  error
}

func startDemo(t *testing.T, args ...string) *demoProc {
	t.Helper()
	bin, _ := binaries(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d := &demoProc{t: t, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &d.out, &d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("bg-demo output:\n%s", d.output())
		}
	})
	return d
}

func (d *demoProc) output() string { return d.out.String() }

// waitFor waits until the output matches re (count times).
func (d *demoProc) waitFor(re *regexp.Regexp, count int, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for len(re.FindAllString(d.output(), -1)) < count {
		select {
		case <-d.done:
			d.t.Fatalf("bg-demo exited (%v) before printing %d× %q", d.err, count, re)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("bg-demo did not print %d× %q within %s", count, re, timeout)
		}
	}
}

func (d *demoProc) wait(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("bg-demo still running after %s", timeout)
	}
	if d.err == nil {
		return 0
	}
	if ee, ok := d.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	d.t.Fatalf("bg-demo: %v", d.err)
	return -1
}

var (
	pidRe     = regexp.MustCompile(`pid[= ](\d+)`)
	dirsRe    = regexp.MustCompile(`temporary directories \(removed at the end\): (.*)`)
	startedRe = regexp.MustCompile(`started (replica-\d+) pid=(\d+)`)
)

// assertNothingLeft checks, from outside the demo, that every process it reported is gone
// and its temporary directories too, waiting up to timeout (a killed demo's watchdogs
// need a moment).
func assertNothingLeft(t *testing.T, out string, timeout time.Duration) {
	t.Helper()
	var pids []int
	for _, m := range pidRe.FindAllStringSubmatch(out, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	var dirs []string
	if m := dirsRe.FindStringSubmatch(out); m != nil {
		dirs = strings.Fields(m[1])
	}
	if len(pids) == 0 || len(dirs) == 0 {
		t.Fatalf("the demo reported no pids (%v) or no directories (%v)", pids, dirs)
	}
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, pid := range pids {
			if devservers.Alive(pid) {
				left = append(left, "pid "+strconv.Itoa(pid))
			}
		}
		for _, dir := range dirs {
			left = append(left, devservers.ProcessesUsing(dir)...)
			if _, err := os.Stat(dir); err == nil {
				left = append(left, "directory "+dir)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after the demo: %s", strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDemoBounded runs the demo as CI does: three replicas for a fixed time, the leader
// killed -9 midway and restarted at once. It must exit 0, which means every replica
// started, runs happened, every tick window of every job ran exactly once (also those
// inside which the restarted replica took a lock: the window claim), no two runs of a job
// overlapped, a new leader took over, and nothing was left running.
func TestDemoBounded(t *testing.T) {
	needTools(t)
	t.Parallel()
	start := time.Now()
	d := startDemo(t, "--duration", "16s", "--kill-after", "7s", "--interval", "1s", "--uploads", "60",
		"--replicas", "3", "--status-every", "4s")
	if code := d.wait(2 * time.Minute); code != 0 {
		t.Fatalf("bg-demo exited %d, want 0", code)
	}
	out := d.output()
	started := map[string]bool{}
	for _, m := range startedRe.FindAllStringSubmatch(out, -1) {
		started[m[1]] = true
	}
	if len(started) != 3 {
		t.Errorf("started replicas %v, want replica-1..3", started)
	}
	for _, want := range []string{
		"built bg-worker",
		"SELECT * FROM bg_worker.worker_lock_holders;",
		"KILL -9 replica-",
		"TAKEOVER: replica-",
		"FIRST RUN after the kill",
		"RESTART replica-",
		"run more than once: 0; with no run and no skip: 0",
		"pairs of runs of one job that overlapped in time: 0",
		"nothing left running",
		"OK: every replica started",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, r := range []string{"replica-1", "replica-2", "replica-3"} {
		if !strings.Contains(out, r+" ready in") {
			t.Errorf("%s never reported ready", r)
		}
	}
	// The window check above is only worth something if the restart really took a lock
	// inside a window the killed leader had claimed.
	if m := regexp.MustCompile(`claim: (replica-\d), restarted after the kill, took the lock of (.*) inside a window`).FindStringSubmatch(out); m == nil {
		t.Errorf("the restarted replica took no lock inside a claimed window: the window claim was not exercised")
	} else {
		t.Logf("%s restarted took %s inside claimed windows", m[1], m[2])
	}
	if m := regexp.MustCompile(`tick windows from each job's first to its last: (\d+)`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Errorf("no tick windows checked: %v", m)
	}
	assertNothingLeft(t, out, 5*time.Second)
	t.Logf("bounded demo took %s", time.Since(start).Round(time.Millisecond))
}

// TestDemoAppTable runs the bounded demo against an application's own table, Prisma's
// "Upload" (text ids, an enum status, camelCase columns): created before migrate, mapped
// with UPLOADS_*, seeded with the application's columns. It must exit 0 with the usual
// checks, the seeded rows of "Upload" must have become UPLOADED and FAILED as their
// objects dictate, and the worker must have added nothing outside its schema.
func TestDemoAppTable(t *testing.T) {
	needTools(t)
	t.Parallel()
	_, worker := binaries(t)
	d := startDemo(t, "--worker-bin", worker, "--app-table", "prisma", "--duration", "12s", "--interval", "1s",
		"--uploads", "40", "--replicas", "2", "--status-every", "4s")
	if code := d.wait(2 * time.Minute); code != 0 {
		t.Fatalf("bg-demo exited %d, want 0", code)
	}
	out := d.output()
	for _, want := range []string{
		`application table (--app-table prisma): Prisma's "Upload"`,
		"UPLOADS_CREATED_AT_COLUMN=createdAt UPLOADS_KEY_COLUMN=objectKey UPLOADS_SIZE_COLUMN=sizeBytes UPLOADS_TABLE=Upload UPLOADS_UPDATED_AT_COLUMN=updatedAt",
		`seeded 40 upload rows into public."Upload"`,
		`uploads (public."Upload"): `,
		"outside bg_worker: the application's",
		"nothing added by migrate or the replicas",
		"run more than once: 0; with no run and no skip: 0",
		"pairs of runs of one job that overlapped in time: 0",
		"OK: every replica started",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "PROBLEMS:") {
		t.Errorf("the demo reported problems")
	}
	// The final counts, in the enum's values, read from "Upload" itself.
	m := regexp.MustCompile(`uploads \(public\."Upload"\) now: (\d+) FAILED · (?:(\d+) PENDING · )?(\d+) UPLOADED`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" || m[3] == "0" {
		t.Errorf(`no final counts of "Upload" with both FAILED and UPLOADED rows: %v`, m)
	}
	// Every seeded row as its object dictates: present ones UPLOADED, expired ones FAILED.
	exp := regexp.MustCompile(`seeded rows in public\."Upload" as expected: (\d+)/(\d+) present → UPLOADED, (\d+)/(\d+) expired → FAILED, (\d+)/(\d+) missing still PENDING`).FindStringSubmatch(out)
	if exp == nil || exp[1] != exp[2] || exp[3] != exp[4] || exp[5] != exp[6] || exp[2] == "0" || exp[4] == "0" {
		t.Errorf("seeded rows not as expected: %v", exp)
	}
	assertNothingLeft(t, out, 5*time.Second)
}

// TestDemoInterrupt is the interactive path: Ctrl-C (SIGINT) stops everything and exits 0.
func TestDemoInterrupt(t *testing.T) {
	needTools(t)
	t.Parallel()
	_, worker := binaries(t)
	d := startDemo(t, "--worker-bin", worker, "--replicas", "2", "--uploads", "20", "--interval", "1s", "--status-every", "2s")
	d.waitFor(regexp.MustCompile(`replica-\d ready in`), 2, time.Minute)
	d.waitFor(regexp.MustCompile(`SELECT \* FROM bg_worker.worker_lock_holders;`), 1, 30*time.Second)
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(time.Minute); code != 0 {
		t.Fatalf("bg-demo exited %d after SIGINT, want 0", code)
	}
	out := d.output()
	for _, want := range []string{"interrupted: stopping", "summary: runs by job and replica", "nothing left running"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	assertNothingLeft(t, out, 5*time.Second)
}

// TestDemoKilled: even kill -9 of the demo itself leaves nothing running (parent-death
// signals) and no temporary directory (watchdogs).
func TestDemoKilled(t *testing.T) {
	needTools(t)
	t.Parallel()
	_, worker := binaries(t)
	d := startDemo(t, "--worker-bin", worker, "--replicas", "2", "--uploads", "10")
	d.waitFor(regexp.MustCompile(`replica-\d ready in`), 2, time.Minute)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	d.wait(10 * time.Second)
	assertNothingLeft(t, d.output(), 15*time.Second)
}

// TestFlags: bad flags are usage errors (exit 2), one line per flag.
func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"--replicas", "0", "--interval", "10ms", "--duration", "5s", "--kill-after", "9s",
		"--app-table", "django"}, nil, io.Discard, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	for _, want := range []string{"--replicas", "--interval", "--kill-after", "--app-table: must be one of prisma, snake-uuid, existing-uploads"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %s:\n%s", want, stderr.String())
		}
	}
	if code := run(context.Background(), []string{"--help"}, nil, io.Discard, io.Discard); code != 0 {
		t.Errorf("--help: exit %d, want 0", code)
	}
}
