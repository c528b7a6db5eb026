package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/devservers"
	"github.com/bg-worker/bg-worker/migrations"
)

// PostgresServer is a PostgreSQL server: one started by testenv (local), or the one named
// by TEST_DATABASE_URL (external; the shared server only). NewPostgresServer always starts
// a local one.
type PostgresServer struct {
	ext *url.URL             // external server; pg is nil then
	pg  *devservers.Postgres // local server

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
//
// Sessions opened with it have search_path = bg_worker, public, so a test's own SQL can
// name the worker's tables (job_runs) and the default uploads table alike; the worker's
// own pool sets search_path to its schema whatever the URL says.
func (s *PostgresServer) URL(dbname string) string {
	raw := ""
	if s.ext != nil {
		u := *s.ext
		u.Path = "/" + dbname
		u.RawPath = ""
		raw = u.String()
	} else {
		raw = s.pg.URL(dbname)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	q.Set("search_path", config.DefaultSchema+",public")
	u.RawQuery = q.Encode()
	return u.String()
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

// Restart restarts the server (fast shutdown: sessions are disconnected) on the same port.
func (s *PostgresServer) Restart(t testing.TB) {
	t.Helper()
	s.control(t, "restart", func(ctx context.Context) error { return s.pg.Restart(ctx) })
}

// Stop stops the server (fast shutdown). Start starts it again on the same port.
func (s *PostgresServer) Stop(t testing.TB) {
	t.Helper()
	s.control(t, "stop", func(context.Context) error { return s.pg.Shutdown() })
}

// Start starts a server stopped with Stop, on the same port.
func (s *PostgresServer) Start(t testing.TB) {
	t.Helper()
	s.control(t, "start", func(ctx context.Context) error { return s.pg.Start(ctx) })
}

func (s *PostgresServer) control(t testing.TB, action string, f func(context.Context) error) {
	t.Helper()
	if s.ext != nil {
		t.Fatalf("testenv: cannot %s the external server TEST_DATABASE_URL", action)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := f(ctx); err != nil {
		t.Fatalf("testenv: %s postgres: %v", action, err)
	}
}

func (s *PostgresServer) withLog(err error) error {
	if s.ext != nil {
		return err
	}
	return devservers.WithLog(err, s.pg.LogFile)
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
func startPostgres() (*PostgresServer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := devservers.StartPostgres(ctx, devservers.PostgresOptions{
		Pattern:  "testenv-pg-",
		Settings: map[string]string{"max_connections": "300"},
	})
	if err != nil {
		return nil, err
	}
	return &PostgresServer{pg: pg}, nil
}

// close stops the server and removes its directory; for the external server, it drops
// the migrated template.
func (s *PostgresServer) close() {
	if s.ext != nil {
		s.dropTemplate()
		return
	}
	if err := s.pg.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop postgres: %v\n", err)
	}
}

func (s *PostgresServer) isRunning() bool {
	return s.ext != nil || s.pg.Running()
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
		if _, err := migrations.Apply(ctx, conn, migrations.DefaultOptions()); err != nil {
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
