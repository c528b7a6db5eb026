package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AppDBResult is the "appdb" item (issue 9 item 5): sync-uploads on an application's own
// table of 1,000,000 rows of which 10,000 are PENDING, mapped with UPLOADS_*, without and
// with the partial index the worker recommends, next to the default public.uploads with
// the same 10,000 PENDING uploads, all in one bench run.
//
// It exists because the mapped table is not the worker's: nothing guarantees it has an
// index on its pending rows, and without one every sync run (even an idle tick) reads the
// whole table twice (registration anti-join and the due summary's pending count). The
// item shows what that costs and that the worker's start-up warning names the fix.
type AppDBResult struct {
	Rows        int               `json:"rows"`
	Pending     int               `json:"pending"`
	Table       string            `json:"table"`
	Mapping     map[string]string `json:"mapping"`
	Concurrency int               `json:"concurrency"`
	LatencyMs   float64           `json:"latency_ms"`
	FillSec     float64           `json:"fill_sec"` // INSERT … SELECT, keys, VACUUM ANALYZE
	TableMB     float64           `json:"table_mb"` // heap only

	// IndexStatement is the CREATE INDEX CONCURRENTLY the worker logged at start without
	// the index; the "with" runs use exactly it.
	IndexStatement string  `json:"index_statement"`
	IndexBuildSec  float64 `json:"index_build_sec"` // its first build on the filled table
	// What a `bg-worker run` replica logged at start ("Uploads table lacks an index" lines)
	// and what `bg-worker check` said, without and with the index.
	WarnWithout  []string `json:"start_warnings_without_index"`
	WarnWith     []string `json:"start_warnings_with_index"`
	CheckWithout string   `json:"check_without_index"`
	CheckWith    string   `json:"check_with_index"`
	AdviceOK     bool     `json:"advice_ok"` // warned without, silent with (run and check)

	Trials   int          `json:"trials"`
	IdleReps int          `json:"idle_reps"`
	Variants []AppVariant `json:"variants"`
	Plans    []AppPlan    `json:"plans"`
}

// AppVariant is one table setup: the default table, or the application table without
// or with the pending-rows index.
type AppVariant struct {
	Name  string   `json:"name"` // default | without | with
	Label string   `json:"label"`
	First []AppRun `json:"first_runs"` // 10,000 due: registration, HEADs, writes
	Idle  []AppRun `json:"idle_ticks"` // after a first run: nothing due
	// Medians over First and Idle.
	FirstRunSec, FirstProcessSec, FirstPGCPUSec, FirstStatements, FirstRunStatements, FirstServerMs float64
	IdleRunSec, IdleProcessSec, IdlePGCPUSec, IdleStatements, IdleRunStatements, IdleServerMs       float64
}

// AppRun is one `bg-worker once sync-uploads` process.
type AppRun struct {
	ID            string  `json:"worker_id"`
	RunSec        float64 `json:"run_sec"`     // job_runs: claim to finish, database clock
	ProcessSec    float64 `json:"process_sec"` // the whole once process
	WorkerCPUSec  float64 `json:"worker_cpu_sec"`
	PGCPUSec      float64 `json:"postgres_cpu_sec"`
	Statements    int     `json:"statements"`
	RunStatements int     `json:"run_statements"` // without onceOnly and the start-up checks
	// ServerMsTotal is PostgreSQL's own time for the process's statements
	// (log_min_duration_statement = 0: parse, bind and execute).
	ServerMsTotal  float64          `json:"server_ms"`
	StatementKinds map[string]int   `json:"statement_kinds"`
	Requests       map[string]int64 `json:"requests"`
	Stats          map[string]int64 `json:"stats"`
	MachineBusy    float64          `json:"machine_busy"`
}

// AppPlan is the plan of one of the worker's reads of the application's table.
type AppPlan struct {
	Variant string   `json:"variant"`
	Query   string   `json:"query"`
	SQL     string   `json:"sql"`
	Plan    string   `json:"plan"`
	Scans   []string `json:"scans"` // plan nodes that read the uploads table or its indexes
	ExecMs  float64  `json:"exec_ms"`
}

const (
	appDBName    = "appdb"
	appRows      = 1_000_000
	appPending   = 10_000
	appSyncConc  = 32
	appIdleTicks = "600000" // WORKER_INTERVAL_MS: a missing upload's first backoff is 10 min, so the idle ticks have nothing due
)

// appMapping maps app.media_files the way a Rails/Django application's table would be.
var appMapping = map[string]string{
	"UPLOADS_TABLE":             "app.media_files",
	"UPLOADS_KEY_COLUMN":        "storage_key",
	"UPLOADS_STATUS_COLUMN":     "state",
	"UPLOADS_STATUS_PENDING":    "pending",
	"UPLOADS_STATUS_UPLOADED":   "ready",
	"UPLOADS_STATUS_FAILED":     "error",
	"UPLOADS_CREATED_AT_COLUMN": "created_at",
	"UPLOADS_SIZE_COLUMN":       "byte_size",
	"UPLOADS_UPDATED_AT_COLUMN": "updated_at",
}

// appDB runs the item. Per trial every variant gets a reset table, one first run and
// IdleReps idle ticks; the variants' order alternates between trials so that a drift in
// the machine's load lands on all of them alike.
func (b *bench) appDB(ctx context.Context) (*AppDBResult, error) {
	res := &AppDBResult{Rows: appRows, Pending: appPending, Table: appMapping["UPLOADS_TABLE"], Mapping: appMapping,
		Concurrency: appSyncConc, LatencyMs: float64(b.opts.latency.Microseconds()) / 1000, Trials: 3, IdleReps: 5}
	if b.opts.quick {
		res.Trials, res.IdleReps = 1, 3
	}
	// The pending rows name the throughput objects u/DDD/DDDDDDD (90 % present), in both
	// tables, so the HEADs cost the same and only the database side differs.
	if err := b.ensureObjects(appPending); err != nil {
		return nil, err
	}
	if err := b.pg.CreateDatabase(ctx, appDBName); err != nil {
		return nil, fmt.Errorf("create database %s: %w", appDBName, err)
	}
	appURL := b.pg.URL(appDBName)
	app, err := pgxpool.New(ctx, appURL+"&application_name=bg-bench")
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", appDBName, err)
	}
	defer app.Close()
	t0 := time.Now()
	if err := fillAppTable(ctx, app); err != nil {
		return nil, err
	}
	res.FillSec = time.Since(t0).Seconds()
	if err := app.QueryRow(ctx, `SELECT pg_relation_size('app.media_files') / 1048576.0`).Scan(&res.TableMB); err != nil {
		return nil, fmt.Errorf("table size: %w", err)
	}
	b.logf("appdb: filled app.media_files (%d rows, %d pending, %.0f MB heap) in %.1fs", appRows, appPending, res.TableMB, res.FillSec)

	// Server time per statement, for where the time goes; new sessions only, so the
	// bench's own pools are unaffected.
	for _, db := range []string{appDBName, "bench"} {
		if _, err := app.Exec(ctx, "ALTER DATABASE "+db+" SET log_min_duration_statement = 0"); err != nil {
			return res, fmt.Errorf("log durations in %s: %w", db, err)
		}
	}
	defer func() {
		_, _ = app.Exec(context.WithoutCancel(ctx), "ALTER DATABASE bench RESET log_min_duration_statement")
	}()

	appEnv := map[string]string{"DATABASE_URL": appURL}
	for k, v := range appMapping {
		appEnv[k] = v
	}
	if out, err := b.workerCmd(ctx, "bench-appdb-migrate", appEnv, "migrate"); err != nil {
		return res, fmt.Errorf("bg-worker migrate with the mapping: %w\n%s", err, out)
	}

	// Without the index: the replica's start-up warning gives the statement to create.
	if res.WarnWithout, err = b.startWarnings(ctx, "bench-appdb-warn-without", appEnv); err != nil {
		return res, err
	}
	res.CheckWithout = b.checkIndexLine(ctx, "bench-appdb-check-without", appEnv)
	for _, w := range res.WarnWithout {
		if i := strings.Index(w, "CREATE INDEX CONCURRENTLY"); i >= 0 && res.IndexStatement == "" {
			res.IndexStatement = w[i:]
		}
	}
	if res.IndexStatement == "" {
		return res, fmt.Errorf("a replica on the 1M-row table without an index logged no CREATE INDEX statement (warnings: %q; check: %q)", res.WarnWithout, res.CheckWithout)
	}
	b.logf("appdb: the worker recommends %s", res.IndexStatement)
	t0 = time.Now()
	if _, err := app.Exec(ctx, res.IndexStatement); err != nil {
		return res, fmt.Errorf("%s: %w", res.IndexStatement, err)
	}
	res.IndexBuildSec = time.Since(t0).Seconds()
	if res.WarnWith, err = b.startWarnings(ctx, "bench-appdb-warn-with", appEnv); err != nil {
		return res, err
	}
	res.CheckWith = b.checkIndexLine(ctx, "bench-appdb-check-with", appEnv)
	res.AdviceOK = len(res.WarnWith) == 0 && strings.HasPrefix(res.CheckWithout, "PROBLEM") && strings.HasPrefix(res.CheckWith, "ok")
	b.logf("appdb: index built in %.2fs; start-up warnings without %d, with %d; check without %q, with %q",
		res.IndexBuildSec, len(res.WarnWithout), len(res.WarnWith), res.CheckWithout, res.CheckWith)

	variants := []*AppVariant{
		{Name: "default", Label: "default public.uploads (10,000 rows, all PENDING; its own partial index)"},
		{Name: "without", Label: "app.media_files, 1M rows, without the partial index"},
		{Name: "with", Label: "app.media_files, 1M rows, with the partial index"},
	}
	for t := range res.Trials {
		order := []*AppVariant{variants[0], variants[1], variants[2]}
		if t%2 == 1 {
			order = []*AppVariant{variants[2], variants[1], variants[0]}
		}
		for _, v := range order {
			pool, env := app, appEnv
			reset := func() error { return resetAppTable(ctx, app) }
			if v.Name == "default" {
				pool, env = b.db, map[string]string{}
				reset = func() error { return b.resetDefaultTable(ctx) }
			} else if err := b.setPendingIndex(ctx, app, v.Name == "with", res.IndexStatement); err != nil {
				return res, err
			}
			if err := reset(); err != nil {
				return res, err
			}
			if t == 0 {
				// The registration's plan, then a fresh reset: its rolled-back rows would
				// otherwise be dead tuples in upload_checks during trial 1 only.
				pl, err := registrationPlan(ctx, pool, v.Name)
				if err != nil {
					return res, err
				}
				res.Plans = append(res.Plans, pl)
				if err := reset(); err != nil {
					return res, err
				}
			}
			env["SYNC_CONCURRENCY"] = strconv.Itoa(appSyncConc)
			env["WORKER_INTERVAL_MS"] = appIdleTicks
			first, err := b.appRun(ctx, pool, fmt.Sprintf("bench-appdb-%s-first%d", v.Name, t+1), env)
			if err != nil {
				return res, err
			}
			if got := first.Stats["checked"]; got != appPending {
				return res, fmt.Errorf("%s: checked %d of %d uploads (stats %v)", first.ID, got, appPending, first.Stats)
			}
			v.First = append(v.First, first)
			for k := range res.IdleReps {
				idle, err := b.appRun(ctx, pool, fmt.Sprintf("bench-appdb-%s-idle%d-%d", v.Name, t+1, k+1), env)
				if err != nil {
					return res, err
				}
				if idle.Stats["due"] != 0 || idle.Stats["registered"] != 0 {
					return res, fmt.Errorf("%s: an idle tick found work (stats %v)", idle.ID, idle.Stats)
				}
				v.Idle = append(v.Idle, idle)
			}
			if t == 0 {
				plans, err := capturePlans(ctx, pool, v.Name)
				if err != nil {
					return res, err
				}
				res.Plans = append(res.Plans, plans...)
			}
		}
	}
	for _, v := range variants {
		res.Variants = append(res.Variants, *v)
	}
	res.summarize()
	w, wi := res.variant("without"), res.variant("with")
	b.logf("appdb: first run %.2fs without the index, %.2fs with (%.2f×); idle tick %.1f ms without, %.1f ms with (%.2f×)",
		w.FirstRunSec, wi.FirstRunSec, ratio(w.FirstRunSec, wi.FirstRunSec), 1000*w.IdleRunSec, 1000*wi.IdleRunSec, ratio(w.IdleRunSec, wi.IdleRunSec))
	return res, nil
}

// fillAppTable creates an application's media table as an ORM would (uuid ids, an enum
// state, a unique key) and fills it set-based: 990,000 old rows (ready, 1 % error) and the
// 10,000 newest PENDING, as an application whose uploads are pending only briefly has
// them: at the end of the heap. The worker's role is the superuser here; the grants are
// tested elsewhere (internal/jobs TestApplicationTables).
func fillAppTable(ctx context.Context, db *pgxpool.Pool) error {
	stmts := []string{
		`CREATE SCHEMA app`,
		`CREATE TYPE app.media_state AS ENUM ('pending', 'ready', 'error')`,
		`CREATE TABLE app.media_files (
			id          uuid             NOT NULL DEFAULT gen_random_uuid(),
			owner_id    bigint           NOT NULL,
			storage_key text             NOT NULL,
			filename    text             NOT NULL,
			state       app.media_state  NOT NULL DEFAULT 'pending',
			byte_size   bigint,
			created_at  timestamptz      NOT NULL DEFAULT now(),
			updated_at  timestamptz      NOT NULL DEFAULT now())`,
		fmt.Sprintf(`INSERT INTO app.media_files (owner_id, storage_key, filename, state, byte_size, created_at, updated_at)
			SELECT i %% 5000,
			       CASE WHEN i < %[1]d THEN 'media/' || (i %% 5000) || '/' || i || '.jpg'
			            ELSE 'u/' || lpad(((i - %[1]d) / 1000)::text, 3, '0') || '/' || lpad((i - %[1]d)::text, 7, '0') END,
			       'IMG_' || i || '.jpg',
			       CASE WHEN i >= %[1]d THEN 'pending' WHEN i %% 100 = 7 THEN 'error' ELSE 'ready' END::app.media_state,
			       CASE WHEN i < %[1]d AND i %% 100 <> 7 THEN 100000 + i END,
			       now() - (%[2]d - i) * interval '20 ms',
			       now() - (%[2]d - i) * interval '20 ms'
			FROM generate_series(0, %[2]d - 1) AS i`, appRows-appPending, appRows),
		`ALTER TABLE app.media_files ADD PRIMARY KEY (id)`,
		`ALTER TABLE app.media_files ADD CONSTRAINT media_files_storage_key_key UNIQUE (storage_key)`,
		`CREATE INDEX media_files_owner_id_idx ON app.media_files (owner_id)`,
		`VACUUM ANALYZE app.media_files`,
		`CHECKPOINT`,
	}
	for _, s := range stmts {
		if _, err := db.Exec(ctx, s); err != nil {
			return fmt.Errorf("fill app.media_files: %s: %w", firstLine(s), err)
		}
	}
	return nil
}

// resetAppTable puts the 10,000 u/ rows back to pending and forgets the worker's state of
// them, so every first run registers and checks the same uploads.
func resetAppTable(ctx context.Context, db *pgxpool.Pool) error {
	for _, s := range []string{
		`UPDATE app.media_files SET state = 'pending', byte_size = NULL, updated_at = created_at
			WHERE state <> 'pending' AND starts_with(storage_key, 'u/')`,
		`TRUNCATE bg_worker.upload_checks`,
		`VACUUM ANALYZE app.media_files`,
		`VACUUM ANALYZE bg_worker.upload_checks`,
		`CHECKPOINT`,
	} {
		if _, err := db.Exec(ctx, s); err != nil {
			return fmt.Errorf("reset app.media_files: %s: %w", firstLine(s), err)
		}
	}
	return nil
}

// resetDefaultTable fills the default table with the same 10,000 PENDING uploads. (It
// does not use seedUploads: the default table has no next_check_at any more.)
func (b *bench) resetDefaultTable(ctx context.Context) error {
	for _, s := range []string{
		`TRUNCATE public.uploads RESTART IDENTITY`,
		`TRUNCATE bg_worker.upload_checks`,
		fmt.Sprintf(`INSERT INTO public.uploads (object_key, created_at)
			SELECT 'u/' || lpad((i / 1000)::text, 3, '0') || '/' || lpad(i::text, 7, '0'), now() - (%d - i) * interval '20 ms'
			FROM generate_series(0, %d - 1) AS i`, appPending, appPending),
		`VACUUM ANALYZE public.uploads`,
		`VACUUM ANALYZE bg_worker.upload_checks`,
		`CHECKPOINT`,
	} {
		if _, err := b.db.Exec(ctx, s); err != nil {
			return fmt.Errorf("reset public.uploads: %s: %w", firstLine(s), err)
		}
	}
	return nil
}

// setPendingIndex creates the recommended index (with the worker's own statement) or
// drops every partial index of app.media_files.
func (b *bench) setPendingIndex(ctx context.Context, db *pgxpool.Pool, want bool, stmt string) error {
	rows, err := db.Query(ctx, `SELECT indexrelid::regclass::text FROM pg_index
		WHERE indrelid = 'app.media_files'::regclass AND indpred IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("list partial indexes: %w", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list partial indexes: %w", err)
	}
	if want && len(have) == 0 {
		if _, err := db.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	if !want {
		for _, ix := range have {
			if _, err := db.Exec(ctx, "DROP INDEX CONCURRENTLY "+ix); err != nil {
				return fmt.Errorf("drop index %s: %w", ix, err)
			}
		}
	}
	return nil
}

// appRun runs `bg-worker once sync-uploads` and reads its run row from pool's database.
func (b *bench) appRun(ctx context.Context, pool *pgxpool.Pool, id string, env map[string]string) (AppRun, error) {
	r := AppRun{ID: id}
	res, err := b.measureOnce(ctx, id, b.opts.latency, env)
	if err != nil {
		return r, err
	}
	var secs float64
	var status string
	if err := pool.QueryRow(ctx, `SELECT status, extract(epoch FROM finished_at - started_at)::float8, stats
		FROM bg_worker.job_runs WHERE worker_id = $1 AND job = 'sync-uploads' ORDER BY id DESC LIMIT 1`, id).
		Scan(&status, &secs, &r.Stats); err != nil {
		return r, fmt.Errorf("run row of %s: %w", id, err)
	}
	if status != "succeeded" {
		return r, fmt.Errorf("%s: run %s (stats %v)", id, status, r.Stats)
	}
	r.RunSec, r.ProcessSec = secs, res.wall.Seconds()
	r.WorkerCPUSec, r.PGCPUSec = res.cpu.Seconds(), res.pgCPU.Seconds()
	r.MachineBusy = busyFraction(res.machine0, res.machine1)
	r.Requests = b.reqs.snapshot()
	if sc := res.counts[id]; sc != nil {
		r.Statements, r.StatementKinds = sc.Total, sc.ByKind
	}
	r.recount()
	if r.ServerMsTotal, err = serverTime(b.stmts.path, res.logFrom, b.stmts.offset(), id); err != nil {
		return r, err
	}
	b.logf("%s: run %.3fs, process %.2fs, %d HEAD, %d statements (run %d), postgres CPU %.3fs, worker CPU %.2fs, machine busy %.0f%%",
		id, r.RunSec, r.ProcessSec, r.Requests[opHeadObject], r.Statements, r.RunStatements, r.PGCPUSec, r.WorkerCPUSec, 100*r.MachineBusy)
	return r, nil
}

// recount leaves out onceOnly and the start-up checks `once` (like a replica at start)
// makes since the mapping landed: schema access and the installed mapping's fingerprint.
func (r *AppRun) recount() { r.RunStatements = runStatements(r.Statements, r.StatementKinds) }

// startupCheck matches the two start-up checks as results files written before sqlKind
// named them (schema:access, schema:fingerprint, in onceOnly) classified them.
func startupCheck(kind string) bool {
	return strings.HasPrefix(kind, "other:SELECT fingerprint") || strings.HasPrefix(kind, "other:SELECT n.name, n.oid IS NOT NULL")
}

// serverTime sums PostgreSQL's "duration:" lines of application app between two log
// offsets: parse, bind and execute as the server timed them. The item turns
// log_min_duration_statement on for its two databases; stmtLog ignores these lines, so
// the statement counts are unchanged. With log_statement = all an execute's duration
// line does not repeat the statement, and the log names no backend, so the time of
// concurrent sessions cannot be told apart by statement: only the total is kept.
func serverTime(path string, from, to int64, app string) (float64, error) {
	var total float64
	err := readLog(path, from, to, func(r io.Reader) (err error) {
		total, err = sumDurations(r, app)
		return err
	})
	return total, err
}

// sumDurations sums the milliseconds of application app's "duration:" lines.
func sumDurations(r io.Reader, app string) (float64, error) {
	var total float64
	prefix := logPrefix + app + "|LOG:  duration: "
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, " ms")
		if v, err := strconv.ParseFloat(num, 64); err == nil {
			total += v
		}
	}
	return total, sc.Err()
}

// workerCmd runs a bg-worker command to completion and returns its output.
func (b *bench) workerCmd(ctx context.Context, id string, env map[string]string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Env = b.workerEnv(id, benchBucket, env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// checkIndexLine is `bg-worker check`'s line about the uploads table's indexes.
func (b *bench) checkIndexLine(ctx context.Context, id string, env map[string]string) string {
	out, _ := b.workerCmd(ctx, id, env, "check") // exits 1 when it finds a problem
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.Contains(l, "uploads table has the indexes") {
			return strings.TrimSpace(l)
		}
		if strings.HasPrefix(l, "PROBLEM  uploads table:") {
			s := strings.TrimSpace(l)
			if i+1 < len(lines) {
				s += " " + strings.TrimSpace(lines[i+1])
			}
			return s
		}
	}
	return "no index line in: " + strings.TrimSpace(out)
}

// startWarnings starts a `bg-worker run` replica (job prune-runs, a 10-minute tick: it
// only has to start) and returns the index warnings it logs at start, as "why sql".
func (b *bench) startWarnings(ctx context.Context, id string, env map[string]string) ([]string, error) {
	extra := map[string]string{"WORKER_JOBS": "prune-runs", "WORKER_INTERVAL_MS": "600000", "LOG_FORMAT": "json"}
	for k, v := range env {
		extra[k] = v
	}
	p, err := b.startReplica(b.bin, id, benchBucket, extra)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	defer p.stop()
	// The warnings follow the "Uploads table" line: the two EXPLAINs run before the
	// scheduler starts. Wait for that line, then for the next line that is not a warning.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var warns []string
		seen, after := false, false
		if f, err := os.Open(p.log); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var e struct {
					Msg string `json:"msg"`
					SQL string `json:"sql"`
				}
				if json.Unmarshal(sc.Bytes(), &e) != nil {
					continue
				}
				switch {
				case e.Msg == "Uploads table":
					seen = true
				case strings.Contains(e.Msg, "lacks an index"):
					warns = append(warns, e.Msg+" "+e.SQL)
				case seen:
					after = true
				}
			}
			f.Close()
		}
		if after {
			return warns, nil
		}
		if !p.alive() {
			return nil, fmt.Errorf("%s exited at start: %s", id, tailFile(p.log))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s: no start-up line after \"Uploads table\" within 30s: %s", id, tailFile(p.log))
}

func tailFile(path string) string {
	data, _ := os.ReadFile(path)
	s := string(data)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// registrationPlan explains the first run's registration, the INSERT … SELECT that
// registers all 10,000 PENDING uploads, in a transaction it rolls back (a copy of the
// sqlc query UploadCheckRegister with prefix ”).
func registrationPlan(ctx context.Context, db *pgxpool.Pool, variant string) (AppPlan, error) {
	const q = `INSERT INTO bg_worker.upload_checks (upload_id)
  SELECT p.upload_id FROM bg_worker.uploads_pending p
  LEFT JOIN bg_worker.upload_checks c ON c.upload_id = p.upload_id
  WHERE starts_with(p.object_key, '') AND (c.upload_id IS NULL OR c.resolved_at IS NOT NULL)
  ON CONFLICT (upload_id) DO UPDATE SET first_seen_at = now()`
	p := AppPlan{Variant: variant, Query: "registration INSERT (first run, 10k new)", SQL: q}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+q)
		if err != nil {
			return err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		p.fill(lines)
		return errRollback
	})
	if err != nil && !errors.Is(err, errRollback) {
		return p, fmt.Errorf("explain registration: %w", err)
	}
	return p, nil
}

var errRollback = errors.New("roll back")

// fill sets the plan text, the scans of the uploads table and the execution time.
func (p *AppPlan) fill(lines []string) {
	p.Plan = strings.Join(lines, "\n")
	for _, l := range lines {
		s := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "->"))
		if i := strings.Index(s, " (actual"); i >= 0 {
			s = s[:i]
		}
		if strings.Contains(s, "Scan") && (strings.Contains(s, "media_files") || strings.Contains(s, "uploads")) {
			p.Scans = append(p.Scans, s)
		}
	}
	if m := execTimeRE.FindStringSubmatch(p.Plan); m != nil {
		p.ExecMs, _ = strconv.ParseFloat(m[1], 64)
	}
}

var execTimeRE = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)

// capturePlans explains (and runs) the worker's reads of the uploads table: the pending
// count of the due summary, the registration's anti-join (its SELECT part), and one due
// page. Taken after the idle ticks, when 1,000 uploads (the missing objects) are still
// PENDING with a backoff: the page is asked as of a day later so that they are due.
func capturePlans(ctx context.Context, db *pgxpool.Pool, variant string) ([]AppPlan, error) {
	var maxSeq int64
	if err := db.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM bg_worker.upload_checks`).Scan(&maxSeq); err != nil {
		return nil, fmt.Errorf("max seq: %w", err)
	}
	queries := []struct{ name, sql string }{
		{"pending count", `SELECT count(*) FROM bg_worker.uploads_pending`},
		{"registration anti-join", `SELECT p.upload_id FROM bg_worker.uploads_pending p
  LEFT JOIN bg_worker.upload_checks c ON c.upload_id = p.upload_id
  WHERE starts_with(p.object_key, '') AND (c.upload_id IS NULL OR c.resolved_at IS NOT NULL)`},
		{"due page", fmt.Sprintf(`SELECT seq, upload_id, object_key, created_at, check_count FROM bg_worker.uploads_due
  WHERE seq > 0 AND seq <= %d AND next_check_at <= now() + interval '1 day' AND starts_with(object_key, '')
  ORDER BY seq LIMIT 1000`, maxSeq)},
	}
	var out []AppPlan
	for _, q := range queries {
		rows, err := db.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+q.sql)
		if err != nil {
			return nil, fmt.Errorf("explain %s: %w", q.name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("explain %s: %w", q.name, err)
		}
		p := AppPlan{Variant: variant, Query: q.name, SQL: q.sql}
		p.fill(lines)
		out = append(out, p)
	}
	return out, nil
}

func (res *AppDBResult) variant(name string) AppVariant {
	for _, v := range res.Variants {
		if v.Name == name {
			return v
		}
	}
	return AppVariant{}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (res *AppDBResult) summarize() {
	med := func(runs []AppRun, f func(AppRun) float64) float64 {
		xs := make([]float64, 0, len(runs))
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	for i := range res.Variants {
		v := &res.Variants[i]
		for j := range v.First {
			v.First[j].recount()
		}
		for j := range v.Idle {
			v.Idle[j].recount()
		}
		v.FirstRunSec = med(v.First, func(r AppRun) float64 { return r.RunSec })
		v.FirstProcessSec = med(v.First, func(r AppRun) float64 { return r.ProcessSec })
		v.FirstPGCPUSec = med(v.First, func(r AppRun) float64 { return r.PGCPUSec })
		v.FirstStatements = med(v.First, func(r AppRun) float64 { return float64(r.Statements) })
		v.FirstRunStatements = med(v.First, func(r AppRun) float64 { return float64(r.RunStatements) })
		v.FirstServerMs = med(v.First, func(r AppRun) float64 { return r.ServerMsTotal })
		v.IdleServerMs = med(v.Idle, func(r AppRun) float64 { return r.ServerMsTotal })
		v.IdleRunSec = med(v.Idle, func(r AppRun) float64 { return r.RunSec })
		v.IdleProcessSec = med(v.Idle, func(r AppRun) float64 { return r.ProcessSec })
		v.IdlePGCPUSec = med(v.Idle, func(r AppRun) float64 { return r.PGCPUSec })
		v.IdleStatements = med(v.Idle, func(r AppRun) float64 { return float64(r.Statements) })
		v.IdleRunStatements = med(v.Idle, func(r AppRun) float64 { return float64(r.RunStatements) })
	}
}

// planSeqScans reports whether any captured plan of variant reads the table sequentially.
func (res *AppDBResult) planSeqScans(variant, query string) bool {
	for _, p := range res.Plans {
		if p.Variant == variant && p.Query == query {
			for _, s := range p.Scans {
				if strings.HasPrefix(s, "Seq Scan") {
					return true
				}
			}
		}
	}
	return false
}

func (res *AppDBResult) goals() []Goal {
	res.summarize()
	w, wi, d := res.variant("without"), res.variant("with"), res.variant("default")
	if len(w.First) == 0 || len(wi.First) == 0 {
		return nil
	}
	item := "7 app table"
	size := fmt.Sprintf("%s rows, %s PENDING", human(float64(res.Rows)), kfmt(res.Pending))
	gs := []Goal{
		{Item: item, Measure: fmt.Sprintf("first sync run (%s due, C=%d, L=%.0fms), without ÷ with the partial index", kfmt(res.Pending), res.Concurrency, res.LatencyMs),
			Value:   fmt.Sprintf("%.2f s, %.0f statements (run)", w.FirstRunSec, w.FirstRunStatements),
			Against: fmt.Sprintf("with: %.2f s, %.0f statements; default table %.2f s", wi.FirstRunSec, wi.FirstRunStatements, d.FirstRunSec),
			Ratio:   ratio(w.FirstRunSec, wi.FirstRunSec), Goal: "(info)"},
		{Item: item, Measure: fmt.Sprintf("idle sync tick (%s, nothing due), without ÷ with the partial index", size),
			Value:   fmt.Sprintf("%.1f ms, %.0f statements (run)", 1000*w.IdleRunSec, w.IdleRunStatements),
			Against: fmt.Sprintf("with: %.1f ms, %.0f statements; default table %.1f ms", 1000*wi.IdleRunSec, wi.IdleRunStatements, 1000*d.IdleRunSec),
			Ratio:   ratio(w.IdleRunSec, wi.IdleRunSec), Goal: "(info)"},
		{Item: item, Measure: "a due page is an index scan on the application's table (with and without the partial index)",
			Value: scanSummary(res, "without", "due page"), Against: scanSummary(res, "with", "due page"),
			Goal: "no Seq Scan", Met: !res.planSeqScans("without", "due page") && !res.planSeqScans("with", "due page"), HasLimit: true},
		{Item: item, Measure: "start-up warning with the CREATE INDEX statement: logged without the index, not with it",
			Value:   fmt.Sprintf("%d warning(s) without, %d with", len(res.WarnWithout), len(res.WarnWith)),
			Against: "`bg-worker check`: " + checkWord(res.CheckWithout) + " without, " + checkWord(res.CheckWith) + " with",
			Goal:    "warned only without", Met: res.AdviceOK, HasLimit: true},
	}
	return gs
}

func checkWord(s string) string {
	if i := strings.IndexByte(s, ' '); i > 0 {
		return s[:i]
	}
	return s
}

func scanSummary(res *AppDBResult, variant, query string) string {
	for _, p := range res.Plans {
		if p.Variant == variant && p.Query == query {
			return strings.Join(p.Scans, "; ")
		}
	}
	return "–"
}

func (res *AppDBResult) markdown() string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	res.summarize()
	p("### 7. Application table: %s rows, %s PENDING (`%s`, mapped with UPLOADS_*; C = %d, L = %.0f ms; %d trial(s), %d idle ticks each, medians)\n\n",
		human(float64(res.Rows)), kfmt(res.Pending), res.Table, res.Concurrency, res.LatencyMs, res.Trials, res.IdleReps)
	p("Table filled in %.1f s (%.0f MB heap). The worker's start-up warning without the index: %q. Built with exactly that statement in %.2f s. `bg-worker check` without: %q; with: %q.\n\n",
		res.FillSec, res.TableMB, strings.Join(res.WarnWithout, " | "), res.IndexBuildSec, res.CheckWithout, res.CheckWith)
	p("| table | first run s | process s | server ms | postgres CPU s | statements run (whole) | idle tick run ms | process s | server ms | postgres CPU ms | statements run (whole) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range res.Variants {
		p("| %s | %.2f | %.2f | %.0f | %.3f | %.0f (%.0f) | %.1f | %.2f | %.1f | %.0f | %.0f (%.0f) |\n", v.Label, v.FirstRunSec, v.FirstProcessSec, v.FirstServerMs, v.FirstPGCPUSec,
			v.FirstRunStatements, v.FirstStatements, 1000*v.IdleRunSec, v.IdleProcessSec, v.IdleServerMs, 1000*v.IdlePGCPUSec, v.IdleRunStatements, v.IdleStatements)
	}
	wo, wi, d := res.variant("without"), res.variant("with"), res.variant("default")
	p("\nRatios (medians): without ÷ with the index: first run %.2f×, its postgres CPU %.2f×; idle tick %.2f×, its postgres CPU %.2f×; statements %.2f× (first) and %.2f× (idle). With the index ÷ default table: first run %.2f×, idle tick %.2f×.\n\n",
		ratio(wo.FirstRunSec, wi.FirstRunSec), ratio(wo.FirstPGCPUSec, wi.FirstPGCPUSec), ratio(wo.IdleRunSec, wi.IdleRunSec), ratio(wo.IdlePGCPUSec, wi.IdlePGCPUSec),
		ratio(wo.FirstRunStatements, wi.FirstRunStatements), ratio(wo.IdleRunStatements, wi.IdleRunStatements),
		ratio(wi.FirstRunSec, d.FirstRunSec), ratio(wi.IdleRunSec, d.IdleRunSec))
	if len(wi.First) > 0 {
		p("Statements of the first run with the index (trial 1): %s.", kindsLine(wi.First[0].StatementKinds))
	}
	if len(wi.Idle) > 0 {
		p(" Of an idle tick: %s.", kindsLine(wi.Idle[0].StatementKinds))
	}
	p("\n\n| table | query | scans of the uploads table (EXPLAIN ANALYZE) | execution ms |\n|---|---|---|---|\n")
	plans := append([]AppPlan(nil), res.Plans...)
	rank := map[string]int{"without": 0, "with": 1, "default": 2}
	sort.SliceStable(plans, func(i, j int) bool { return rank[plans[i].Variant] < rank[plans[j].Variant] })
	for _, pl := range plans {
		p("| %s | %s | %s | %.1f |\n", pl.Variant, pl.Query, strings.Join(pl.Scans, "; "), pl.ExecMs)
	}
	p("\n")
	return w.String()
}
