package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestBadConfigExitsTwoNamingTheVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args    []string
		env     map[string]string
		wantVar []string
	}{
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "WORKER_INTERVAL_MS": "abc"}, []string{"WORKER_INTERVAL_MS"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "WORKER_INTERVAL_MS": "0"}, []string{"WORKER_INTERVAL_MS"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "WORKER_INTERVAL_MS": "-5"}, []string{"WORKER_INTERVAL_MS"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:secret@h:port/db"}, []string{"DATABASE_URL"}},
		{nil, map[string]string{}, []string{"DATABASE_URL"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "WORKER_JOBS": "sync-uploads,nope"}, []string{"WORKER_JOBS"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:SPACEY secret@h/db", "WORKER_INTERVAL_MS": "0"}, []string{"WORKER_INTERVAL_MS"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "WORKER_INTERVAL_MS": "9223372036855"}, []string{"WORKER_INTERVAL_MS"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "LOCK_TIMEOUT": "1000h"}, []string{"LOCK_TIMEOUT"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "LOCK_HEARTBEAT": "1ns"}, []string{"LOCK_HEARTBEAT"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "ORPHAN_SCAN_INTERVAL": "500us"}, []string{"ORPHAN_SCAN_INTERVAL"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "HTTP_ADDR": ":99999"}, []string{"HTTP_ADDR"}},
		{nil, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "R2_ENDPOINT": "http://user:secret@host"}, []string{"R2_ENDPOINT"}},
		{[]string{"pause"}, map[string]string{"DATABASE_URL": "postgres://u:p@h/db"}, []string{"usage"}},
		{[]string{"resume", "sync-uploads", "--nope"}, map[string]string{"DATABASE_URL": "postgres://u:p@h/db"}, []string{"-nope"}},
		{[]string{"run"}, map[string]string{"DATABASE_URL": "postgres://u:p@h/db", "SYNC_CONCURRENCY": "x", "LOG_FORMAT": "xml"}, []string{"SYNC_CONCURRENCY", "LOG_FORMAT"}},
		{[]string{"migrate"}, map[string]string{}, []string{"DATABASE_URL"}},
		{[]string{"bogus"}, map[string]string{}, []string{"unknown command"}},
		{[]string{"status", "--nope"}, map[string]string{}, []string{"-nope"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.wantVar, "+"), func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, envOf(tc.env), &stdout, &stderr)
			code := exitCode(err, &stderr)
			if code != exitUsage {
				t.Fatalf("exit %d, want 2 (err %v)", code, err)
			}
			for _, v := range tc.wantVar {
				if !strings.Contains(stderr.String(), v) {
					t.Errorf("stderr does not name %s:\n%s", v, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "secret") {
				t.Errorf("password on stderr: %s", stderr.String())
			}
		})
	}
}

func TestJobsListsSyncUploads(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"jobs"}, envOf(nil), &stdout, &stderr); err != nil {
		t.Fatal(err, stderr.String())
	}
	for _, want := range []string{"sync-uploads", "5s", "prune-runs"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("jobs output lacks %q:\n%s", want, stdout.String())
		}
	}
}
