package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(MapEnv(map[string]string{"DATABASE_URL": "postgres://u:p@localhost:5432/db"}))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Interval", c.Interval, 5 * time.Second},
		{"HTTPAddr", c.HTTPAddr, ":8081"},
		{"R2Region", c.R2Region, "auto"},
		{"LogFormat", c.LogFormat, "text"},
		{"LogLevel", c.LogLevel, "info"},
		{"ShutdownTimeout", c.ShutdownTimeout, 30 * time.Second},
		{"SyncConcurrency", c.SyncConcurrency, 32},
		{"SyncPendingTTL", c.SyncPendingTTL, 24 * time.Hour},
		{"SyncMaxBackoff", c.SyncMaxBackoff, 5 * time.Minute},
		{"OrphanScanInterval", c.OrphanScanInterval, time.Hour},
		{"OrphanMinAge", c.OrphanMinAge, 24 * time.Hour},
		{"OrphanDelete", c.OrphanDelete, false},
		{"RunHistoryRetention", c.RunHistoryRetention, 168 * time.Hour},
		{"LeaderMaxFailures", c.LeaderMaxFailures, 3},
		{"LockHeartbeat", c.LockHeartbeat, time.Second},
		{"LockTimeout", c.LockTimeout, 10 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.WorkerID == "" || len(c.WorkerID) > 63 {
		t.Errorf("WorkerID default %q", c.WorkerID)
	}
}

func TestLoadValues(t *testing.T) {
	t.Parallel()
	c, err := Load(MapEnv(map[string]string{
		"WORKER_INTERVAL_MS": "250", "WORKER_JOBS": " sync-uploads , scan-orphans ", "HTTP_ADDR": "",
		"SYNC_CONCURRENCY": "8", "SYNC_PENDING_TTL": "90s", "ORPHAN_DELETE": "true", "LOG_LEVEL": "debug",
		"LOG_FORMAT": "json", "WORKER_ID": "replica-1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Interval != 250*time.Millisecond || c.SyncConcurrency != 8 || c.SyncPendingTTL != 90*time.Second ||
		!c.OrphanDelete || c.HTTPAddr != "" || c.WorkerID != "replica-1" || c.LogFormat != "json" {
		t.Errorf("unexpected config %+v", c)
	}
	if strings.Join(c.Jobs, ",") != "sync-uploads,scan-orphans" {
		t.Errorf("Jobs = %q", c.Jobs)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env     map[string]string
		wantVar string
	}{
		{map[string]string{"WORKER_INTERVAL_MS": "abc"}, "WORKER_INTERVAL_MS"},
		{map[string]string{"WORKER_INTERVAL_MS": "0"}, "WORKER_INTERVAL_MS"},
		{map[string]string{"WORKER_INTERVAL_MS": "-5"}, "WORKER_INTERVAL_MS"},
		{map[string]string{"WORKER_INTERVAL_MS": "1.5"}, "WORKER_INTERVAL_MS"},
		{map[string]string{"DATABASE_URL": "postgres://u:p@host:notaport/db"}, "DATABASE_URL"},
		{map[string]string{"DATABASE_URL": "postgres://u:p@h/db?sslmode=bogus"}, "DATABASE_URL"},
		{map[string]string{"WORKER_ID": strings.Repeat("x", 64)}, "WORKER_ID"},
		{map[string]string{"WORKER_ID": "wörker"}, "WORKER_ID"},
		{map[string]string{"WORKER_JOBS": " , "}, "WORKER_JOBS"},
		{map[string]string{"SHUTDOWN_TIMEOUT": "30"}, "SHUTDOWN_TIMEOUT"},
		{map[string]string{"SYNC_CONCURRENCY": "0"}, "SYNC_CONCURRENCY"},
		{map[string]string{"SYNC_PENDING_TTL": "-1h"}, "SYNC_PENDING_TTL"},
		{map[string]string{"ORPHAN_DELETE": "maybe"}, "ORPHAN_DELETE"},
		{map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"R2_ENDPOINT": "localhost:9000"}, "R2_ENDPOINT"},
		{map[string]string{"LOCK_TIMEOUT": "1s", "LOCK_HEARTBEAT": "1s"}, "LOCK_TIMEOUT"},
		// Overflow and range (issue 10).
		{map[string]string{"WORKER_INTERVAL_MS": "9223372036855"}, "WORKER_INTERVAL_MS"},
		{map[string]string{"WORKER_INTERVAL_MS": "99999999999999999999"}, "WORKER_INTERVAL_MS"},
		{map[string]string{"WORKER_INTERVAL_MS": "604800001"}, "WORKER_INTERVAL_MS"},
		{map[string]string{"LOCK_TIMEOUT": "1000h"}, "LOCK_TIMEOUT"},
		{map[string]string{"LOCK_TIMEOUT": "2147483648ms"}, "LOCK_TIMEOUT"},
		{map[string]string{"LOCK_TIMEOUT": "9999999999h"}, "LOCK_TIMEOUT"},
		{map[string]string{"LOCK_HEARTBEAT": "1ns"}, "LOCK_HEARTBEAT"},
		{map[string]string{"LOCK_HEARTBEAT": "99ms"}, "LOCK_HEARTBEAT"},
		{map[string]string{"ORPHAN_SCAN_INTERVAL": "500us"}, "ORPHAN_SCAN_INTERVAL"},
		{map[string]string{"ORPHAN_SCAN_INTERVAL": "999ms"}, "ORPHAN_SCAN_INTERVAL"},
		{map[string]string{"ORPHAN_SCAN_INTERVAL": "169h"}, "ORPHAN_SCAN_INTERVAL"},
		{map[string]string{"SHUTDOWN_TIMEOUT": "500us"}, "SHUTDOWN_TIMEOUT"},
		{map[string]string{"SYNC_PENDING_TTL": "1ns"}, "SYNC_PENDING_TTL"},
		{map[string]string{"SYNC_MAX_BACKOFF": "87601h"}, "SYNC_MAX_BACKOFF"},
		{map[string]string{"ORPHAN_MIN_AGE": "100us"}, "ORPHAN_MIN_AGE"},
		{map[string]string{"RUN_HISTORY_RETENTION": "2562047h"}, "RUN_HISTORY_RETENTION"},
		{map[string]string{"SYNC_CONCURRENCY": "1025"}, "SYNC_CONCURRENCY"},
		{map[string]string{"SYNC_CONCURRENCY": "9223372036854775808"}, "SYNC_CONCURRENCY"},
		{map[string]string{"LEADER_MAX_FAILURES": "0"}, "LEADER_MAX_FAILURES"},
		{map[string]string{"LEADER_MAX_FAILURES": "1001"}, "LEADER_MAX_FAILURES"},
		{map[string]string{"HTTP_ADDR": "8081"}, "HTTP_ADDR"},
		{map[string]string{"HTTP_ADDR": ":65536"}, "HTTP_ADDR"},
		{map[string]string{"HTTP_ADDR": ":-1"}, "HTTP_ADDR"},
		{map[string]string{"HTTP_ADDR": ":http"}, "HTTP_ADDR"},
		{map[string]string{"HTTP_ADDR": "local host:8081"}, "HTTP_ADDR"},
		{map[string]string{"HTTP_ADDR": "[::1:8081"}, "HTTP_ADDR"},
		{map[string]string{"R2_ENDPOINT": "http://user:secret@host:9000"}, "R2_ENDPOINT"},
		{map[string]string{"R2_ENDPOINT": "http://host:9000/?x=1"}, "R2_ENDPOINT"},
		{map[string]string{"DATABASE_URL": "postgres://u:SPACEY SECRET@h/db"}, "DATABASE_URL"},
	}
	for _, tc := range cases {
		t.Run(tc.wantVar+"="+strings.Join(values(tc.env), ","), func(t *testing.T) {
			t.Parallel()
			_, err := Load(MapEnv(tc.env))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load(%v) = %v, want a *config.Error", tc.env, err)
			}
			if ce.Var != tc.wantVar || !strings.HasPrefix(err.Error(), tc.wantVar+": ") {
				t.Errorf("error %q does not name %s", err, tc.wantVar)
			}
		})
	}
}

func TestLoadAcceptsTheBounds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env   map[string]string
		check func(Config) bool
	}{
		{map[string]string{"WORKER_INTERVAL_MS": "1"}, func(c Config) bool { return c.Interval == time.Millisecond }},
		{map[string]string{"WORKER_INTERVAL_MS": "604800000"}, func(c Config) bool { return c.Interval == MaxInterval }},
		{map[string]string{"LOCK_TIMEOUT": "2147483647ms"}, func(c Config) bool { return c.LockTimeout == MaxLockTimeout }},
		{map[string]string{"LOCK_HEARTBEAT": "100ms", "LOCK_TIMEOUT": "201ms"}, func(c Config) bool { return c.LockHeartbeat == MinLockHeartbeat }},
		{map[string]string{"ORPHAN_SCAN_INTERVAL": "1s"}, func(c Config) bool { return c.OrphanScanInterval == time.Second }},
		{map[string]string{"ORPHAN_SCAN_INTERVAL": "168h"}, func(c Config) bool { return c.OrphanScanInterval == MaxInterval }},
		{map[string]string{"SYNC_PENDING_TTL": "87600h"}, func(c Config) bool { return c.SyncPendingTTL == MaxDuration }},
		{map[string]string{"SYNC_CONCURRENCY": "1024"}, func(c Config) bool { return c.SyncConcurrency == 1024 }},
		{map[string]string{"LEADER_MAX_FAILURES": "1000"}, func(c Config) bool { return c.LeaderMaxFailures == 1000 }},
		{map[string]string{"HTTP_ADDR": ":0"}, func(c Config) bool { return c.HTTPAddr == ":0" }},
		{map[string]string{"HTTP_ADDR": "127.0.0.1:65535"}, func(c Config) bool { return c.HTTPAddr == "127.0.0.1:65535" }},
		{map[string]string{"HTTP_ADDR": "[::1]:8081"}, func(c Config) bool { return c.HTTPAddr == "[::1]:8081" }},
		{map[string]string{"HTTP_ADDR": "localhost:8081"}, func(c Config) bool { return c.HTTPAddr == "localhost:8081" }},
		{map[string]string{"HTTP_ADDR": ""}, func(c Config) bool { return c.HTTPAddr == "" }},
		{map[string]string{"R2_ENDPOINT": "http://127.0.0.1:7070/base"}, func(c Config) bool { return c.R2Endpoint == "http://127.0.0.1:7070/base" }},
	}
	for _, tc := range cases {
		t.Run(strings.Join(values(tc.env), ","), func(t *testing.T) {
			t.Parallel()
			c, err := Load(MapEnv(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

// The two examples of issue 10: one line, naming the variable, no secret.
func TestIssueExamples(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env      map[string]string
		wantVar  string
		noSecret string
	}{
		{map[string]string{"DATABASE_URL": "postgres://u:SPACEY SECRET@h/db"}, "DATABASE_URL", "SECRET"},
		{map[string]string{"DATABASE_URL": "postgres://u:p@ss@w0rd@h:port/db"}, "DATABASE_URL", "ss@w0rd"},
		{map[string]string{"WORKER_INTERVAL_MS": "9223372036855"}, "WORKER_INTERVAL_MS", ""},
		{map[string]string{"LOCK_TIMEOUT": "1000h"}, "LOCK_TIMEOUT", ""},
		{map[string]string{"ORPHAN_SCAN_INTERVAL": "500us"}, "ORPHAN_SCAN_INTERVAL", ""},
		{map[string]string{"LOCK_HEARTBEAT": "1ns"}, "LOCK_HEARTBEAT", ""},
		{map[string]string{"HTTP_ADDR": "not-an-address"}, "HTTP_ADDR", ""},
		{map[string]string{"R2_ENDPOINT": "http://user:s3cr3t-value@host"}, "R2_ENDPOINT", "s3cr3t"},
		{map[string]string{"R2_ENDPOINT": "ftp://user:s3cr3t-value@host"}, "R2_ENDPOINT", "s3cr3t"},
		{map[string]string{"R2_ENDPOINT": "user:s3cr3t-value@host"}, "R2_ENDPOINT", "s3cr3t"},
	}
	for _, tc := range cases {
		t.Run(tc.wantVar, func(t *testing.T) {
			t.Parallel()
			_, err := Load(MapEnv(tc.env))
			if err == nil {
				t.Fatalf("Load(%v) accepted", tc.env)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tc.wantVar+": ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %s", msg, tc.wantVar)
			}
			if tc.noSecret != "" && strings.Contains(msg, tc.noSecret) {
				t.Errorf("error %q shows the secret", msg)
			}
		})
	}
}

func TestLoadReportsEveryBadVariable(t *testing.T) {
	t.Parallel()
	_, err := Load(MapEnv(map[string]string{"WORKER_INTERVAL_MS": "abc", "SYNC_CONCURRENCY": "x", "LOG_FORMAT": "xml"}))
	for _, v := range []string{"WORKER_INTERVAL_MS", "SYNC_CONCURRENCY", "LOG_FORMAT"} {
		if err == nil || !strings.Contains(err.Error(), v+":") {
			t.Errorf("error %v does not mention %s", err, v)
		}
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	t.Parallel()
	_, err := Load(MapEnv(map[string]string{"DATABASE_URL": "postgres://user:hunter2@host:badport/db"}))
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password leaked: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"postgres://u:hunter2@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:SPACEY SECRET@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:p@ss@w0rd@h:5432/db?sslmode=require", "postgres://u:xxxxx@h:5432/db?sslmode=require"},
		{"postgres://u:a:b/c?d#e@h/db", "postgres://u:xxxxx@h/db"},
		{"postgresql://bob@h/db", "postgresql://bob@h/db"},
		{"postgres://h:5432/db", "postgres://h:5432/db"},
		{"postgres://h/db?password=hunter2&sslmode=disable", "postgres://h/db?password=xxxxx"},
		{"postgres://u@h/db?sslpassword=hunter2", "postgres://u@h/db?sslpassword=xxxxx"},
		{"postgres://a/b:hunter2@h/db", "postgres://xxxxx@h/db"},
		{"postgres://u:hunter2@h\npostgres://u:hunter2@h", "postgres://u:xxxxx@h"},
		{"host=h password=hunter2 user=u", "host=h password=xxxxx user=u"},
		{"host=h PASSWORD = 'hunter 2' user=u", "host=h PASSWORD = xxxxx user=u"},
		{`host=h password='hun\' ter2' user=u`, "host=h password=xxxxx user=u"},
		{"host=h password='hunter 2", "host=h password=xxxxx"},
		{"cannot parse `postgres://u:hunter2@h:x/db`: invalid port", "cannot parse `postgres://u:xxxxx@h:x/db`: invalid port"},
		{"no secret here", "no secret here"},
		{"", ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			if got := RedactURL(tc.in); got != tc.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRedactEndpoint(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"http://user:secret@host:9000", "http://xxxxx@host:9000"},
		{"http://token@host", "http://xxxxx@host"},
		{"http://user:se@cr et@host/p", "http://xxxxx@host/p"},
		{"user:secret@host", "xxxxx@host"},
		{"http://host:9000", "http://host:9000"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			if got := RedactEndpoint(tc.in); got != tc.want {
				t.Errorf("RedactEndpoint(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRequire(t *testing.T) {
	t.Parallel()
	c, err := Load(MapEnv(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequireDatabase(); err == nil || !strings.HasPrefix(err.Error(), "DATABASE_URL") {
		t.Errorf("RequireDatabase = %v", err)
	}
	err = c.RequireBucket()
	for _, v := range []string{"R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET_NAME"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("RequireBucket = %v, want %s named", err, v)
		}
	}
}

func values(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}
