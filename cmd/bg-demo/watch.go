package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/config"
)

// lockTimeout is the replicas' LOCK_TIMEOUT (the demo leaves the default): a new leader
// that finds the previous run still marked running waits half of it before its first run.
var lockTimeout = config.Defaults().LockTimeout

// killRecord is one kill -9 of a leader and what followed.
type killRecord struct {
	replica  string
	pid      int
	job      string // the fastest job it led
	interval time.Duration
	at       time.Time

	mu         sync.Mutex
	takeoverBy string
	takeoverAt time.Time
	firstRunBy string
	firstRunAt time.Time
}

// printStatus prints SELECT * FROM bg_worker.worker_lock_holders and a line of counts.
func (d *demo) printStatus(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	lines := []string{fmt.Sprintf("SELECT * FROM bg_worker.worker_lock_holders;   -- %s", time.Now().Format("15:04:05"))}
	rows, err := d.db.Query(ctx, `SELECT * FROM bg_worker.worker_lock_holders ORDER BY job`)
	if err != nil {
		d.out.demo("worker_lock_holders: %v", err)
		return
	}
	var header []string
	for _, f := range rows.FieldDescriptions() {
		header = append(header, f.Name)
	}
	var data [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			break
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = formatValue(v)
		}
		data = append(data, row)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		d.out.demo("worker_lock_holders: %v", err)
		return
	}
	if len(data) == 0 {
		lines = append(lines, "  (no rows: nobody holds a job's lock right now)")
	} else {
		lines = append(lines, table(header, data)...)
	}
	lines = append(lines, "  "+d.countsLine(ctx))
	d.out.demoBlock(lines)
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case time.Time:
		return x.Local().Format("15:04:05.000")
	case netip.Prefix:
		return x.Addr().String()
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}

// countsLine: uploads by status, runs by status, replicas up.
func (d *demo) countsLine(ctx context.Context) string {
	up := 0
	var down []string
	for _, r := range d.replicas {
		if r.running() {
			up++
		} else {
			down = append(down, r.name)
		}
	}
	s := fmt.Sprintf("%s: %s │ runs: %s │ replicas up: %d/%d", d.uploadsLabel(),
		d.countBy(ctx, d.shape.CountSQL()),
		d.countBy(ctx, `SELECT status, count(*) FROM bg_worker.job_runs GROUP BY status ORDER BY count(*) DESC, status`),
		up, len(d.replicas))
	if len(down) > 0 {
		s += " (down: " + strings.Join(down, ", ") + ")"
	}
	return s
}

// uploadsLabel names the uploads table in the status lines: "uploads" for the default
// table, and the application's table by name with --app-table.
func (d *demo) uploadsLabel() string {
	if d.opts.appTable == "" {
		return "uploads"
	}
	return "uploads (" + d.shape.Table + ")"
}

func (d *demo) countBy(ctx context.Context, sql string) string {
	rows, err := d.db.Query(ctx, sql)
	if err != nil {
		return "?"
	}
	var parts []string
	for rows.Next() {
		var k string
		var n int64
		if rows.Scan(&k, &n) == nil {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	rows.Close()
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " · ")
}

// killLeader kills -9 the replica that leads the job with the shortest interval.
func (d *demo) killLeader(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var job, worker string
	var intervalMS int64
	err := d.db.QueryRow(qctx, `SELECT h.job, coalesce(h.worker_id, ''), j.interval_ms
		FROM bg_worker.worker_lock_holders h JOIN bg_worker.worker_jobs j ON j.name = h.job
		ORDER BY j.interval_ms, h.job LIMIT 1`).Scan(&job, &worker, &intervalMS)
	if errors.Is(err, pgx.ErrNoRows) {
		d.out.demo("kill: nobody leads a job right now; try again in a moment")
		return
	}
	if err != nil {
		d.out.demo("kill: %v", err)
		return
	}
	var target *replica
	for _, r := range d.replicas {
		if r.name == worker {
			target = r
		}
	}
	p := (*proc)(nil)
	if target != nil {
		p = target.current()
	}
	if p == nil || p.exited() {
		d.out.demo("kill: %s leads %s but is not a running replica of this demo", worker, job)
		return
	}
	var led []string
	if rows, err := d.db.Query(qctx, `SELECT job FROM bg_worker.worker_lock_holders WHERE worker_id = $1 ORDER BY job`, worker); err == nil {
		led, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	k := &killRecord{replica: worker, pid: p.pid, job: job, interval: time.Duration(intervalMS) * time.Millisecond}
	p.kill()
	k.at = time.Now()
	d.mu.Lock()
	d.kills = append(d.kills, k)
	d.mu.Unlock()
	d.out.demo("KILL -9 %s (pid %d), leader of %s. Its sessions die with it, so PostgreSQL frees its locks at once; "+
		"a standby takes %s at its next tick (interval %s)", worker, p.pid, strings.Join(led, ", "), job, k.interval)
	d.watchers.Add(1)
	go func() {
		defer d.watchers.Done()
		d.watchTakeover(d.watchCtx, k)
	}()
}

// watchTakeover reports when another replica holds the killed leader's job and when its
// first run starts.
func (d *demo) watchTakeover(ctx context.Context, k *killRecord) {
	limit := k.at.Add(2*k.interval + lockTimeout + 30*time.Second)
	tookOver := false
	for time.Now().Before(limit) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if !tookOver {
			var w string
			err := d.db.QueryRow(qctx, `SELECT coalesce(worker_id, '') FROM bg_worker.worker_lock_holders WHERE job = $1`, k.job).Scan(&w)
			if err == nil && w != "" && w != k.replica {
				now := time.Now()
				k.mu.Lock()
				k.takeoverBy, k.takeoverAt = w, now
				k.mu.Unlock()
				tookOver = true
				d.out.demo("TAKEOVER: %s holds the lock of %s (seen %s after %s was killed; polled every 100ms)", w, k.job,
					now.Sub(k.at).Round(time.Millisecond), k.replica)
			}
		}
		if tookOver {
			var id int64
			var w string
			var started time.Time
			err := d.db.QueryRow(qctx, `SELECT id, worker_id, started_at FROM bg_worker.job_runs
				WHERE job = $1 AND trigger = 'schedule' AND status <> 'skipped' AND started_at > $2 AND worker_id <> $3
				ORDER BY id LIMIT 1`, k.job, k.at, k.replica).Scan(&id, &w, &started)
			if err == nil {
				k.mu.Lock()
				k.firstRunBy, k.firstRunAt = w, started
				k.mu.Unlock()
				note := ""
				var abandoned []int64
				if rows, err := d.db.Query(qctx, `SELECT id FROM bg_worker.job_runs WHERE job = $1 AND worker_id = $2 AND status = 'abandoned'
					AND finished_at > $3 ORDER BY id`, k.job, k.replica, k.at); err == nil {
					abandoned, _ = pgx.CollectRows(rows, pgx.RowTo[int64])
				}
				if len(abandoned) > 0 {
					note = fmt.Sprintf("; the killed leader's run %v was still marked running, so the new leader marked it abandoned and waited LOCK_TIMEOUT/2 (%s) first", abandoned, lockTimeout/2)
				}
				cancel()
				d.out.demo("FIRST RUN after the kill: run %d by %s started %s after the kill%s", id, w,
					started.Sub(k.at).Round(time.Millisecond), note)
				return
			}
		}
		cancel()
	}
	if ctx.Err() == nil {
		d.out.demo("no takeover of %s seen within %s of the kill", k.job, time.Since(k.at).Round(time.Second))
	}
}

// lateArrivals uploads the objects of the "late" rows: the application's upload finished
// after the row was written.
func (d *demo) lateArrivals(ctx context.Context) {
	if err := putObjects(ctx, d.s3.Client(), bucketName, d.seed.late); err != nil {
		d.out.demo("late uploads: %v", err)
		return
	}
	d.out.demo("%d late objects just arrived in the bucket: their rows in %s turn %s at their next check (backoff at most SYNC_MAX_BACKOFF=10s)",
		len(d.seed.late), d.shape.Table, d.shape.Uploaded)
}

// summary prints what ran where and records failed checks.
func (d *demo) summary() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, r := range d.replicas {
		if !r.wasReady() {
			d.problem("%s never became ready", r.name)
		}
	}
	type key struct{ job, worker string }
	counts := map[key]map[string]int64{}
	var keys []key
	rows, err := d.db.Query(ctx, `SELECT job, worker_id, status, count(*) FROM bg_worker.job_runs GROUP BY 1, 2, 3`)
	if err != nil {
		d.problem("read job_runs: %v", err)
		return
	}
	succeeded := map[string]int64{}
	for rows.Next() {
		var k key
		var status string
		var n int64
		if err := rows.Scan(&k.job, &k.worker, &status, &n); err != nil {
			break
		}
		if counts[k] == nil {
			counts[k] = map[string]int64{}
			keys = append(keys, k)
		}
		counts[k][status] = n
		if status == "succeeded" {
			succeeded[k.job] += n
		}
	}
	rows.Close()
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].job != keys[j].job {
			return keys[i].job < keys[j].job
		}
		return keys[i].worker < keys[j].worker
	})
	statuses := []string{"succeeded", "failed", "skipped", "cancelled", "abandoned", "running"}
	var data [][]string
	for _, k := range keys {
		row := []string{k.job, k.worker}
		for _, s := range statuses {
			row = append(row, fmt.Sprint(counts[k][s]))
		}
		data = append(data, row)
	}
	lines := []string{"── summary: runs by job and replica (job_runs) ──"}
	if len(data) == 0 {
		lines = append(lines, "  (no runs)")
	} else {
		lines = append(lines, table(append([]string{"job", "worker_id"}, statuses...), data)...)
	}

	var dup, overlap int64
	_ = d.db.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM bg_worker.job_runs WHERE trigger = 'schedule'
		GROUP BY job, tick_at HAVING count(*) > 1) x`).Scan(&dup)
	// Guarantee 1: no two runs of one job overlap in time. Runs still marked running (a
	// killed leader's, never taken over) have no end and are left out.
	_ = d.db.QueryRow(ctx, `SELECT count(*) FROM bg_worker.job_runs a JOIN bg_worker.job_runs b ON a.job = b.job AND a.id < b.id
		WHERE a.status NOT IN ('skipped', 'abandoned', 'running') AND b.status NOT IN ('skipped', 'abandoned', 'running')
		  AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)`).Scan(&overlap)
	lines = append(lines,
		fmt.Sprintf("  tick windows with more than one scheduled run: %d", dup),
		fmt.Sprintf("  pairs of runs of one job that overlapped in time: %d", overlap),
		"  "+d.uploadsLabel()+" now: "+d.countBy(ctx, d.shape.CountSQL()))
	lines = append(lines, d.checkUploads(ctx, succeeded["sync-uploads"])...)
	lines = append(lines, d.checkAppRelations(ctx)...)
	if dup > 0 {
		d.problem("%d tick windows had more than one scheduled run", dup)
	}
	if overlap > 0 {
		d.problem("%d pairs of runs of one job overlapped in time", overlap)
	}

	var total int64
	for _, n := range succeeded {
		total += n
	}
	if total == 0 {
		d.problem("no run succeeded (job_runs has no succeeded row)")
	}
	if jrows, err := d.db.Query(ctx, `SELECT name, interval_ms FROM bg_worker.worker_jobs ORDER BY name`); err == nil {
		type job struct {
			name string
			ms   int64
		}
		jobs, _ := pgx.CollectRows(jrows, func(r pgx.CollectableRow) (job, error) {
			var j job
			return j, r.Scan(&j.name, &j.ms)
		})
		for _, j := range jobs {
			iv := time.Duration(j.ms) * time.Millisecond
			if d.opts.duration > 0 && 4*iv <= d.opts.duration && succeeded[j.name] < 2 {
				d.problem("job %s (interval %s) ran %d times in %s, want at least 2", j.name, iv, succeeded[j.name], d.opts.duration)
			}
		}
	}

	d.mu.Lock()
	kills := append([]*killRecord(nil), d.kills...)
	d.mu.Unlock()
	for _, k := range kills {
		k.mu.Lock()
		watched := d.loopEnd.Sub(k.at)
		switch {
		case !k.takeoverAt.IsZero() && !k.firstRunAt.IsZero():
			lines = append(lines, fmt.Sprintf("  failover: %s killed at %s; %s took %s over, its first run started %s after the kill",
				k.replica, k.at.Format("15:04:05.000"), k.firstRunBy, k.job, k.firstRunAt.Sub(k.at).Round(time.Millisecond)))
		case !k.takeoverAt.IsZero():
			lines = append(lines, fmt.Sprintf("  failover: %s killed at %s; %s held %s (seen after %s) but no run started before the end",
				k.replica, k.at.Format("15:04:05.000"), k.takeoverBy, k.job, k.takeoverAt.Sub(k.at).Round(time.Millisecond)))
			if watched > 2*k.interval+lockTimeout/2+3*time.Second {
				d.problem("after %s was killed, %s held %s but started no run within %s", k.replica, k.takeoverBy, k.job, watched.Round(time.Second))
			}
		default:
			lines = append(lines, fmt.Sprintf("  failover: %s killed at %s; no standby took %s before the end",
				k.replica, k.at.Format("15:04:05.000"), k.job))
			if watched > 2*k.interval+3*time.Second {
				d.problem("no standby took %s within %s of killing its leader %s", k.job, watched.Round(time.Second), k.replica)
			}
		}
		k.mu.Unlock()
	}
	d.out.demoBlock(lines)
}

// checkUploads compares the seeded rows' statuses, in the shape's own values, with what
// the worker must have made of them once a sync-uploads run completed (every run goes
// through every due row): present objects verified, expired rows failed, young missing
// rows left pending, late ones anything but failed. It returns the summary's lines and
// records mismatches as problems.
func (d *demo) checkUploads(ctx context.Context, syncRuns int64) []string {
	if d.seed == nil || len(d.seed.expect) == 0 {
		return nil
	}
	if syncRuns == 0 {
		if d.opts.duration > 0 {
			d.problem("no sync-uploads run completed: the seeded rows of %s were never verified", d.shape.Table)
		}
		return []string{"  seeded rows not checked: no sync-uploads run completed"}
	}
	keys := make([]string, 0, len(d.seed.expect))
	for k := range d.seed.expect {
		keys = append(keys, k)
	}
	rows, err := d.db.Query(ctx, d.shape.StatusOfSQL(), keys)
	if err != nil {
		d.problem("read %s: %v", d.shape.Table, err)
		return nil
	}
	type kv struct{ key, status string }
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (kv, error) {
		var x kv
		return x, r.Scan(&x.key, &x.status)
	})
	if err != nil {
		d.problem("read %s: %v", d.shape.Table, err)
		return nil
	}
	status := make(map[string]string, len(got))
	for _, x := range got {
		status[x.key] = x.status
	}
	type tally struct{ ok, total int }
	var tallies [4]tally
	var wrong []string
	for _, k := range keys {
		want, st := d.seed.expect[k], status[k]
		var ok bool
		switch want {
		case wantUploaded:
			ok = st == d.shape.Uploaded
		case wantFailed:
			ok = st == d.shape.Failed
		case wantPending:
			ok = st == d.shape.Pending
		case wantNotFailed:
			ok = st == d.shape.Uploaded || st == d.shape.Pending
		}
		tallies[want].total++
		if ok {
			tallies[want].ok++
		} else {
			if st == "" {
				st = "no row"
			}
			wrong = append(wrong, fmt.Sprintf("%q is %s", k, st))
		}
	}
	s := d.shape
	lines := []string{fmt.Sprintf("  seeded rows in %s as expected: %d/%d present → %s, %d/%d expired → %s, %d/%d missing still %s, %d/%d late not %s",
		s.Table, tallies[wantUploaded].ok, tallies[wantUploaded].total, s.Uploaded, tallies[wantFailed].ok, tallies[wantFailed].total, s.Failed,
		tallies[wantPending].ok, tallies[wantPending].total, s.Pending, tallies[wantNotFailed].ok, tallies[wantNotFailed].total, s.Failed)}
	if len(wrong) > 0 {
		sort.Strings(wrong)
		shown := wrong[:min(len(wrong), 5)]
		d.problem("%d seeded rows of %s not in the expected status after %d sync-uploads run(s), e.g. %s",
			len(wrong), s.Table, syncRuns, strings.Join(shown, ", "))
	}
	return lines
}

// checkAppRelations: with --app-table, migrate and the replicas must have added nothing
// outside the worker's schema (no second uploads table, no view or index on the
// application's side).
func (d *demo) checkAppRelations(ctx context.Context) []string {
	if d.opts.appTable == "" || d.appRelations == nil {
		return nil
	}
	now, err := d.relationsOutsideWorker(ctx)
	if err != nil {
		d.problem("%v", err)
		return nil
	}
	before := map[string]bool{}
	for _, r := range d.appRelations {
		before[r] = true
	}
	var added []string
	for _, r := range now {
		if !before[r] {
			added = append(added, r)
		}
	}
	if len(added) > 0 {
		d.problem("the worker created relations outside bg_worker: %s", strings.Join(added, ", "))
		return nil
	}
	return []string{fmt.Sprintf("  outside bg_worker: the application's %d relations, nothing added by migrate or the replicas", len(now))}
}
