package devservers

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Dir is a temporary directory that is removed by Remove, or by a watchdog when the
// process dies first.
type Dir struct {
	Path string
	wd   *watchdog
	once sync.Once
}

// TempDir creates a temporary directory (os.MkdirTemp(parent, pattern)) guarded by a
// watchdog: if this process dies before Remove, the directory is removed anyway.
func TempDir(parent, pattern string) (*Dir, error) {
	p, err := os.MkdirTemp(parent, pattern)
	if err != nil {
		return nil, err
	}
	if p, err = filepath.Abs(p); err != nil {
		return nil, err
	}
	wd, err := startWatchdog(p)
	if err != nil {
		_ = os.RemoveAll(p)
		return nil, err
	}
	return &Dir{Path: p, wd: wd}, nil
}

// Remove removes the directory and disarms its watchdog. Safe to call more than once.
func (d *Dir) Remove() error {
	if d == nil {
		return nil
	}
	var err error
	d.once.Do(func() {
		err = os.RemoveAll(d.Path)
		d.wd.disarm()
	})
	return err
}

// watchdog is a shell process in its own session that waits on a pipe from this process.
// If this process dies without disarming it (the pipe closes without "done"), it waits a
// moment for the killed servers to go and removes a directory. It survives SIGKILL of this
// process and Ctrl-C of its process group.
type watchdog struct {
	mu  sync.Mutex
	w   *os.File
	cmd *exec.Cmd
}

const watchdogScript = `read -r line
[ "$line" = done ] && exit 0
sleep 1
rm -rf "$1"`

func startWatchdog(dir string) (*watchdog, error) {
	r, w, err := os.Pipe() // close-on-exec: no other child inherits the write end
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "devservers-watchdog", dir)
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

// disarm tells the watchdog the cleanup was done and waits for it to exit.
func (d *watchdog) disarm() {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.w == nil {
		return
	}
	_, _ = d.w.WriteString("done\n")
	d.w.Close()
	d.w = nil
	_ = d.cmd.Wait()
}

// PID is the watchdog's process id (0 once disarmed).
func (d *watchdog) PID() int {
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.w == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// child is a server process started by this package.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startChild starts cmd as a child in its own process group that gets SIGKILL when this
// process dies, with stdout and stderr appended to logFile.
func startChild(cmd *exec.Cmd, logFile string) (*child, error) {
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout = logf
	cmd.Stderr = logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// stop sends sig and waits up to grace for the child to exit, then kills its whole
// process group. It reports whether the child exited on sig alone.
func (c *child) stop(sig syscall.Signal, grace time.Duration) bool {
	if c == nil {
		return true
	}
	select {
	case <-c.exited:
		return true
	default:
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
		return true
	case <-time.After(grace):
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.exited
	return false
}

func (c *child) pid() int {
	if c == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// LogTail returns the last lines of a log file, for error messages.
func LogTail(path string) string {
	const maxBytes, maxLines = 8 << 10, 30
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

// WithLog appends the tail of a log file (LogTail) to err.
func WithLog(err error, path string) error {
	return fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, path, LogTail(path))
}

// run runs a short command and puts its output in the error when it fails.
func run(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Alive reports whether a process with this pid exists and is not a zombie.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) STATE ...: comm may contain spaces and parentheses; the state follows the last ")".
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// ProcessesUsing lists live processes (other than this one) whose command line or working
// directory mentions dir: what a leak check looks for after a stack stopped.
func ProcessesUsing(dir string) []string {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd")
		args := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")
		if (strings.Contains(args, dir) || cwd == dir || strings.HasPrefix(cwd, dir+"/")) && Alive(pid) {
			out = append(out, fmt.Sprintf("pid %d: %s", pid, args))
		}
	}
	return out
}

// filteredEnv returns the environment without variables whose names start with any prefix.
func filteredEnv(prefixes ...string) []string {
	var env []string
outer:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue outer
			}
		}
		env = append(env, kv)
	}
	return env
}
