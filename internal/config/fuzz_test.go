package config

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// fuzzVars are the variables FuzzLoad sets to arbitrary values, by index. DATABASE_URL,
// R2_ENDPOINT and R2_SECRET_ACCESS_KEY are built apart, around their secrets.
var fuzzVars = append([]string{
	"WORKER_INTERVAL_MS", "LOCK_TIMEOUT", "LOCK_HEARTBEAT", "ORPHAN_SCAN_INTERVAL", "HTTP_ADDR",
	"SYNC_CONCURRENCY", "LEADER_MAX_FAILURES", "SHUTDOWN_TIMEOUT", "SYNC_PENDING_TTL", "SYNC_MAX_BACKOFF",
	"ORPHAN_MIN_AGE", "RUN_HISTORY_RETENTION", "ORPHAN_DELETE", "WORKER_ID", "WORKER_JOBS",
	"LOG_FORMAT", "LOG_LEVEL", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_BUCKET_NAME", "R2_REGION",
	"R2_PREFIX", "DATABASE_SCHEMA",
}, UploadsVars...)

// FuzzLoad: for any environment, Load returns a valid configuration or only *Error
// values (each one line, naming a variable: exit 2); it never panics; and no secret —
// the DATABASE_URL password, the R2_SECRET_ACCESS_KEY value, the password in
// R2_ENDPOINT's user info — shows, whole or in part, in an error or in RedactURL and
// RedactEndpoint output.
//
// dbForm places the password: 0 scheme://user:PASS@rest, 1 key=value password=PASS,
// 2 no "://" (scheme user:PASS@rest), which never parses; epForm: 0 no R2_ENDPOINT,
// 1 http://user:PASS@rest, 2 user:PASS@rest.
//
// "Shows" is decided by difference: the same environment with every letter and digit of
// the secrets masked ('k', '7'; all else kept, so every parser takes the same path)
// must not show the piece either if it came from anywhere else (a template, another
// variable, the user name).
func FuzzLoad(f *testing.F) {
	type seed struct {
		dbForm                         uint8
		dbScheme, dbUser, dbPass, dbAt string
		epForm                         uint8
		epUser, epPass, epAt, r2Secret string
		v1                             uint8
		s1                             string
		v2                             uint8
		s2                             string
		v3                             uint8
		s3                             string
	}
	idx := func(name string) uint8 {
		for i, v := range fuzzVars {
			if v == name {
				return uint8(i)
			}
		}
		panic(name)
	}
	for _, s := range []seed{
		// Issue 10's examples.
		{0, "postgres", "u", "SPACEY SECRET", "h/db", 0, "", "", "", "", idx("WORKER_INTERVAL_MS"), "9223372036855", idx("LOCK_TIMEOUT"), "1000h", idx("ORPHAN_SCAN_INTERVAL"), "500us"},
		{0, "postgres", "u", "p@ss@w0rd", "h:5432/db?sslmode=disable", 1, "user", "secret", "host:9000", "R2SECRETVALUE", idx("HTTP_ADDR"), "not-an-address", idx("LOCK_HEARTBEAT"), "1ns", idx("SYNC_CONCURRENCY"), "100000"},
		{0, "postgresql", "u", "a:b/c?d#e", "h/db", 2, "user", "s3cr3t-value", "host", "x", idx("HTTP_ADDR"), ":65536", idx("LEADER_MAX_FAILURES"), "99999999999999999999", idx("WORKER_INTERVAL_MS"), "1"},
		{1, "", "u", "hunter 2 'quoted' \\ back", "host=h dbname=db", 0, "", "", "", "s3cr3t", idx("LOCK_TIMEOUT"), "2147483648ms", idx("ORPHAN_SCAN_INTERVAL"), "168h", idx("HTTP_ADDR"), "[::1]:8081"},
		{1, "", "u", "hunter2", "host=h port=notaport", 0, "", "", "", "", idx("SHUTDOWN_TIMEOUT"), "99999999999h", idx("LOCK_HEARTBEAT"), "100ms", idx("LOCK_TIMEOUT"), "201ms"},
		{2, "postgres:", "u", "junk secret", "h/db", 1, "u", "pass@word", "host/x?y", "", idx("WORKER_ID"), "w\n1", idx("UPLOADS_TABLE"), "a.b", idx("UPLOADS_STATUS_PENDING"), "P"},
		{0, "postgres", "bob", "", "h/db", 0, "", "", "", "", idx("HTTP_ADDR"), "", idx("WORKER_JOBS"), " , ", idx("LOG_LEVEL"), "warning"},
		{0, "postgres", "u", "hunter2", "h:port/db", 1, "", "tok:en", "127.0.0.1:7070", "k", idx("ORPHAN_DELETE"), "maybe", idx("SYNC_PENDING_TTL"), "-1h", idx("DATABASE_SCHEMA"), "public"},
	} {
		f.Add(s.dbForm, s.dbScheme, s.dbUser, s.dbPass, s.dbAt, s.epForm, s.epUser, s.epPass, s.epAt, s.r2Secret, s.v1, s.s1, s.v2, s.s2, s.v3, s.s3)
	}

	f.Fuzz(func(t *testing.T, dbForm uint8, dbScheme, dbUser, dbPass, dbAt string, epForm uint8, epUser, epPass, epAt, r2Secret string,
		v1 uint8, s1 string, v2 uint8, s2 string, v3 uint8, s3 string) {
		dbForm, epForm = dbForm%3, epForm%3
		build := func(dbPass, epPass, r2Secret string) map[string]string {
			env := map[string]string{}
			for _, kv := range []struct {
				i uint8
				s string
			}{{v1, s1}, {v2, s2}, {v3, s3}} {
				env[fuzzVars[int(kv.i)%len(fuzzVars)]] = kv.s
			}
			switch dbForm {
			case 0:
				env["DATABASE_URL"] = dbScheme + "://" + dbUser + ":" + dbPass + "@" + dbAt
			case 1:
				env["DATABASE_URL"] = "user=" + kvWord(dbUser) + " password=" + kvQuote(dbPass) + " " + dbAt
			case 2:
				env["DATABASE_URL"] = strings.ReplaceAll(dbScheme+dbUser, "://", "") + ":" + dbPass + "@" + dbAt
			}
			switch epForm {
			case 1:
				env["R2_ENDPOINT"] = "http://" + epUser + ":" + epPass + "@" + epAt
			case 2:
				env["R2_ENDPOINT"] = strings.ReplaceAll(epUser, "://", "") + ":" + epPass + "@" + epAt
			}
			env["R2_SECRET_ACCESS_KEY"] = r2Secret
			return env
		}
		env := build(dbPass, epPass, r2Secret)
		for _, v := range env {
			// pgconn reads sslrootcert and friends at parse time: not /dev/zero.
			if strings.Contains(v, "/dev") || strings.Contains(v, "/proc") || strings.Contains(v, "/sys") {
				t.Skip()
			}
		}
		outputs := func(env map[string]string) string {
			c, err := Load(MapEnv(env))
			var out []string
			if err != nil {
				out = append(out, err.Error())
			} else {
				checkValid(t, env, c)
			}
			if dbForm != 2 {
				out = append(out, RedactURL(env["DATABASE_URL"]))
			}
			if epForm != 0 {
				out = append(out, RedactEndpoint(env["R2_ENDPOINT"]))
			}
			return strings.Join(out, "\n")
		}

		c, err := Load(MapEnv(env))
		if err != nil {
			checkOnlyConfigErrors(t, err)
		} else {
			checkValid(t, env, c)
		}

		got := outputs(env)
		masked := outputs(build(maskSecret(dbPass), maskSecret(epPass), maskSecret(r2Secret)))
		for _, sec := range []struct{ name, v string }{
			{"DATABASE_URL password", dbPass}, {"R2_ENDPOINT password", epPass}, {"R2_SECRET_ACCESS_KEY", r2Secret},
		} {
			if piece, ok := leaked(sec.v, got, masked); ok {
				t.Fatalf("%s %q: %q shows in\n%s", sec.name, sec.v, piece, got)
			}
		}
	})
}

// leaked returns a piece of secret (the whole, or 4 bytes of it) that shows in got but
// not in masked, the same output with the secret masked.
func leaked(secret, got, masked string) (string, bool) {
	const n = 4
	if len(secret) < n {
		return "", false
	}
	for i := 0; i+n <= len(secret); i++ {
		p := secret[i : i+n]
		if maskSecret(p) == p {
			continue // no letter or digit: nothing to tell it from punctuation
		}
		if strings.Contains(got, p) && !strings.Contains(masked, p) {
			return p, true
		}
	}
	return "", false
}

// maskSecret replaces letters with 'k' and digits with '7' (other bytes kept).
func maskSecret(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			b[i] = 'k'
		case c >= '0' && c <= '9':
			b[i] = '7'
		}
	}
	return string(b)
}

// kvWord makes s one unquoted libpq word: no space, quote, backslash or '='.
func kvWord(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r == '\'' || r == '\\' || r == '=' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
	if s == "" {
		return "u"
	}
	return s
}

// kvQuote writes s as a libpq key=value value.
func kvQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func checkOnlyConfigErrors(t *testing.T, err error) {
	t.Helper()
	known := map[string]bool{"DATABASE_URL": true, "R2_ENDPOINT": true, "R2_SECRET_ACCESS_KEY": true}
	for _, v := range fuzzVars {
		known[v] = true
	}
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		ce, ok := err.(*Error)
		if !ok {
			t.Fatalf("%T %v is not a *config.Error", err, err)
		}
		if !known[ce.Var] {
			t.Fatalf("error %q names no variable", ce)
		}
		if strings.ContainsAny(ce.Error(), "\r\n") {
			t.Fatalf("error %q is not one line", ce)
		}
	}
	walk(err)
	if !errors.As(err, new(*Error)) {
		t.Fatalf("%v: no *config.Error", err)
	}
}

// checkValid asserts every bound Load promises.
func checkValid(t *testing.T, env map[string]string, c Config) {
	t.Helper()
	in := func(name string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			t.Fatalf("%s = %s accepted (env %q)", name, d, env[name])
		}
	}
	in("WORKER_INTERVAL_MS", c.Interval, time.Millisecond, MaxInterval)
	in("LOCK_TIMEOUT", c.LockTimeout, MinDuration, MaxLockTimeout)
	in("LOCK_HEARTBEAT", c.LockHeartbeat, MinLockHeartbeat, MaxDuration)
	in("ORPHAN_SCAN_INTERVAL", c.OrphanScanInterval, MinOrphanScanInterval, MaxInterval)
	in("SHUTDOWN_TIMEOUT", c.ShutdownTimeout, MinDuration, MaxDuration)
	in("SYNC_PENDING_TTL", c.SyncPendingTTL, MinDuration, MaxDuration)
	in("SYNC_MAX_BACKOFF", c.SyncMaxBackoff, MinDuration, MaxDuration)
	in("ORPHAN_MIN_AGE", c.OrphanMinAge, MinDuration, MaxDuration)
	in("RUN_HISTORY_RETENTION", c.RunHistoryRetention, MinDuration, MaxDuration)
	if c.LockTimeout <= 2*c.LockHeartbeat {
		t.Fatalf("LOCK_TIMEOUT %s with LOCK_HEARTBEAT %s accepted", c.LockTimeout, c.LockHeartbeat)
	}
	if c.Interval.Milliseconds() < 1 || time.Duration(c.Interval.Milliseconds())*time.Millisecond != c.Interval {
		t.Fatalf("interval %s", c.Interval)
	}
	if c.SyncConcurrency < 1 || c.SyncConcurrency > MaxSyncConcurrency {
		t.Fatalf("SYNC_CONCURRENCY %d accepted", c.SyncConcurrency)
	}
	if c.LeaderMaxFailures < 1 || c.LeaderMaxFailures > MaxLeaderFailures {
		t.Fatalf("LEADER_MAX_FAILURES %d accepted", c.LeaderMaxFailures)
	}
	if c.HTTPAddr != "" {
		_, port, err := net.SplitHostPort(c.HTTPAddr)
		if err != nil {
			t.Fatalf("HTTP_ADDR %q accepted: %v", c.HTTPAddr, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			t.Fatalf("HTTP_ADDR %q accepted: port", c.HTTPAddr)
		}
	}
	if c.WorkerID == "" || len(c.WorkerID) > 63 {
		t.Fatalf("WORKER_ID %q accepted", c.WorkerID)
	}
	if c.DatabaseURL != "" {
		if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
			t.Fatalf("DATABASE_URL accepted but does not parse")
		}
	}
	if c.R2Endpoint != "" {
		u, err := url.Parse(c.R2Endpoint)
		if err != nil || u.User != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("R2_ENDPOINT accepted: %q", RedactEndpoint(c.R2Endpoint))
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		t.Fatalf("LOG_FORMAT %q accepted", c.LogFormat)
	}
}
