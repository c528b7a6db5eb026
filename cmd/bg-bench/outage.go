package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/faultproxy"
)

// OutageRun is one bucket outage (issue 10 item 2): 3 replicas leading sync-uploads with
// `due` uploads due, the bucket cut off mid-run for OutageSec; every request the
// replicas send during the cut is counted at the proxy.
type OutageRun struct {
	Tree        string  `json:"tree"`   // "HEAD" or "before"
	Commit      string  `json:"commit"` // the tree's commit
	Kind        string  `json:"kind"`   // reset (connections reset at once) or stall (held, no answer)
	Due         int     `json:"due"`
	TickSec     float64 `json:"tick_sec"`
	OutageSec   float64 `json:"outage_sec"`
	LatencyMs   float64 `json:"latency_ms"`
	Concurrency int     `json:"sync_concurrency"`
	// HeadsBeforeCut are the HEADs the first run had sent when the bucket was cut.
	HeadsBeforeCut int64            `json:"heads_before_cut"`
	Requests       map[string]int64 `json:"requests"` // during the cut, by S3 operation
	Total          int64            `json:"total"`
	PerTick        float64          `json:"per_tick"`
	// Runs started during the cut, by status; RunsRunningAtEnd were still running when
	// the cut ended; Holders are the replicas that held the lock during the cut.
	Runs             map[string]int `json:"runs_by_status"`
	RunsRunningAtEnd int            `json:"runs_running_at_heal"`
	Holders          int            `json:"lock_holders"`
	FirstError       string         `json:"first_error,omitempty"`
	// RecoverySec is from the heal until every present object's upload is UPLOADED
	// (-1: not within RecoveryLimitSec).
	RecoverySec      float64 `json:"recovery_sec"`
	RecoveryLimitSec float64 `json:"recovery_limit_sec"`
	LoadAvg          float64 `json:"load_avg_1m"`
}

// OutageResult is the outage item.
type OutageResult struct {
	Runs []OutageRun `json:"runs"`
	Note string      `json:"note,omitempty"`
}

// requestDelta is the requests counted between two snapshots, by operation, and their
// total (operations with none left out).
func requestDelta(before, after map[string]int64) (map[string]int64, int64) {
	out := map[string]int64{}
	var total int64
	for op, n := range after {
		if d := n - before[op]; d > 0 {
			out[op] = d
			total += d
		}
	}
	return out, total
}

// perTick is n spread over the ticks of a window of secs seconds.
func perTick(n int64, secs, tickSec float64) float64 { return float64(n) / (secs / tickSec) }

// outageCut makes the classifier ask the proxy for its configured fault on every
// request while set (the proxy's fault rates are 0 otherwise, so nothing else fails).
var outageCut atomic.Bool

// buildAt builds bg-worker from commit's tree (git archive: the repository's worktrees
// and index are not touched) into the work directory.
func (b *bench) buildAt(ctx context.Context, commit string) (string, error) {
	dir := filepath.Join(b.work, "tree-"+commit)
	bin := filepath.Join(b.work, "bg-worker-"+commit)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	sh := fmt.Sprintf("git -C %q archive %q | tar -x -C %q", b.repo, commit, dir)
	if out, err := exec.CommandContext(ctx, "sh", "-c", sh).CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s: %w\n%s", commit, err, out)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=false", "-o", bin, "./cmd/bg-worker")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", commit, err, out)
	}
	_ = os.RemoveAll(dir)
	return bin, nil
}

func gitShort(ctx context.Context, repo, rev string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "rev-parse", "--short", rev).Output()
	if err != nil {
		return rev
	}
	return strings.TrimSpace(string(out))
}

// outage is the outage item: for each tree (HEAD, and --outage-before if set) and each
// kind of cut, one OutageRun in a database of its own migrated by that tree's binary.
func (b *bench) outage(ctx context.Context) (*OutageResult, error) {
	o := b.opts
	res := &OutageResult{}
	type tree struct{ name, commit, bin string }
	trees := []tree{{"HEAD", b.tree, b.bin}}
	if o.outageBefore != "" {
		bin, err := b.buildAt(ctx, o.outageBefore)
		if err != nil {
			return nil, err
		}
		b.logf("outage: built %s at %s", bin, o.outageBefore)
		trees = append([]tree{{"before", gitShort(ctx, b.repo, o.outageBefore), bin}}, trees...)
	}
	if err := b.ensureObjects(o.outageDue); err != nil {
		return nil, err
	}
	for _, kind := range o.outageKinds {
		for _, t := range trees {
			r, err := b.outageRun(ctx, t.name, t.commit, t.bin, kind)
			res.Runs = append(res.Runs, r)
			if err != nil {
				return res, fmt.Errorf("outage %s %s: %w", t.name, kind, err)
			}
		}
	}
	return res, nil
}

func (b *bench) outageRun(ctx context.Context, treeName, commit, bin, kind string) (OutageRun, error) {
	o := b.opts
	r := OutageRun{Tree: treeName, Commit: commit, Kind: kind, Due: o.outageDue, TickSec: o.outageTick.Seconds(),
		OutageSec: o.outageFor.Seconds(), LatencyMs: float64(o.latency) / float64(time.Millisecond), Concurrency: 32,
		RecoveryLimitSec: 90, Requests: map[string]int64{}, Runs: map[string]int{}, LoadAvg: loadAvg1()}
	db := fmt.Sprintf("outage_%s_%s", strings.ToLower(treeName), kind)
	if err := b.pg.CreateDatabase(ctx, db); err != nil {
		return r, fmt.Errorf("create database %s: %w", db, err)
	}
	dbURL := b.pg.URL(db)
	mig := exec.CommandContext(ctx, bin, "migrate")
	mig.Env = b.workerEnv("bench-outage-migrate", benchBucket, map[string]string{"DATABASE_URL": dbURL})
	if out, err := mig.CombinedOutput(); err != nil {
		return r, fmt.Errorf("%s migrate: %w\n%s", bin, err, out)
	}
	pool, err := pgxpool.New(ctx, dbURL+"&application_name=bg-bench&search_path=bg_worker,public")
	if err != nil {
		return r, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO public.uploads (object_key)
		SELECT 'u/' || lpad((i / 1000)::text, 3, '0') || '/' || lpad(i::text, 7, '0')
		FROM generate_series(0, $1::int - 1) AS i`, o.outageDue); err != nil {
		return r, fmt.Errorf("seed: %w", err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE public.uploads`); err != nil {
		return r, err
	}
	b.proxy.SetLatency(o.latency)
	fault := faultproxy.Faults{Reset: 1}
	if kind == "stall" {
		fault = faultproxy.Faults{Stall: 1}
	}
	b.resetRequests()
	var reps []*proc
	defer func() {
		for _, p := range reps {
			p.stop()
		}
		outageCut.Store(false)
		_ = b.proxy.SetFaults(faultproxy.Faults{})
	}()
	for i := 1; i <= 3; i++ {
		p, err := b.startReplica(bin, fmt.Sprintf("bench-outage-%s-%s-r%d", treeName, kind, i), benchBucket, map[string]string{
			"DATABASE_URL": dbURL, "WORKER_JOBS": "sync-uploads", "SYNC_CONCURRENCY": fmt.Sprint(r.Concurrency),
			"WORKER_INTERVAL_MS": fmt.Sprint(o.outageTick.Milliseconds()),
		})
		if err != nil {
			return r, err
		}
		reps = append(reps, p)
	}
	// Mid-run: the first run has sent 2,000 of its HEADs.
	deadline := time.Now().Add(60 * time.Second)
	for b.reqs.snapshot()[opHeadObject] < 2000 {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("no 2000 HEADs within 60 s (see %s)", reps[0].log)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := b.proxy.SetFaults(fault); err != nil {
		return r, err
	}
	outageCut.Store(true)
	c0 := b.reqs.snapshot()
	r.HeadsBeforeCut = c0[opHeadObject]
	var t0 time.Time
	if err := pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t0); err != nil {
		return r, err
	}
	b.logf("outage %s (%s) %s: bucket cut (%s) after %d HEADs, for %s", treeName, commit, kind, kind, r.HeadsBeforeCut, o.outageFor)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(o.outageFor):
	}
	c1 := b.reqs.snapshot()
	var t1 time.Time
	if err := pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t1); err != nil {
		return r, err
	}
	outageCut.Store(false)
	if err := b.proxy.SetFaults(faultproxy.Faults{}); err != nil {
		return r, err
	}
	healed := time.Now()
	r.Requests, r.Total = requestDelta(c0, c1)
	r.PerTick = perTick(r.Total, t1.Sub(t0).Seconds(), r.TickSec)

	rows, err := pool.Query(ctx, `SELECT status, count(*), count(DISTINCT worker_id) FROM bg_worker.job_runs
		WHERE job = 'sync-uploads' AND started_at <= $2 AND coalesce(finished_at, 'infinity') >= $1 GROUP BY status`, t0, t1)
	if err != nil {
		return r, fmt.Errorf("runs: %w", err)
	}
	for rows.Next() {
		var st string
		var n, w int
		if err := rows.Scan(&st, &n, &w); err != nil {
			rows.Close()
			return r, err
		}
		r.Runs[st] = n
	}
	rows.Close()
	_ = pool.QueryRow(ctx, `SELECT count(DISTINCT worker_id) FROM bg_worker.job_runs
		WHERE job = 'sync-uploads' AND status <> 'skipped' AND started_at <= $2 AND coalesce(finished_at, 'infinity') >= $1`, t0, t1).Scan(&r.Holders)
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM bg_worker.job_runs WHERE job = 'sync-uploads' AND started_at <= $1
		AND (finished_at IS NULL OR finished_at > $1) AND status NOT IN ('skipped')`, t1).Scan(&r.RunsRunningAtEnd)
	var firstErr *string
	_ = pool.QueryRow(ctx, `SELECT error FROM bg_worker.job_runs WHERE job = 'sync-uploads' AND error IS NOT NULL AND error <> ''
		AND started_at >= $1 ORDER BY id LIMIT 1`, t0.Add(-time.Minute)).Scan(&firstErr)
	if firstErr != nil {
		r.FirstError = firstLine(*firstErr)
		if len(r.FirstError) > 160 {
			r.FirstError = r.FirstError[:160] + "…"
		}
	}

	// Recovery: every present object's upload UPLOADED (9 in 10 of the due).
	want := o.outageDue - (o.outageDue+9)/10
	r.RecoverySec = -1
	for time.Since(healed) < time.Duration(r.RecoveryLimitSec)*time.Second {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM public.uploads WHERE status = 'UPLOADED'`).Scan(&n); err != nil {
			return r, err
		}
		if n >= want {
			r.RecoverySec = time.Since(healed).Seconds()
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	ops := sortedKeys(r.Requests)
	var parts []string
	for _, op := range ops {
		parts = append(parts, fmt.Sprintf("%s %d", op, r.Requests[op]))
	}
	sort.Strings(parts)
	b.logf("outage %s %s: %d requests during the %.0fs cut (%.1f per tick: %s); runs %v (%d still running at heal, %d holders); recovery %.1fs; load %.1f; first error %q",
		treeName, kind, r.Total, t1.Sub(t0).Seconds(), r.PerTick, strings.Join(parts, ", "), r.Runs, r.RunsRunningAtEnd, r.Holders, r.RecoverySec, r.LoadAvg, r.FirstError)
	return r, nil
}
