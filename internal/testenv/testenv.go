package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	teardownMu sync.Mutex
	teardowns  []func()
)

// onTeardown registers f to run when Main returns, after all tests (last registered runs first).
func onTeardown(f func()) {
	teardownMu.Lock()
	defer teardownMu.Unlock()
	teardowns = append(teardowns, f)
}

// Main wraps testing.M for a package's TestMain: it runs the tests, then stops any servers
// this test binary started and removes their temporary directories.
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	teardownMu.Lock()
	fs := teardowns
	teardowns = nil
	teardownMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	return code
}

// unavailable reports that a server the test needs could not be started: a failure when
// CI=true, a skip otherwise.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("testenv: %v", err)
	}
	t.Skipf("testenv: %v (set CI=true to fail instead of skipping)", err)
}

// logTail returns the last lines of a server log, for error messages.
func logTail(path string) string {
	const maxBytes, maxLines = 8 << 10, 40
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		_, _ = f.Seek(st.Size()-maxBytes, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	s := strings.Join(lines, "\n")
	if strings.TrimSpace(s) == "" {
		return "(log is empty)"
	}
	return s
}

func withLog(err error, path string) error {
	return fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, path, logTail(path))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// nameFor turns a test name into a lowercase identifier fragment of at most max bytes
// using only [a-z0-9] and sep.
func nameFor(t testing.TB, sep byte, max int) string {
	var b strings.Builder
	lastSep := true
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			lastSep = false
		} else if !lastSep {
			b.WriteByte(sep)
			lastSep = true
		}
		if b.Len() >= max {
			break
		}
	}
	return strings.Trim(b.String(), string(sep))
}

// run runs a command and returns its combined output in the error when it fails.
func run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second // a daemon that kept our pipe must not hang us
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// watchdog is a shell process in its own session that waits on a pipe from this process.
// If this process dies without disarming it (the pipe closes without "done"), it runs a
// cleanup command and removes a directory. It survives SIGKILL of the test binary and
// Ctrl-C of its process group.
type watchdog struct {
	w   *os.File
	cmd *exec.Cmd
}

const watchdogScript = `read -r line
[ "$line" = done ] && exit 0
dir=$1; shift
[ $# -gt 0 ] && "$@" >/dev/null 2>&1
rm -rf "$dir"`

// startWatchdog arms a watchdog that, if this process dies first, runs cleanup (if any)
// and then removes dir.
func startWatchdog(dir string, cleanup ...string) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-c", watchdogScript, "testenv-watchdog", dir}, cleanup...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Stdin = r
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	return &watchdog{w: w, cmd: cmd}, nil
}

// disarm tells the watchdog that cleanup was done and waits for it to exit.
func (d *watchdog) disarm() {
	if d == nil || d.w == nil {
		return
	}
	_, _ = d.w.WriteString("done\n")
	d.w.Close()
	d.w = nil
	_ = d.cmd.Wait()
}
