package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// versitygw is a local S3 server: versitygw's posix backend serving a temp directory.
type versitygw struct {
	endpoint, access, secret string
	dir, dataDir, logFile    string
	cmd                      *exec.Cmd
	exited                   chan struct{}
	wd                       *watchdog
}

const versitygwPkg = "github.com/versity/versitygw/cmd/versitygw"

func startVersitygw() (_ *versitygw, err error) {
	bin, err := versitygwBinary()
	if err != nil {
		return nil, fmt.Errorf("versitygw: %w", err)
	}
	dir, err := os.MkdirTemp("", "testenv-s3-")
	if err != nil {
		return nil, err
	}
	v := &versitygw{
		access:  "testenv" + randomHex(8),
		secret:  randomHex(20),
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "versitygw.log"),
	}
	defer func() {
		if err != nil {
			v.close()
		}
	}()
	if err := os.Mkdir(v.dataDir, 0o755); err != nil {
		return nil, err
	}
	if v.wd, err = startWatchdog(dir); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = v.start(bin)
		if err == nil {
			return v, nil
		}
		// Another process may have taken the port between our probe and the server's bind.
		if attempt == 3 || !strings.Contains(logTail(v.logFile), "address already in use") {
			return nil, fmt.Errorf("start versitygw: %w", withLog(err, v.logFile))
		}
	}
}

func (v *versitygw) start(bin string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logf, err := os.OpenFile(v.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, "--access", v.access, "--secret", v.secret, "--region", "auto",
		"--port", addr, "--keep-alive", "posix", v.dataDir)
	cmd.Dir = v.dir
	// versitygw reads flags from VGW_* and ROOT_* variables too: keep the caller's out.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VGW_") && !strings.HasPrefix(kv, "ROOT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Nothing outlives the test binary, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	v.cmd, v.exited = cmd, exited
	v.endpoint = "http://" + addr
	if err := waitHTTP(v.endpoint, exited, 30*time.Second); err != nil {
		select {
		case <-exited:
			err = fmt.Errorf("%w (%s)", err, cmd.ProcessState)
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		v.cmd = nil
		return err
	}
	return nil
}

// waitHTTP polls url until it answers any HTTP response, the process exits, or timeout.
func waitHTTP(url string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return errors.New("server exited before answering")
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer from %s within %s: %w", url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (v *versitygw) close() {
	if v.cmd != nil {
		_ = v.cmd.Process.Kill()
		<-v.exited
		v.cmd = nil
	}
	_ = os.RemoveAll(v.dir)
	v.wd.disarm()
}

// versitygwBinary finds versitygw: $VERSITYGW_BIN, else <repo>/.bin/versitygw when newer
// than <repo>/tools/go.mod, else it builds that from the version pinned in tools/go.mod.
func versitygwBinary() (string, error) {
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(root, ".bin")
	bin := filepath.Join(binDir, "versitygw")
	modFile := filepath.Join(root, "tools", "go.mod")
	if fresh(bin, modFile) {
		return bin, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", err
	}
	// Several test binaries may get here at once: one builds, the others wait and reuse.
	lock, err := os.OpenFile(filepath.Join(binDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if fresh(bin, modFile) {
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if goroot := os.Getenv("GOROOT"); goroot != "" {
			goBin = filepath.Join(goroot, "bin", "go")
		} else {
			return "", fmt.Errorf("go not on PATH to build %s (or set VERSITYGW_BIN): %w", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp, versitygwPkg)
	cmd.Dir = filepath.Join(root, "tools") // the tools module pins the version
	cmd.Env = append(os.Environ(), "GOWORK=off")
	start := time.Now()
	if err := run(cmd); err != nil {
		return "", fmt.Errorf("build: %w", err)
	}
	if err := os.Rename(tmp, bin); err != nil { // atomic: no one runs a half-written binary
		return "", err
	}
	fmt.Fprintf(os.Stderr, "testenv: built %s in %s\n", bin, time.Since(start).Round(time.Second))
	return bin, nil
}

// fresh reports whether bin is an executable newer than modFile.
func fresh(bin, modFile string) bool {
	b, err := os.Stat(bin)
	if err != nil || !b.Mode().IsRegular() || b.Mode()&0o111 == 0 || b.Size() == 0 {
		return false
	}
	m, err := os.Stat(modFile)
	return err == nil && b.ModTime().After(m.ModTime())
}

// repoRoot walks up from the working directory to the directory holding go.mod and
// tools/go.mod.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if isFile(filepath.Join(dir, "go.mod")) && isFile(filepath.Join(dir, "tools", "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no directory with go.mod and tools/go.mod above %s (set VERSITYGW_BIN)", wd)
		}
		dir = parent
	}
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
