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
	for _, in := range []string{"postgres://u:hunter2@h/db", "host=h password=hunter2 user=u"} {
		if out := RedactURL(in); strings.Contains(out, "hunter2") {
			t.Errorf("RedactURL(%q) = %q", in, out)
		}
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
