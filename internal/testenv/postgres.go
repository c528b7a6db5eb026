package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/migrations"
)

// PostgresServer is a PostgreSQL server: one started by testenv (local), or the one named
// by TEST_DATABASE_URL (external; the shared server only). NewPostgresServer always starts
// a local one.
type PostgresServer struct {
	ext *url.URL // external server; the local fields below are unused then

	dir        string // temp root, owned by postgres when running as root
	dataDir    string
	sockDir    string
	logFile    string
	port       int
	asPostgres bool // run initdb/pg_ctl via runuser -u postgres
	wd         *watchdog

	stateMu sync.Mutex // serialises Start/Stop/Restart/close
	running bool
	closed  bool

	cloneMu sync.Mutex // CREATE DATABASE ... TEMPLATE fails while another session uses the template
	tplOnce sync.Once
	tpl     string
	tplErr  error
}

var shared struct {
	once sync.Once
	srv  *PostgresServer
	err  error
}

// sharedPostgres returns this test binary's shared server, starting it on first use.
func sharedPostgres() (*PostgresServer, error) {
	shared.once.Do(func() {
		if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
			shared.srv, shared.err = externalPostgres(u)
		} else {
			shared.srv, shared.err = startPostgres()
		}
		if shared.err == nil {
			onTeardown(shared.srv.close)
		}
	})
	return shared.srv, shared.err
}

// DatabaseURL returns the URL of a fresh database for this test with every migration
// applied. The database is a copy of a template migrated once per server, and is dropped
// in t.Cleanup.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	s, err := sharedPostgres()
	if err != nil {
		unavailable(t, err)
	}
	return s.CreateDatabase(t, true)
}

// EmptyDatabaseURL is DatabaseURL without migrations: the database is a copy of template0.
func EmptyDatabaseURL(t testing.TB) string {
	t.Helper()
	s, err := sharedPostgres()
	if err != nil {
		unavailable(t, err)
	}
	return s.CreateDatabase(t, false)
}

// NewPostgresServer starts a PostgreSQL server just for this test, for tests that stop,
// start or restart it. It is stopped and its directory removed in t.Cleanup.
func NewPostgresServer(t testing.TB) *PostgresServer {
	t.Helper()
	s, err := startPostgres()
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(s.close)
	return s
}

// URL returns the URL of database dbname on this server, e.g.
// postgres://postgres@127.0.0.1:PORT/dbname?sslmode=disable.
func (s *PostgresServer) URL(dbname string) string {
	if s.ext != nil {
		u := *s.ext
		u.Path = "/" + dbname
		u.RawPath = ""
		return u.String()
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, url.PathEscape(dbname))
}

// adminURL is where testenv connects to create and drop databases.
func (s *PostgresServer) adminURL() string {
	if s.ext != nil {
		return s.ext.String()
	}
	return s.URL("postgres")
}

// CreateDatabase creates a fresh database on this server, with every migration applied
// when migrated is true, and returns its URL. It is dropped in t.Cleanup.
func (s *PostgresServer) CreateDatabase(t testing.TB, migrated bool) string {
	t.Helper()
	name := "t_" + nameFor(t, '_', 40) + "_" + randomHex(4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.createDatabase(ctx, name, migrated); err != nil {
		t.Fatalf("testenv: %v", s.withLog(err))
	}
	t.Cleanup(func() {
		if err := s.dropDatabase(name); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	return s.URL(name)
}

// Restart restarts the server (pg_ctl restart -m fast) on the same port.
func (s *PostgresServer) Restart(t testing.TB) {
	t.Helper()
	s.control(t, "restart")
}

// Stop stops the server (pg_ctl stop -m fast). Start starts it again on the same port.
func (s *PostgresServer) Stop(t testing.TB) {
	t.Helper()
	s.control(t, "stop")
}

// Start starts a server stopped with Stop, on the same port.
func (s *PostgresServer) Start(t testing.TB) {
	t.Helper()
	s.control(t, "start")
}

func (s *PostgresServer) control(t testing.TB, action string) {
	t.Helper()
	if s.ext != nil {
		t.Fatalf("testenv: cannot %s the external server TEST_DATABASE_URL", action)
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.closed {
		t.Fatalf("testenv: %s: server already removed", action)
	}
	var err error
	switch action {
	case "stop":
		err = run(s.pgCmd("pg_ctl", "stop", "-D", s.dataDir, "-m", "fast", "-w", "-t", "60"))
		if err == nil {
			s.running = false
		}
	case "start":
		err = s.start()
	case "restart":
		err = run(s.pgCmd("pg_ctl", "restart", "-D", s.dataDir, "-l", s.logFile, "-m", "fast",
			"-w", "-t", "60", "-o", s.options()))
		s.running = err == nil
	}
	if err != nil {
		t.Fatalf("testenv: pg_ctl %s: %v", action, withLog(err, s.logFile))
	}
}

func (s *PostgresServer) withLog(err error) error {
	if s.ext != nil {
		return err
	}
	return withLog(err, s.logFile)
}

// externalPostgres uses the server named by TEST_DATABASE_URL.
func externalPostgres(raw string) (*PostgresServer, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("TEST_DATABASE_URL must be a postgres:// URL")
	}
	s := &PostgresServer{ext: u}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.adminURL())
	if err != nil {
		return nil, fmt.Errorf("TEST_DATABASE_URL: %w", err)
	}
	conn.Close(ctx)
	return s, nil
}

// startPostgres initdbs and starts a local server in a new temp directory.
func startPostgres() (_ *PostgresServer, err error) {
	for _, tool := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("PostgreSQL binaries not found: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "testenv-pg-")
	if err != nil {
		return nil, err
	}
	s := &PostgresServer{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		sockDir: filepath.Join(dir, "sock"),
		logFile: filepath.Join(dir, "postgres.log"),
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := os.Mkdir(s.sockDir, 0o700); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		if _, err := exec.LookPath("runuser"); err != nil {
			return nil, fmt.Errorf("running as root needs runuser: %w", err)
		}
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, s.sockDir} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, err
			}
		}
		s.asPostgres = true
	}
	stop := s.pgCmd("pg_ctl", "stop", "-D", s.dataDir, "-m", "immediate", "-w", "-t", "30")
	if s.wd, err = startWatchdog(dir, stop.Args...); err != nil {
		return nil, err
	}
	if err := run(s.pgCmd("initdb", "-D", s.dataDir, "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8")); err != nil {
		return nil, fmt.Errorf("initdb: %w", err)
	}
	for attempt := 1; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		err = s.start()
		if err == nil {
			return s, nil
		}
		// Another process may have taken the port between our probe and the server's bind.
		if attempt == 3 || !strings.Contains(logTail(s.logFile), "already in use") {
			return nil, fmt.Errorf("start postgres: %w", withLog(err, s.logFile))
		}
	}
}

func (s *PostgresServer) options() string {
	return fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"+
		" -c full_page_writes=off -c max_connections=300", s.port, s.sockDir)
}

// start runs pg_ctl start and waits (-w) until the server accepts connections.
func (s *PostgresServer) start() error {
	err := run(s.pgCmd("pg_ctl", "start", "-D", s.dataDir, "-l", s.logFile, "-w", "-t", "60", "-o", s.options()))
	if err != nil {
		return err
	}
	s.running = true
	return nil
}

// close stops the server at once (pg_ctl stop -m immediate) and removes its directory.
func (s *PostgresServer) close() {
	if s.ext != nil {
		s.dropTemplate()
		return
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.running {
		if err := run(s.pgCmd("pg_ctl", "stop", "-D", s.dataDir, "-m", "immediate", "-w", "-t", "30")); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop postgres: %v\n", err)
		}
		s.running = false
	}
	_ = os.RemoveAll(s.dir)
	s.wd.disarm()
}

func (s *PostgresServer) isRunning() bool {
	if s.ext != nil {
		return true
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.running && !s.closed
}

// pgCmd builds a PostgreSQL tool command, run as the postgres user when we are root.
func (s *PostgresServer) pgCmd(name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if s.asPostgres {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	cmd.Dir = s.dir // the postgres user may not be able to enter the test's working directory
	return cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// template returns the name of this server's migrated template database, creating it on
// first use.
func (s *PostgresServer) template(ctx context.Context) (string, error) {
	s.tplOnce.Do(func() {
		name := "testenv_tpl_" + randomHex(6)
		if err := s.clone(ctx, name, "template0"); err != nil {
			s.tplErr = err
			return
		}
		s.tpl = name
		conn, err := pgx.Connect(ctx, s.URL(name))
		if err != nil {
			s.tplErr = fmt.Errorf("connect to template %s: %w", name, err)
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if _, err := migrations.Apply(ctx, conn); err != nil {
			s.tplErr = fmt.Errorf("migrate template %s: %w", name, err)
		}
	})
	return s.tpl, s.tplErr
}

func (s *PostgresServer) createDatabase(ctx context.Context, name string, migrated bool) error {
	from := "template0" // pristine, and nobody ever connects to it
	if migrated {
		tpl, err := s.template(ctx)
		if err != nil {
			return err
		}
		from = tpl
	}
	return s.clone(ctx, name, from)
}

// clone runs CREATE DATABASE name TEMPLATE from, one at a time per server, retrying while
// the template is in use (a session that just closed may take a moment to go away; other
// test binaries may share an external server).
func (s *PostgresServer) clone(ctx context.Context, name, from string) error {
	conn, err := pgx.Connect(ctx, s.adminURL())
	if err != nil {
		return fmt.Errorf("connect to create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{from}.Sanitize()
	for attempt := 1; ; attempt++ {
		s.cloneMu.Lock()
		_, err = conn.Exec(ctx, sql)
		s.cloneMu.Unlock()
		var pgErr *pgconn.PgError
		if err == nil || attempt == 10 || !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("create database %s from %s: %w", name, from, err)
	}
	return nil
}

// dropDatabase drops a test's database, disconnecting whoever still uses it.
func (s *PostgresServer) dropDatabase(name string) error {
	if !s.isRunning() {
		return nil // stopped by the test; the directory goes with the server
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.adminURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// dropTemplate drops the migrated template from an external server (Main's teardown).
func (s *PostgresServer) dropTemplate() {
	if s.tpl == "" {
		return
	}
	if err := s.dropDatabase(s.tpl); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: drop template %s: %v\n", s.tpl, err)
	}
}
