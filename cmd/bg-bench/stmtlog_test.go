package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestSQLKind(t *testing.T) {
	for _, tc := range []struct{ sql, want string }{
		{"BEGIN", "tx:begin"},
		{"begin isolation level read committed", "tx:begin"},
		{"commit", "tx:commit"},
		{" ROLLBACK ", "tx:rollback"},
		{"-- ping", "pool:ping"},
		{"-- name: JobRunClaim :one\nINSERT INTO job_runs", "JobRunClaim"},
		{"-- name: WorkerJobRegister :exec", "WorkerJobRegister"},
		{"SELECT pg_try_advisory_lock($1)", "lock:try"},
		{"SELECT pg_advisory_unlock($1)", "lock:unlock"},
		{"UPDATE worker_lock_holders SET seen = now() WHERE pg_backend_pid() = $3", "lock:heartbeat"},
		{"SELECT 1 FROM job_runs r WHERE id = $1 FOR SHARE OF r", "fence:check"},
		{"LISTEN bg_worker_run_request", "listen"},
		{"SELECT pg_notify($1, $2)", "notify"},
		{"SELECT fingerprint FROM bg_worker.upload_mapping", "schema:fingerprint"},
		{"SELECT n.oid IS NOT NULL, has_schema_privilege(n.oid, 'USAGE')", "schema:access"},
		{"SELECT * FROM worker_lock_holders", "status:holders"},
		{"SELECT max(version) FROM schema_migrations", "schema:version"},
		{"SELECT 42\nFROM somewhere", "other:SELECT 42"},
		{"SELECT " + strings.Repeat("x", 100), "other:SELECT " + strings.Repeat("x", 41)},
	} {
		if got := sqlKind(tc.sql); got != tc.want {
			t.Errorf("sqlKind(%q) = %q, want %q", tc.sql, got, tc.want)
		}
	}
}

func TestParseStmtLog(t *testing.T) {
	log := strings.Join([]string{
		"a line before any entry: ignored",
		"BGB|w1|LOG:  statement: BEGIN",
		"BGB|w1|LOG:  execute stmtcache_1: -- name: JobRunClaim :one",
		"INSERT INTO job_runs (job)", // continuation line of the same statement
		"VALUES ($1)",
		"BGB|w1|DETAIL:  parameters: $1 = 'sync-uploads'", // not a statement; ends the previous one
		"BGB|w2|LOG:  statement: SELECT pg_try_advisory_lock($1)",
		"BGB|w2|LOG:  duration: 0.120 ms", // timed, not counted
		"BGB|malformed",
		"no prefix after a non-statement: ignored",
		"BGB|w1|LOG:  execute <unnamed>: commit",
	}, "\n")
	got, err := parseStmtLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*stmtCounts{
		"w1": {Total: 3, ByKind: map[string]int{"tx:begin": 1, "JobRunClaim": 1, "tx:commit": 1}},
		"w2": {Total: 1, ByKind: map[string]int{"lock:try": 1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseStmtLog = %+v, want %+v", show(got), show(want))
	}
}

func show(m map[string]*stmtCounts) map[string]stmtCounts {
	out := map[string]stmtCounts{}
	for k, v := range m {
		out[k] = *v
	}
	return out
}

func TestSumDurations(t *testing.T) {
	log := strings.Join([]string{
		"BGB|w1|LOG:  duration: 1.500 ms",
		"BGB|w1|LOG:  duration: 0.250 ms  execute <unnamed>: SELECT 1",
		"BGB|w2|LOG:  duration: 100.000 ms", // another application
		"BGB|w1|LOG:  statement: SELECT 1",
		"BGB|w1|LOG:  duration: bogus ms",
	}, "\n")
	got, err := sumDurations(strings.NewReader(log), "w1")
	if err != nil {
		t.Fatal(err)
	}
	if got != 1.75 {
		t.Errorf("sumDurations = %v, want 1.75", got)
	}
}

func TestKindsSortedAndLine(t *testing.T) {
	kinds := map[string]int{"b": 2, "a": 2, "c": 5, "d": 1}
	if got, want := kindsSorted(kinds), []string{"c", "a", "b", "d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("kindsSorted = %v, want %v", got, want)
	}
	if got, want := kindsLine(kinds), "c 5, a 2, b 2, d 1"; got != want {
		t.Errorf("kindsLine = %q, want %q", got, want)
	}
	if got := kindsLine(nil); got != "" {
		t.Errorf("kindsLine(nil) = %q", got)
	}
}

func TestRunStatements(t *testing.T) {
	kinds := map[string]int{
		"JobRunStartManual": 1, "UploadsDuePage": 10, // the run's own
		"lock:try": 1, "lock:unlock": 1, "listen": 1, "schema:version": 1, "WorkerJobRegister": 2, // once only
		"other:SELECT fingerprint FROM x": 1, "other:SELECT n.name, n.oid IS NOT NULL": 1, // start-up checks of older files
	}
	total := 0
	for _, n := range kinds {
		total += n
	}
	if got := runStatements(total, kinds); got != 11 {
		t.Errorf("runStatements = %d, want 11", got)
	}
	r := SyncRun{Statements: total, StatementKinds: kinds, Stats: map[string]int64{"checked": 2000}}
	r.recount()
	if r.RunStatements != 11 || r.StatementsPer1k != float64(total)/2 || r.RunStatementsPer1k != 5.5 {
		t.Errorf("recount: %d statements, %.2f/1k, run %.2f/1k", r.RunStatements, r.StatementsPer1k, r.RunStatementsPer1k)
	}
	a := AppRun{Statements: total, StatementKinds: kinds}
	a.recount()
	if a.RunStatements != 11 {
		t.Errorf("AppRun.recount: %d, want 11", a.RunStatements)
	}
}
