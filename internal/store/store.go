package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/store/dbsqlc"
	"github.com/bg-worker/bg-worker/migrations"
)

// ErrNotFound is returned when a row the caller asked for does not exist.
var ErrNotFound = errors.New("not found")

// Store is the database as bg-worker uses it: typed queries over a pool, or over one
// transaction (see Tx).
type Store struct {
	pool *pgxpool.Pool // nil for a transaction-bound Store
	db   dbsqlc.DBTX
	q    *dbsqlc.Queries
}

// Options tunes Open.
type Options struct {
	// ApplicationName is shown in pg_stat_activity (the WORKER_ID).
	ApplicationName string
	// MaxConns bounds the pool (default 8).
	MaxConns int32
	// IdleInTxTimeout ends a pool session that sits inside a transaction this long
	// (idle_in_transaction_session_timeout). A paused worker's open fenced transaction
	// holds a row lock on its run; this bounds how long it can delay a new leader.
	IdleInTxTimeout time.Duration
	// Tracer, if set, sees every statement the pool runs (tests count statements with it).
	Tracer pgx.QueryTracer
	// Schema is the worker's schema (DATABASE_SCHEMA, default bg_worker): the pool's
	// search_path, so the generated queries' unqualified names resolve there.
	Schema string
}

// SearchPath is the search_path value for the worker's schema. Only that schema is on
// it (pg_catalog is always searched first): the application's table is reached through
// the mapping's views, never by an unqualified name.
func SearchPath(schema string) string {
	if schema == "" {
		schema = config.DefaultSchema
	}
	return pgx.Identifier{schema}.Sanitize()
}

// ParseConfig parses a database URL and applies bg-worker's session settings; the lock
// package uses it for its dedicated sessions too.
func ParseConfig(url, applicationName string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", redactErr(err))
	}
	if applicationName != "" {
		cfg.RuntimeParams["application_name"] = applicationName
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	// Fail fast on dead peers instead of the OS default of hours.
	cfg.DialFunc = (&net.Dialer{KeepAlive: 5 * time.Second, Timeout: cfg.ConnectTimeout}).DialContext
	return cfg, nil
}

// Open connects a pool. It does not check the schema; see SchemaVersion.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	connCfg, err := ParseConfig(url, opts.ApplicationName)
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return nil, err
	}
	connCfg.RuntimeParams["search_path"] = SearchPath(opts.Schema)
	connCfg.RuntimeParams["lock_timeout"] = strconv.FormatInt(AppLockTimeout.Milliseconds(), 10)
	if opts.IdleInTxTimeout > 0 {
		connCfg.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(opts.IdleInTxTimeout.Milliseconds(), 10)
	}
	pcfg.ConnConfig = connCfg
	if opts.Tracer != nil {
		pcfg.ConnConfig.Tracer = opts.Tracer
	}
	pcfg.MaxConns = opts.MaxConns
	if pcfg.MaxConns <= 0 {
		pcfg.MaxConns = 8
	}
	pcfg.MaxConnIdleTime = time.Minute
	pcfg.HealthCheckPeriod = 10 * time.Second
	// pgxpool pings a connection idle for over a second before handing it out: one extra
	// statement per tick for a leader. A dead connection fails its statement anyway (and
	// the run retries next tick); the background health check covers the rest.
	pcfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration > 30*time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", redactErr(err))
	}
	return &Store{pool: pool, db: pool, q: dbsqlc.New(pool)}, nil
}

// Pool is the underlying pool (nil for a transaction-bound Store).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Conn is the part of pgx a hand-written statement needs (a pool, connection or
// transaction).
type Conn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// DB is the connection, pool or transaction this Store runs on, for the few statements
// sqlc cannot type (pg_locks in the fence, a test job's own table).
func (s *Store) DB() Conn { return s.db }

// Close closes the pool.
func (s *Store) Close() {
	if s.pool != nil {
		s.pool.Close()
	}
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.pool == nil {
		return nil
	}
	// The pool connects lazily: this is where a connection error (which may quote the
	// connection string) first surfaces.
	if err := s.pool.Ping(ctx); err != nil {
		return &redactedError{msg: config.RedactURL(err.Error()), err: err}
	}
	return nil
}

// redactedError prints a redacted message but keeps the original for errors.Is/As
// (connection-error classification).
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Tx runs fn in a transaction on a Store bound to it; fn's error rolls back.
func (s *Store) Tx(ctx context.Context, fn func(tx *Store) error) error {
	if s.pool == nil {
		return errors.New("store: nested transaction")
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return fn(&Store{db: tx, q: dbsqlc.New(tx)})
	})
}

// Migrate brings the database to the current schema on a dedicated connection (see
// migrations.Apply); safe to run from many replicas at once. A mapping that does not
// match the catalog comes back as errors.Join of *config.Error.
func Migrate(ctx context.Context, url string, opts migrations.Options) (migrations.Result, error) {
	cfg, err := ParseConfig(url, "bg-worker-migrate")
	if err != nil {
		return migrations.Result{}, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return migrations.Result{}, fmt.Errorf("connect: %w", redactErr(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return migrations.Apply(ctx, conn, opts)
}

// SchemaVersion returns the applied and the latest known migration versions.
func (s *Store) SchemaVersion(ctx context.Context) (applied, latest int, err error) {
	applied, err = migrations.Current(ctx, s.db)
	return applied, migrations.Latest(), err
}

// notFound maps pgx's no-rows error to ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// redactErr keeps connection errors from echoing a password: pgconn errors can carry
// the connection string.
func redactErr(err error) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return fmt.Errorf("%s", config.RedactURL(err.Error()))
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return fmt.Errorf("invalid connection string")
	}
	return err
}

// IsConnError reports whether err is a lost or refused connection rather than an answer
// from the server.
func IsConnError(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08 (connection exception) and 57P (admin shutdown, crash, cannot connect now).
		return len(pgErr.Code) >= 2 && (pgErr.Code[:2] == "08" || pgErr.Code[:3] == "57P")
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, net.ErrClosed) ||
		isNetErr(err)
}

func isNetErr(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce)
}

// isUndefined reports a missing table or schema (nothing migrated yet).
func isUndefined(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}

// ErrLockTimeout means a statement waited lock_timeout for a lock another session held
// (the application locked its table): nothing changed.
var ErrLockTimeout = errors.New("lock timeout")

// AppLockTimeout bounds how long any statement of the worker's pool waits for a lock: the
// application's rows and tables are the application's, and the worker never queues behind
// them (row locks are skipped outright; see upload_checks_apply).
const AppLockTimeout = 2 * time.Second

// IsLockTimeout reports a statement cancelled by lock_timeout (SQLSTATE 55P03).
func IsLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, ErrLockTimeout) || (errors.As(err, &pgErr) && pgErr.Code == "55P03")
}
