package devservers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// Parent is where the server's temporary directory is created ("" = os.TempDir()).
	Parent string
	// Pattern names the temporary directory, as for os.MkdirTemp ("" = "bg-pg-").
	Pattern string
	// Settings are extra server settings (-c name=value), e.g. max_connections.
	Settings map[string]string
}

// Postgres is a throwaway PostgreSQL server on 127.0.0.1 with trust authentication for
// the user "postgres". Its methods are safe for concurrent use.
type Postgres struct {
	Port    int
	Dir     string // temporary root: data/, sock/, postgres.log
	LogFile string

	dir     *Dir
	dataDir string
	sockDir string
	cred    *syscall.Credential // postgres user's ids when running as root
	opts    PostgresOptions

	mu      sync.Mutex // serialises Start, Shutdown, Restart and Stop
	proc    *child     // the running postmaster, nil when stopped
	removed bool       // Stop was called
}

// StartPostgres initdbs a fresh cluster in a new temporary directory and starts the
// postmaster as a child of this process (see the package documentation). It returns once
// the server accepts connections.
func StartPostgres(ctx context.Context, opts PostgresOptions) (_ *Postgres, err error) {
	for _, tool := range []string{"initdb", "postgres"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("PostgreSQL binaries not found on PATH (need initdb and postgres): %w", err)
		}
	}
	pattern := opts.Pattern
	if pattern == "" {
		pattern = "bg-pg-"
	}
	d, err := TempDir(opts.Parent, pattern)
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		Dir:     d.Path,
		LogFile: filepath.Join(d.Path, "postgres.log"),
		dir:     d,
		dataDir: filepath.Join(d.Path, "data"),
		sockDir: filepath.Join(d.Path, "sock"),
		opts:    opts,
	}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	if err := os.Mkdir(p.sockDir, 0o700); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as the postgres user.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		for _, path := range []string{p.Dir, p.sockDir} {
			if err := os.Chown(path, uid, gid); err != nil {
				return nil, err
			}
		}
	}
	initdb := p.command(ctx, "initdb", "-D", p.dataDir, "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	if err := run(initdb); err != nil {
		return nil, fmt.Errorf("initdb: %w", err)
	}
	for attempt := 1; ; attempt++ {
		if p.Port, err = FreePort(); err != nil {
			return nil, err
		}
		err = p.start(ctx)
		if err == nil {
			return p, nil
		}
		// Another process may have taken the port between the probe and the bind.
		if attempt == 3 || !strings.Contains(LogTail(p.LogFile), "already in use") || ctx.Err() != nil {
			return nil, fmt.Errorf("start postgres: %w", WithLog(err, p.LogFile))
		}
	}
}

func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = p.Dir // the postgres user may not be allowed into the caller's directory
	cmd.Env = filteredEnv("PG")
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

func (p *Postgres) start(ctx context.Context) error {
	args := []string{"-D", p.dataDir, "-p", strconv.Itoa(p.Port), "-k", p.sockDir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200"}
	for k, v := range p.opts.Settings {
		args = append(args, "-c", k+"="+v)
	}
	cmd := exec.Command("postgres", args...) // not CommandContext: Stop ends it in order
	cmd.Dir = p.Dir
	cmd.Env = filteredEnv("PG")
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	proc, err := startChild(cmd, p.LogFile)
	if err != nil {
		return err
	}
	p.proc = proc
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, p.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-proc.exited:
			p.proc = nil
			return fmt.Errorf("postgres exited before accepting connections (%s)", cmd.ProcessState)
		case <-ctx.Done():
			p.proc.stop(syscall.SIGQUIT, 5*time.Second)
			p.proc = nil
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.proc.stop(syscall.SIGQUIT, 5*time.Second)
			p.proc = nil
			return fmt.Errorf("postgres did not accept connections within 60s: %w", err)
		}
	}
}

// URL is the URL of database dbname as the superuser postgres.
func (p *Postgres) URL(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, url.PathEscape(dbname))
}

// CreateDatabase creates database name (the name must be a plain identifier).
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// PID is the postmaster's process id (0 when not running).
func (p *Postgres) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc.pid()
}

// Exited is closed when the current postmaster exits (already closed when not running).
func (p *Postgres) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.proc.exited
}

// Running reports whether the postmaster is running (started, not shut down, not stopped).
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil && !p.removed
}

// Shutdown stops the server (fast shutdown: sessions are disconnected) and keeps its data
// directory and port, for Start. It waits for the postmaster, killing its process group
// after 30s. Shutting down a shut-down server does nothing; after Stop it is an error.
func (p *Postgres) Shutdown() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shutdown()
}

// Start starts a server stopped with Shutdown again, on the same port, and returns once it
// accepts connections. Starting a running server does nothing; after Stop it is an error.
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restart(ctx, false)
}

// Restart shuts the server down (as Shutdown) and starts it again on the same port.
func (p *Postgres) Restart(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restart(ctx, true)
}

var errRemoved = errors.New("postgres: server already stopped and removed")

func (p *Postgres) shutdown() error {
	if p.removed {
		return errRemoved
	}
	if err := p.halt(); err != nil {
		return WithLog(err, p.LogFile)
	}
	return nil
}

func (p *Postgres) restart(ctx context.Context, shutdownFirst bool) error {
	if shutdownFirst {
		if err := p.shutdown(); err != nil {
			return err
		}
	} else if p.removed {
		return errRemoved
	}
	if p.proc != nil {
		return nil
	}
	if err := p.start(ctx); err != nil {
		return fmt.Errorf("start postgres: %w", WithLog(err, p.LogFile))
	}
	return nil
}

// halt stops the postmaster if it runs: SIGINT (fast shutdown), then SIGKILL to its
// process group after 30s.
func (p *Postgres) halt() error {
	if p.proc == nil {
		return nil
	}
	ok := p.proc.stop(syscall.SIGINT, 30*time.Second)
	p.proc = nil
	if !ok {
		return errors.New("postgres did not shut down within 30s; killed")
	}
	return nil
}

// Stop shuts the server down (fast shutdown: sessions are disconnected), waits for it,
// killing its process group after 30s, and removes its directory. Safe to call twice.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removed = true
	return errors.Join(p.halt(), p.dir.Remove())
}
