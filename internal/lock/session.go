package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrPooler means the session's statements did not all reach one backend: DATABASE_URL
// points at a transaction-mode pooler, which breaks session advisory locks.
var ErrPooler = errors.New("advisory lock not visible on this session's backend: DATABASE_URL must reach PostgreSQL directly or through a session-mode pooler (transaction-mode PgBouncer/Supavisor break session locks)")

// Options sets a Session's timing. See the package documentation for the bounds they give.
type Options struct {
	// Heartbeat is how often a held lock's session is checked (LOCK_HEARTBEAT, 1s).
	Heartbeat time.Duration
	// Timeout is the server-side bound (LOCK_TIMEOUT, 10s): a held lock's session that
	// stays silent this long is ended by PostgreSQL, which frees the lock. The holder
	// gives the lock up on its own after ClientBound = Timeout/2 without a successful
	// heartbeat, so it always stops before the server lets anyone else take over.
	Timeout time.Duration
	// Logger receives the session's events.
	Logger *slog.Logger
}

// ClientBound is how long a holder keeps acting on its lock after its last successful
// heartbeat: Timeout/2.
func (o Options) ClientBound() time.Duration { return o.Timeout / 2 }

func (o *Options) defaults() {
	if o.Heartbeat <= 0 {
		o.Heartbeat = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Session is one dedicated PostgreSQL connection that takes, holds and releases one
// advisory lock. It is not from any pool. One goroutine uses the connection at a time:
// the caller while the lock is not held, the heartbeat goroutine while it is.
type Session struct {
	connCfg *pgx.ConnConfig
	key     Key
	opts    Options

	mu     sync.Mutex
	conn   *pgx.Conn
	pid    int32
	lease  *Lease
	offset time.Duration // database clock minus local clock, last measured
}

// NewSession prepares a session; it connects on first use. connCfg should carry the
// worker id as application_name.
func NewSession(connCfg *pgx.ConnConfig, key Key, opts Options) *Session {
	opts.defaults()
	return &Session{connCfg: connCfg.Copy(), key: key, opts: opts}
}

// Key is the lock this session takes.
func (s *Session) Key() Key { return s.key }

// Options returns the session's timing.
func (s *Session) Options() Options { return s.opts }

// ClockOffset is the database clock minus the local clock, measured at the last
// successful statement (half the round trip subtracted).
func (s *Session) ClockOffset() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offset
}

// Lease is a held lock. Done is closed when the lock is no longer held (released or
// lost); Err then says why.
type Lease struct {
	PID      int32
	Acquired time.Time // local clock
	done     chan struct{}
	stop     context.CancelFunc
	stopped  chan struct{}
	once     sync.Once
	err      error
}

// Done is closed when the lease ends.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err is nil while the lease holds, then the reason it ended.
func (l *Lease) Err() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}

func (l *Lease) end(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

// serverSettings bound how long PostgreSQL keeps a silent holder's session (and lock):
// a paused process sends nothing (idle_session_timeout), a partitioned one
// acknowledges nothing (tcp_user_timeout, keepalives).
func (s *Session) serverSettings() map[string]string {
	t := s.opts.Timeout
	sec := func(d time.Duration) string { return strconv.Itoa(max(1, int(d/time.Second))) }
	return map[string]string{
		"tcp_user_timeout":                    strconv.FormatInt(t.Milliseconds(), 10),
		"tcp_keepalives_idle":                 sec(t / 4),
		"tcp_keepalives_interval":             sec(t / 8),
		"tcp_keepalives_count":                "3",
		"statement_timeout":                   strconv.FormatInt(s.opts.ClientBound().Milliseconds(), 10),
		"idle_in_transaction_session_timeout": strconv.FormatInt(t.Milliseconds(), 10),
	}
}

func (s *Session) connect(ctx context.Context) error {
	if s.conn != nil && !s.conn.IsClosed() {
		return nil
	}
	cfg := s.connCfg.Copy()
	for k, v := range s.serverSettings() {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("lock session connect: %w", err)
	}
	// idle_session_timeout, which bounds a paused holder, exists from PostgreSQL 14.
	if v := conn.PgConn().ParameterStatus("server_version"); v != "" {
		if major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0]); err == nil && major < 14 {
			_ = conn.Close(ctx)
			return fmt.Errorf("lock session: PostgreSQL %s is too old: bg-worker needs 14 or newer (idle_session_timeout)", v)
		}
	}
	s.conn = conn
	s.pid = int32(conn.PgConn().PID())
	return nil
}

func (s *Session) dropConn() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.conn.Close(ctx) // the server frees every lock the session held
		cancel()
		s.conn = nil
	}
}

// TryAcquire takes the lock if it is free, without waiting. It never takes a lock this
// session already holds (advisory locks stack): it returns the existing lease instead.
// The returned time is the database clock at the attempt.
func (s *Session) TryAcquire(ctx context.Context) (*Lease, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil && s.lease.Err() == nil {
		return s.lease, time.Now().Add(s.offset), nil
	}
	if s.lease != nil {
		// The previous lease ended; make sure its heartbeat goroutine has stopped
		// using the connection before we do.
		<-s.lease.stopped
		s.lease = nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.ClientBound())
	defer cancel()
	var ok bool
	var dbNow time.Time
	var sent, recv time.Time
	for attempt := 0; ; attempt++ {
		reused := s.conn != nil
		if err := s.connect(ctx); err != nil {
			return nil, time.Time{}, err
		}
		sent = time.Now()
		err := s.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2), clock_timestamp()`, s.key.Namespace, s.key.ID).Scan(&ok, &dbNow)
		recv = time.Now()
		if err == nil {
			break
		}
		s.dropConn()
		// An idle session may have been cut (server restart, idle timeouts on the
		// way): one fresh connection, then report.
		if !reused || attempt > 0 || ctx.Err() != nil {
			return nil, time.Time{}, fmt.Errorf("try lock %s: %w", s.key, err)
		}
	}
	s.offset = dbNow.Sub(sent.Add(recv.Sub(sent) / 2))
	if !ok {
		return nil, dbNow, nil
	}
	// Prove the lock sits on this session's backend (a transaction-mode pooler would
	// have sent the two statements to different backends) and bound the session's
	// silence server-side from now on.
	var held bool
	var dbMicros int64
	err := s.conn.QueryRow(ctx, heartbeatSQL+`, set_config('idle_session_timeout', $4, false)`,
		s.key.Namespace, s.key.ID, s.pid, strconv.FormatInt(s.opts.Timeout.Milliseconds(), 10)).Scan(&held, &dbMicros, new(string))
	dbNow = time.UnixMicro(dbMicros)
	if err != nil || !held {
		s.dropConn()
		if err == nil {
			err = ErrPooler
		}
		return nil, time.Time{}, fmt.Errorf("verify lock %s: %w", s.key, err)
	}
	hbCtx, stop := context.WithCancel(context.Background())
	l := &Lease{PID: s.pid, Acquired: recv, done: make(chan struct{}), stop: stop, stopped: make(chan struct{})}
	s.lease = l
	go s.heartbeat(hbCtx, l, recv)
	return l, dbNow, nil
}

// heartbeatSQL is true while this backend (pid $3) holds the lock ($1, $2), with the
// database clock in microseconds. The heartbeat sends it with text parameters, so every
// parameter carries its type.
const heartbeatSQL = `SELECT pg_backend_pid() = $3::int AND EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid()
      AND l.classid::bigint = $1::bigint AND l.objid::bigint = $2::bigint AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())),
    (extract(epoch FROM clock_timestamp()) * 1000000)::bigint`

// check runs one heartbeat statement on the held session.
func (s *Session) check(ctx context.Context, params [][]byte) (held bool, dbNow time.Time, err error) {
	rr := s.conn.PgConn().ExecParams(ctx, heartbeatSQL, params, nil, nil, nil)
	rows := 0
	for rr.NextRow() {
		v := rr.Values()
		if len(v) != 2 || len(v[0]) == 0 {
			continue
		}
		rows++
		held = v[0][0] == 't'
		if us, perr := strconv.ParseInt(string(v[1]), 10, 64); perr == nil {
			dbNow = time.UnixMicro(us)
		}
	}
	if _, err = rr.Close(); err != nil {
		return false, time.Time{}, err
	}
	if rows != 1 {
		return false, time.Time{}, fmt.Errorf("heartbeat returned %d rows", rows)
	}
	return held, dbNow, nil
}

// heartbeat checks the session every Heartbeat. Each check must succeed before
// lastOK + ClientBound; otherwise the lease ends with ErrLockLost and the connection is
// closed, which frees the lock server-side if the server still thought we held it.
func (s *Session) heartbeat(ctx context.Context, l *Lease, lastOK time.Time) {
	defer close(l.stopped)
	t := time.NewTimer(s.opts.Heartbeat)
	defer t.Stop()
	// Encoded once: a held lock is checked every second for as long as it is held, so the
	// check goes through pgconn with text parameters and allocates next to nothing.
	params := [][]byte{
		[]byte(strconv.Itoa(int(s.key.Namespace))),
		[]byte(strconv.Itoa(int(s.key.ID))),
		[]byte(strconv.Itoa(int(l.PID))),
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		deadline := lastOK.Add(s.opts.ClientBound())
		hctx, cancel := context.WithDeadline(ctx, deadline)
		sent := time.Now()
		held, dbNow, err := s.check(hctx, params)
		recv := time.Now()
		cancel()
		if ctx.Err() != nil {
			return // released: Release owns the connection now
		}
		if err == nil && !held {
			err = ErrPooler
		}
		if err != nil {
			s.opts.Logger.Warn("Lost lock: heartbeat failed", "lock", s.key.String(), "pid", l.PID, "error", err,
				"since_last_ok", recv.Sub(lastOK))
			s.mu.Lock()
			s.dropConn()
			s.mu.Unlock()
			l.end(fmt.Errorf("%w: heartbeat: %v", ErrLockLost, err))
			return
		}
		s.mu.Lock()
		s.offset = dbNow.Sub(sent.Add(recv.Sub(sent) / 2))
		s.mu.Unlock()
		lastOK = sent // the server answered after we sent: the lock was held at `sent` at least
		t.Reset(s.opts.Heartbeat)
	}
}

// Release gives the lock up on the session that took it and checks that it was held.
// The connection stays open for later attempts. After an error the connection is
// closed, which frees the lock anyway.
func (s *Session) Release(ctx context.Context) error {
	s.mu.Lock()
	l := s.lease
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	l.stop()
	<-l.stopped
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lease = nil
	if l.Err() != nil || s.conn == nil {
		return nil // already lost: the server freed it
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.ClientBound())
	defer cancel()
	var ok bool
	err := s.conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1, $2), set_config('idle_session_timeout', '0', false)`,
		s.key.Namespace, s.key.ID).Scan(&ok, new(string))
	l.end(errors.New("released"))
	if err != nil || !ok {
		s.dropConn()
		if err == nil {
			return fmt.Errorf("unlock %s: lock was not held by this session", s.key)
		}
		return fmt.Errorf("unlock %s: %w (connection closed, lock freed)", s.key, err)
	}
	return nil
}

// Close releases any held lock and closes the connection.
func (s *Session) Close(ctx context.Context) error {
	err := s.Release(ctx)
	s.mu.Lock()
	s.dropConn()
	s.mu.Unlock()
	return err
}
