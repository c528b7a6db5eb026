package devservers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// VersitygwOptions configures StartVersitygw.
type VersitygwOptions struct {
	// Bin is the versitygw binary (required; `make tools` builds .bin/versitygw).
	Bin string
	// Parent is where the server's temporary directory is created ("" = os.TempDir()).
	Parent string
	// Pattern names the temporary directory, as for os.MkdirTemp ("" = "bg-s3-").
	Pattern string
	// AccessKey and SecretKey are the root credentials; random when empty.
	AccessKey, SecretKey string
	// Region is the signing region the server accepts (default "auto", what R2 wants).
	Region string
	// Verbose keeps versitygw's per-request log lines (in LogFile).
	Verbose bool
}

// Versitygw is a local S3-compatible server: versitygw's posix backend serving DataDir,
// where each subdirectory is a bucket and each file below it an object.
type Versitygw struct {
	Endpoint  string // http://127.0.0.1:PORT; address it path-style
	Region    string
	AccessKey string
	SecretKey string
	Dir       string // temporary root: data/, versitygw.log
	DataDir   string
	LogFile   string

	dir  *Dir
	proc *child
}

// StartVersitygw starts versitygw on a free port of 127.0.0.1 in a new temporary directory
// and returns once it answers HTTP.
func StartVersitygw(ctx context.Context, opts VersitygwOptions) (_ *Versitygw, err error) {
	if opts.Bin == "" {
		return nil, errors.New("versitygw binary not set")
	}
	if _, err := os.Stat(opts.Bin); err != nil {
		return nil, fmt.Errorf("versitygw binary: %w", err)
	}
	if opts.Bin, err = filepath.Abs(opts.Bin); err != nil { // it runs in its own directory
		return nil, err
	}
	pattern := opts.Pattern
	if pattern == "" {
		pattern = "bg-s3-"
	}
	d, err := TempDir(opts.Parent, pattern)
	if err != nil {
		return nil, err
	}
	v := &Versitygw{
		Region:    opts.Region,
		AccessKey: opts.AccessKey,
		SecretKey: opts.SecretKey,
		Dir:       d.Path,
		DataDir:   filepath.Join(d.Path, "data"),
		LogFile:   filepath.Join(d.Path, "versitygw.log"),
		dir:       d,
	}
	defer func() {
		if err != nil {
			v.Stop()
		}
	}()
	if v.Region == "" {
		v.Region = "auto"
	}
	if v.AccessKey == "" {
		v.AccessKey = "local" + randomHex(8)
	}
	if v.SecretKey == "" {
		v.SecretKey = randomHex(20)
	}
	if err := os.Mkdir(v.DataDir, 0o755); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = v.start(ctx, opts)
		if err == nil {
			return v, nil
		}
		if attempt == 3 || !strings.Contains(LogTail(v.LogFile), "address already in use") || ctx.Err() != nil {
			return nil, fmt.Errorf("start versitygw: %w", WithLog(err, v.LogFile))
		}
	}
}

func (v *Versitygw) start(ctx context.Context, opts VersitygwOptions) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"--access", v.AccessKey, "--secret", v.SecretKey, "--region", v.Region,
		"--port", addr, "--keep-alive"}
	if !opts.Verbose {
		args = append(args, "--quiet")
	}
	args = append(args, "posix", v.DataDir)
	cmd := exec.Command(opts.Bin, args...)
	cmd.Dir = v.Dir
	// versitygw reads flags from VGW_* and ROOT_* variables too: keep the caller's out.
	cmd.Env = filteredEnv("VGW_", "ROOT_")
	proc, err := startChild(cmd, v.LogFile)
	if err != nil {
		return err
	}
	v.proc = proc
	v.Endpoint = "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(v.Endpoint)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-proc.exited:
			v.proc = nil
			return fmt.Errorf("versitygw exited before answering (%s)", cmd.ProcessState)
		case <-ctx.Done():
			proc.stop(syscall.SIGKILL, time.Second)
			v.proc = nil
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			proc.stop(syscall.SIGKILL, time.Second)
			v.proc = nil
			return fmt.Errorf("no answer from %s within 30s: %w", v.Endpoint, err)
		}
	}
}

// Client returns an S3 client for this server: path-style, static credentials, checksums
// only where an operation requires them.
func (v *Versitygw) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint:               aws.String(v.Endpoint),
		Region:                     v.Region,
		Credentials:                credentials.NewStaticCredentialsProvider(v.AccessKey, v.SecretKey, ""),
		UsePathStyle:               true,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// CreateBucket creates a bucket through the S3 API.
func (v *Versitygw) CreateBucket(ctx context.Context, name string) error {
	_, err := v.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// BucketDir is the directory that holds bucket's objects. Files written there directly
// are served as objects (without an ETag).
func (v *Versitygw) BucketDir(bucket string) string { return filepath.Join(v.DataDir, bucket) }

// PID is the server's process id (0 when not running).
func (v *Versitygw) PID() int { return v.proc.pid() }

// Stop stops the server and removes its directory. Safe to call twice.
func (v *Versitygw) Stop() error {
	var errs []error
	if v.proc != nil {
		v.proc.stop(syscall.SIGTERM, 5*time.Second)
		v.proc = nil
	}
	if err := v.dir.Remove(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const versitygwPkg = "github.com/versity/versitygw/cmd/versitygw"

// VersitygwBinary finds the versitygw binary to run: $VERSITYGW_BIN when set, else
// <repo>/.bin/versitygw when it is newer than <repo>/tools/go.mod, else it builds that
// from the version pinned in tools/go.mod (go build, run in <repo>/tools; a few minutes
// on a fresh machine). <repo> is RepoRoot. Concurrent callers, in this process or others,
// serialise the build on a lock file, <repo>/.bin/.lock. A build is reported on stderr.
func VersitygwBinary(ctx context.Context) (string, error) {
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%w (set VERSITYGW_BIN)", err)
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
	// Several processes may get here at once: one builds, the others wait and reuse.
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
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, GoTool(), "build", "-o", tmp, versitygwPkg)
	cmd.Dir = filepath.Join(root, "tools") // the tools module pins the version
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := run(cmd); err != nil {
		return "", fmt.Errorf("build versitygw: %w", err)
	}
	if err := os.Rename(tmp, bin); err != nil { // atomic: no one runs a half-written binary
		return "", err
	}
	fmt.Fprintf(os.Stderr, "devservers: built %s in %s\n", bin, time.Since(start).Round(time.Second))
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

// Module is the worker's module path: RepoRoot looks for the go.mod that declares it.
const Module = "github.com/bg-worker/bg-worker"

// RepoRoot is the repository's root: the nearest directory above the working directory
// whose go.mod declares Module (so a nested module such as deploy/ is not mistaken for it).
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.TrimSpace(line) == "module "+Module {
					return dir, nil
				}
			}
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod of %s above %s", Module, wd)
		}
	}
}

// GoTool is the go command: on PATH, else the one of the toolchain this binary was built
// with.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
