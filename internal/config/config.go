// Package config reads bg-worker's configuration from the environment. Every field has a
// documented default; Validate reports each bad variable by name, one error per variable.
package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/internal/schedule"
)

// Config is the whole environment bg-worker reads. Names in comments are the variables.
type Config struct {
	// DatabaseURL (DATABASE_URL) reaches PostgreSQL directly or through a session-mode
	// pooler; transaction-mode poolers break session advisory locks.
	DatabaseURL string

	// R2 / S3-compatible bucket.
	R2AccountID       string // R2_ACCOUNT_ID: endpoint https://<id>.r2.cloudflarestorage.com
	R2AccessKeyID     string // R2_ACCESS_KEY_ID
	R2SecretAccessKey string // R2_SECRET_ACCESS_KEY (secret: never logged)
	R2BucketName      string // R2_BUCKET_NAME
	R2Endpoint        string // R2_ENDPOINT: any S3-compatible endpoint, path-style
	R2Region          string // R2_REGION, default "auto"
	R2Prefix          string // R2_PREFIX: only keys under it belong to the worker

	Interval        time.Duration // WORKER_INTERVAL_MS, default 5000 ms
	WorkerID        string        // WORKER_ID, default hostname-pid, ≤ 63 ASCII characters
	Jobs            []string      // WORKER_JOBS, default all (nil)
	HTTPAddr        string        // HTTP_ADDR, default ":8081"; empty turns it off
	LogFormat       string        // LOG_FORMAT: text | json
	LogLevel        string        // LOG_LEVEL: debug | info | warn | error
	ShutdownTimeout time.Duration // SHUTDOWN_TIMEOUT, default 30s

	// Leadership and fencing (see internal/lock).
	LeaderMaxFailures int           // LEADER_MAX_FAILURES, default 3
	LockHeartbeat     time.Duration // LOCK_HEARTBEAT, default 1s
	LockTimeout       time.Duration // LOCK_TIMEOUT, default 10s

	SyncConcurrency int           // SYNC_CONCURRENCY, default 32
	SyncPendingTTL  time.Duration // SYNC_PENDING_TTL, default 24h
	SyncMaxBackoff  time.Duration // SYNC_MAX_BACKOFF, default 5m

	OrphanScanInterval time.Duration // ORPHAN_SCAN_INTERVAL, default 1h
	// OrphanScanSchedule (ORPHAN_SCAN_SCHEDULE as a cron expression) replaces the
	// interval; nil: every OrphanScanInterval.
	OrphanScanSchedule schedule.Schedule
	OrphanMinAge       time.Duration // ORPHAN_MIN_AGE, default 24h
	OrphanDelete       bool          // ORPHAN_DELETE, default false

	RunHistoryRetention time.Duration // RUN_HISTORY_RETENTION, default 168h

	// JobTimeouts (JOB_TIMEOUTS, "job=duration,…") overrides jobs' longest run; a job
	// not named keeps its default (jobs.DefaultTimeout of its interval).
	JobTimeouts map[string]time.Duration

	// DatabaseSchema (DATABASE_SCHEMA, default bg_worker) holds the worker's own tables
	// and views; read it through Schema().
	DatabaseSchema string
	// Uploads maps the application's uploads table (UPLOADS_*).
	Uploads UploadsMapping

	// Sentry (sentry.go): SentryDSN (SENTRY_DSN) turns error reporting and Crons monitors
	// on; SentryEnvironment (SENTRY_ENVIRONMENT) names the environment.
	SentryDSN         string
	SentryEnvironment string
}

// Every default, defined once: Defaults applies them, and code that needs one (the jobs,
// the scheduler's tests, the deploy checks) reads the Config, never a copy.
const (
	DefaultR2Region            = "auto"
	DefaultInterval            = 5 * time.Second
	DefaultHTTPAddr            = ":8081"
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultLeaderMaxFailures   = 3
	DefaultLockHeartbeat       = time.Second
	DefaultLockTimeout         = 10 * time.Second
	DefaultSyncConcurrency     = 32
	DefaultSyncPendingTTL      = 24 * time.Hour
	DefaultSyncMaxBackoff      = 5 * time.Minute
	DefaultOrphanScanInterval  = time.Hour
	DefaultOrphanMinAge        = 24 * time.Hour
	DefaultRunHistoryRetention = 168 * time.Hour
)

// Defaults returns the configuration with every default filled in.
func Defaults() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "bg-worker"
	}
	return Config{
		R2Region:            DefaultR2Region,
		Interval:            DefaultInterval,
		WorkerID:            fmt.Sprintf("%s-%d", host, os.Getpid()),
		HTTPAddr:            DefaultHTTPAddr,
		LogFormat:           "text",
		LogLevel:            "info",
		ShutdownTimeout:     DefaultShutdownTimeout,
		LeaderMaxFailures:   DefaultLeaderMaxFailures,
		LockHeartbeat:       DefaultLockHeartbeat,
		LockTimeout:         DefaultLockTimeout,
		SyncConcurrency:     DefaultSyncConcurrency,
		SyncPendingTTL:      DefaultSyncPendingTTL,
		SyncMaxBackoff:      DefaultSyncMaxBackoff,
		OrphanScanInterval:  DefaultOrphanScanInterval,
		OrphanMinAge:        DefaultOrphanMinAge,
		RunHistoryRetention: DefaultRunHistoryRetention,
		DatabaseSchema:      DefaultSchema,
		Uploads:             DefaultUploads(),
	}
}

// Error is one offending variable.
type Error struct {
	Var string
	Msg string
}

func (e *Error) Error() string { return e.Var + ": " + e.Msg }

// LookupEnv reads one variable; os.LookupEnv is one. It tells "set to empty" from
// "unset", which HTTP_ADDR needs.
type LookupEnv func(name string) (string, bool)

// MapEnv is a LookupEnv over a map, for tests.
func MapEnv(m map[string]string) LookupEnv {
	return func(name string) (string, bool) { v, ok := m[name]; return v, ok }
}

// Bounds of the numbers and durations (README "Configuration"). Every value is checked
// against them at load time, so nothing overflows later (a duration in milliseconds, a
// PostgreSQL setting) and a bad value exits 2 naming its variable instead of failing late.
const (
	// MaxInterval bounds a job's tick: WORKER_INTERVAL_MS and ORPHAN_SCAN_INTERVAL.
	MaxInterval = 7 * 24 * time.Hour
	// MinOrphanScanInterval is the shortest ORPHAN_SCAN_INTERVAL (a scan lists the bucket).
	MinOrphanScanInterval = time.Second
	// MaxLockTimeout is the largest LOCK_TIMEOUT: it becomes PostgreSQL's
	// idle_session_timeout, tcp_user_timeout and idle_in_transaction_session_timeout,
	// which are int32 milliseconds.
	MaxLockTimeout = math.MaxInt32 * time.Millisecond
	// MinLockHeartbeat is the shortest LOCK_HEARTBEAT (each beat is a round trip).
	MinLockHeartbeat = 100 * time.Millisecond
	// MinDuration and MaxDuration bound every other duration: each may become
	// milliseconds (so at least 1ms) and is added to times and multiplied by small
	// factors (so far from time.Duration's 292 years).
	MinDuration = time.Millisecond
	MaxDuration = 10 * 365 * 24 * time.Hour
	// MaxSyncConcurrency bounds SYNC_CONCURRENCY (HeadObject requests in flight).
	MaxSyncConcurrency = 1024
	// MaxLeaderFailures bounds LEADER_MAX_FAILURES.
	MaxLeaderFailures = 1000
)

// rangeNote says where a bound comes from, when it is not obvious.
var rangeNote = map[string]string{
	"LOCK_TIMEOUT":         " (2147483647ms: PostgreSQL's idle_session_timeout and tcp_user_timeout are int32 milliseconds)",
	"LOCK_HEARTBEAT":       " (each beat is a round trip to PostgreSQL)",
	"ORPHAN_SCAN_INTERVAL": " (a scan lists the bucket)",
}

// Load reads the environment on top of Defaults. It returns every offending variable
// (errors.Join of *Error), not just the first.
func Load(env LookupEnv) (Config, error) {
	c := Defaults()
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, &Error{Var: name, Msg: fmt.Sprintf(format, args...)})
	}
	str := func(name string, dst *string) {
		if v, ok := env.value(name); ok {
			*dst = v
		}
	}
	// dur reads a duration within [lo, hi]; it reports false when the variable is set
	// but rejected.
	dur := func(name string, dst *time.Duration, lo, hi time.Duration) bool {
		v, ok := env.value(name)
		if !ok {
			return true
		}
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			bad(name, "%q is not a duration (use Go durations such as 90s, 5m, 24h; at most %s)", v, FormatDuration(hi))
		case d <= 0:
			bad(name, "%q must be positive", v)
		case d < lo || d > hi:
			bad(name, "%q is out of range: %s to %s%s", v, FormatDuration(lo), FormatDuration(hi), rangeNote[name])
		default:
			*dst = d
			return true
		}
		return false
	}
	intIn := func(name string, dst *int, hi int) {
		v, ok := env.value(name)
		if !ok {
			return
		}
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange):
			bad(name, "%q is out of range: 1 to %d", v, hi)
		case err != nil:
			bad(name, "%q is not a whole number", v)
		case n <= 0:
			bad(name, "%q must be positive", v)
		case n > int64(hi):
			bad(name, "%q is out of range: 1 to %d", v, hi)
		default:
			*dst = int(n)
		}
	}

	c.DatabaseURL, _ = env.value("DATABASE_URL")
	str("R2_ACCOUNT_ID", &c.R2AccountID)
	str("R2_ACCESS_KEY_ID", &c.R2AccessKeyID)
	c.R2SecretAccessKey, _ = env("R2_SECRET_ACCESS_KEY") // exact: a secret is not trimmed
	str("R2_BUCKET_NAME", &c.R2BucketName)
	str("R2_ENDPOINT", &c.R2Endpoint)
	str("R2_REGION", &c.R2Region)
	str("R2_PREFIX", &c.R2Prefix)

	if v, ok := env.value("WORKER_INTERVAL_MS"); ok {
		maxMs := MaxInterval.Milliseconds()
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange):
			bad("WORKER_INTERVAL_MS", "%q is out of range: 1 to %d (%s)", v, maxMs, FormatDuration(MaxInterval))
		case err != nil:
			bad("WORKER_INTERVAL_MS", "%q is not a whole number of milliseconds", v)
		case n <= 0:
			bad("WORKER_INTERVAL_MS", "%q must be positive", v)
		case n > maxMs:
			bad("WORKER_INTERVAL_MS", "%q is out of range: 1 to %d (%s)", v, maxMs, FormatDuration(MaxInterval))
		default:
			c.Interval = time.Duration(n) * time.Millisecond
		}
	}
	str("WORKER_ID", &c.WorkerID)
	if v, ok := env.value("WORKER_JOBS"); ok {
		for _, j := range strings.Split(v, ",") {
			if j = strings.TrimSpace(j); j != "" {
				c.Jobs = append(c.Jobs, j)
			}
		}
		if len(c.Jobs) == 0 {
			bad("WORKER_JOBS", "%q names no job", v)
		}
	}
	if v, set := env("HTTP_ADDR"); set {
		c.HTTPAddr = strings.TrimSpace(v) // empty turns the listener off
	}
	str("LOG_FORMAT", &c.LogFormat)
	str("LOG_LEVEL", &c.LogLevel)
	dur("SHUTDOWN_TIMEOUT", &c.ShutdownTimeout, MinDuration, MaxDuration)
	intIn("LEADER_MAX_FAILURES", &c.LeaderMaxFailures, MaxLeaderFailures)
	hbOK := dur("LOCK_HEARTBEAT", &c.LockHeartbeat, MinLockHeartbeat, MaxDuration)
	toOK := dur("LOCK_TIMEOUT", &c.LockTimeout, MinDuration, MaxLockTimeout)
	intIn("SYNC_CONCURRENCY", &c.SyncConcurrency, MaxSyncConcurrency)
	dur("SYNC_PENDING_TTL", &c.SyncPendingTTL, MinDuration, MaxDuration)
	dur("SYNC_MAX_BACKOFF", &c.SyncMaxBackoff, MinDuration, MaxDuration)
	dur("ORPHAN_SCAN_INTERVAL", &c.OrphanScanInterval, MinOrphanScanInterval, MaxInterval)
	dur("ORPHAN_MIN_AGE", &c.OrphanMinAge, MinDuration, MaxDuration)
	if v, ok := env.value("ORPHAN_DELETE"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("ORPHAN_DELETE", "%q is not true or false", v)
		}
		c.OrphanDelete = b
	}
	dur("RUN_HISTORY_RETENTION", &c.RunHistoryRetention, MinDuration, MaxDuration)
	loadUploads(env, &c, bad)
	loadJobTimeouts(env, &c, bad)
	loadSentry(env, &c, bad)
	loadSchedules(env, &c, bad)

	// LOCK_TIMEOUT against LOCK_HEARTBEAT only when both were accepted (a rejected one
	// is already reported, and its default says nothing about the other).
	if hbOK && toOK && c.LockHeartbeat*2 >= c.LockTimeout {
		bad("LOCK_TIMEOUT", "%s must be more than twice LOCK_HEARTBEAT (%s)", FormatDuration(c.LockTimeout), FormatDuration(c.LockHeartbeat))
	}
	if err := c.validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// validate checks values that parsed but do not make sense together. It does not check
// the settings that only some commands need (RequireDatabase, RequireBucket).
func (c *Config) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, &Error{Var: name, Msg: fmt.Sprintf(format, args...)})
	}
	if c.DatabaseURL != "" {
		// Never pgconn's error text: it quotes the string with a best-effort redaction.
		if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
			bad("DATABASE_URL", "does not parse as a PostgreSQL URL or key=value string (%q)", redactUnparsed(c.DatabaseURL))
		}
	}
	if c.WorkerID == "" {
		bad("WORKER_ID", "must not be empty")
	} else if len(c.WorkerID) > 63 {
		bad("WORKER_ID", "%d characters; at most 63 (it is the PostgreSQL application_name)", len(c.WorkerID))
	} else {
		for _, r := range c.WorkerID {
			if r < 0x20 || r > 0x7e {
				bad("WORKER_ID", "%q must be printable ASCII (it is the PostgreSQL application_name)", c.WorkerID)
				break
			}
		}
	}
	if c.HTTPAddr != "" {
		if msg := checkListenAddr(c.HTTPAddr); msg != "" {
			bad("HTTP_ADDR", "%q %s", c.HTTPAddr, msg)
		}
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("LOG_FORMAT", "%q must be text or json", c.LogFormat)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		bad("LOG_LEVEL", "%q must be debug, info, warn or error", c.LogLevel)
	}
	if c.R2Endpoint != "" {
		u, err := url.Parse(c.R2Endpoint)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("R2_ENDPOINT", "%q must be an http(s) URL", RedactEndpoint(c.R2Endpoint))
		case u.User != nil:
			bad("R2_ENDPOINT", "must not contain credentials (user info); use R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY")
		case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
			bad("R2_ENDPOINT", "%q must not have a query or fragment", RedactEndpoint(c.R2Endpoint))
		}
	}
	return errors.Join(errs...)
}

// checkListenAddr says what is wrong with a listen address, or "".
func checkListenAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "is not a listen address host:port (such as :8081 or 127.0.0.1:8081)"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "has no valid port (0 to 65535)"
	}
	if host == "" {
		return ""
	}
	ip, _, _ := strings.Cut(host, "%") // an IPv6 zone: fe80::1%eth0
	if net.ParseIP(ip) != nil {
		return ""
	}
	if len(host) > 253 {
		return "has no valid host (an IP address or a host name)"
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return "has no valid host (an IP address or a host name)"
		}
	}
	return ""
}

// FormatDuration writes d as the README does: 168h, 90s, 100ms, not 168h0m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// RequireDatabase reports a missing DATABASE_URL.
func (c *Config) RequireDatabase() error {
	if c.DatabaseURL == "" {
		return &Error{Var: "DATABASE_URL", Msg: "required (postgres://user:pass@host:5432/db)"}
	}
	return nil
}

// RequireBucket reports the bucket variables a bucket job needs.
func (c *Config) RequireBucket() error {
	var errs []error
	if c.R2AccountID == "" && c.R2Endpoint == "" {
		errs = append(errs, &Error{Var: "R2_ACCOUNT_ID", Msg: "required (or R2_ENDPOINT) when a bucket job is enabled"})
	}
	for _, v := range []struct{ name, val string }{
		{"R2_ACCESS_KEY_ID", c.R2AccessKeyID},
		{"R2_SECRET_ACCESS_KEY", c.R2SecretAccessKey},
		{"R2_BUCKET_NAME", c.R2BucketName},
	} {
		if v.val == "" {
			errs = append(errs, &Error{Var: v.name, Msg: "required when a bucket job is enabled"})
		}
	}
	return errors.Join(errs...)
}

// SlogLevel maps LogLevel to a slog level name accepted by slog.Level.UnmarshalText.
func (c *Config) SlogLevel() string {
	if strings.EqualFold(c.LogLevel, "warning") {
		return "warn"
	}
	return c.LogLevel
}

// value reads one variable, trimmed. As everywhere, a variable set to nothing (or to
// spaces) means its default: compose passes every variable, set or not.
func (env LookupEnv) value(name string) (string, bool) {
	v, _ := env(name)
	v = strings.TrimSpace(v)
	return v, v != ""
}
