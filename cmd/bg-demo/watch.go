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
	// Jobs whose lock the restarted replica took inside a window the killed one had
	// already claimed (--duration mode).
	inClaimed []string
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
		if err := rows.Scan(&k, &n); err != nil {
			rows.Close()
			return "? (" + err.Error() + ")"
		}
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "? (" + err.Error() + ")"
	}
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
	var led []string // every job the leader holds, for the narration
	err := d.db.QueryRow(qctx, `SELECT h.job, coalesce(h.worker_id, ''), j.interval_ms,
			array(SELECT o.job FROM bg_worker.worker_lock_holders o WHERE o.worker_id = h.worker_id ORDER BY o.job)
		FROM bg_worker.worker_lock_holders h JOIN bg_worker.worker_jobs j ON j.name = h.job
		ORDER BY j.interval_ms, h.job LIMIT 1`).Scan(&job, &worker, &intervalMS, &led)
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
	k := &killRecord{replica: worker, pid: p.pid, job: job, interval: time.Duration(intervalMS) * time.Millisecond}
	// In --duration mode the killed replica is restarted at once, as a supervisor would
	// restart it; killed just after a window opened (its leader has claimed it), the new
	// process, which tries every lock as it starts rather than at the next boundary, takes
	// the free locks inside windows its predecessor already claimed. The window claim in
	// job_runs must keep it from running those windows again: the summary checks that
	// every window ran exactly once.
	restart := d.opts.duration > 0
	if restart && k.interval <= 5*time.Second {
		var now time.Time
		if err := d.db.QueryRow(qctx, `SELECT clock_timestamp()`).Scan(&now); err == nil {
			time.Sleep(now.Truncate(k.interval).Add(k.interval + 50*time.Millisecond).Sub(now))
		}
	}
	p.kill()
	k.at = time.Now()
	d.mu.Lock()
	d.kills = append(d.kills, k)
	d.mu.Unlock()
	d.out.demo("KILL -9 %s (pid %d), leader of %s. Its sessions die with it, so PostgreSQL frees its locks at once; "+
		"a standby takes %s at its next tick (interval %s)", worker, p.pid, strings.Join(led, ", "), job, k.interval)
	if restart {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		d.out.demo("RESTART %s at once, as a supervisor would: the new process tries every free lock as it starts, "+
			"possibly inside a window the killed leader already claimed, which it must then leave alone (one run per window)", worker)
		if err := d.startReplica(ctx, target); err != nil {
			d.problem("restart %s after the kill: %v", worker, err)
		} else {
			d.watchers.Add(1)
			go func() {
				defer d.watchers.Done()
				d.watchRestart(d.watchCtx, k)
			}()
		}
	}
	d.watchers.Add(1)
	go func() {
		defer d.watchers.Done()
		d.watchTakeover(d.watchCtx, k)
	}()
}

// watchRestart records, for a few seconds after the killed replica was restarted, the
// jobs whose lock the new process took inside a window the killed leader had already
// claimed: windows the claim must keep it from running again.
func (d *demo) watchRestart(ctx context.Context, k *killRecord) {
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		rows, err := d.db.Query(qctx, `SELECT j.name FROM bg_worker.worker_jobs j
			WHERE j.holder_worker_id = $1 AND j.holder_since > $2
			  AND EXISTS (SELECT 1 FROM bg_worker.job_runs r WHERE r.job = j.name AND r.trigger = 'schedule' AND r.started_at < $2
			        AND r.tick_at = date_bin(make_interval(secs => j.interval_ms / 1000.0), j.holder_since, timestamptz '1970-01-01 00:00:00+00'))
			ORDER BY j.name`, k.replica, k.at)
		var jobs []string
		if err == nil {
			jobs, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		cancel()
		if err != nil {
			continue
		}
		k.mu.Lock()
		k.inClaimed = jobs
		k.mu.Unlock()
	}
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
			// A new holder: a standby, or the killed replica's restarted process (a lock
			// taken after the kill).
			var w string
			var since *time.Time
			err := d.db.QueryRow(qctx, `SELECT coalesce(worker_id, ''), held_since FROM bg_worker.worker_lock_holders WHERE job = $1`,
				k.job).Scan(&w, &since)
			if err == nil && w != "" && (w != k.replica || since != nil && since.After(k.at)) {
				now := time.Now()
				k.mu.Lock()
				k.takeoverBy, k.takeoverAt = w, now
				k.mu.Unlock()
				tookOver = true
				who := w
				if w == k.replica {
					who = w + " (restarted)"
				}
				d.out.demo("TAKEOVER: %s holds the lock of %s (seen %s after %s was killed; polled every 100ms)", who, k.job,
					now.Sub(k.at).Round(time.Millisecond), k.replica)
			}
		}
		if tookOver {
			var id int64
			var w string
			var started time.Time
			err := d.db.QueryRow(qctx, `SELECT id, worker_id, started_at FROM bg_worker.job_runs
				WHERE job = $1 AND trigger = 'schedule' AND status <> 'skipped' AND started_at > $2
				ORDER BY id LIMIT 1`, k.job, k.at).Scan(&id, &w, &started)
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
					note = fmt.Sprintf("; the killed leader's run %v was still marked running, so the new leader marked it abandoned first "+
						"(after waiting up to LOCK_TIMEOUT/2 = %s if the job has effects outside the database)", abandoned, lockTimeout/2)
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
			d.problem("read job_runs: %v", err)
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
	if err := rows.Err(); err != nil {
		d.problem("read job_runs: %v", err)
	}
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

	d.mu.Lock()
	kills := append([]*killRecord(nil), d.kills...)
	d.mu.Unlock()
	// Guarantee 1: every window ran once (the window claim), and no two runs of one job
	// overlapped in time (the lock and the fence).
	lines = append(lines, d.checkWindows(ctx, kills)...)
	// Runs still marked running (a killed leader's, never taken over) have no end and are
	// left out, as are abandoned runs (their leader died or lost the lock).
	var overlap int64
	err = d.db.QueryRow(ctx, `SELECT count(*) FROM bg_worker.job_runs a JOIN bg_worker.job_runs b ON a.job = b.job AND a.id < b.id
		WHERE a.status NOT IN ('skipped', 'abandoned', 'running') AND b.status NOT IN ('skipped', 'abandoned', 'running')
		  AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)`).Scan(&overlap)
	if err != nil {
		d.problem("count overlapping runs: %v", err)
		lines = append(lines, fmt.Sprintf("  pairs of runs of one job that overlapped in time: ? (%v)", err))
	} else {
		lines = append(lines, fmt.Sprintf("  pairs of runs of one job that overlapped in time: %d", overlap))
	}
	if overlap > 0 {
		d.problem("%d pairs of runs of one job overlapped in time", overlap)
	}
	lines = append(lines, "  "+d.uploadsLabel()+" now: "+d.countBy(ctx, d.shape.CountSQL()))
	lines = append(lines, d.checkUploads(ctx, succeeded["sync-uploads"])...)
	lines = append(lines, d.checkAppRelations(ctx)...)

	var total int64
	for _, n := range succeeded {
		total += n
	}
	if total == 0 {
		d.problem("no run succeeded (job_runs has no succeeded row)")
	}
	type job struct {
		name string
		ms   int64
	}
	jrows, err := d.db.Query(ctx, `SELECT name, interval_ms FROM bg_worker.worker_jobs ORDER BY name`)
	var jobs []job
	if err == nil {
		jobs, err = pgx.CollectRows(jrows, func(r pgx.CollectableRow) (job, error) {
			var j job
			return j, r.Scan(&j.name, &j.ms)
		})
	}
	if err != nil {
		d.problem("read worker_jobs: %v", err)
	} else {
		for _, j := range jobs {
			iv := time.Duration(j.ms) * time.Millisecond
			if d.opts.duration > 0 && 4*iv <= d.opts.duration && succeeded[j.name] < 2 {
				d.problem("job %s (interval %s) ran %d times in %s, want at least 2", j.name, iv, succeeded[j.name], d.opts.duration)
			}
		}
	}

	for _, k := range kills {
		k.mu.Lock()
		if len(k.inClaimed) > 0 {
			lines = append(lines, fmt.Sprintf("  claim: %s, restarted after the kill, took the lock of %s inside a window %s had already claimed",
				k.replica, strings.Join(k.inClaimed, ", "), k.replica))
		}
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

// checkWindows checks, for every job, the windows from the first to the last one a
// scheduled row claims: each must have exactly one (a run, whatever its outcome, or a
// skipped window, claimed while the previous run went on). Two rows in a window is that
// window run twice, which the window claim prevents, even when a new leader takes the
// lock inside a window its predecessor claimed (the restart after a kill); no row is a
// window nobody ran, allowed only where a leader was expected to be missing: from a kill
// to one interval plus LOCK_TIMEOUT/2 later (a standby's next tick, and the wait of a
// job with effects outside the database), and for three intervals after a failed run (a
// leader gives up after failures and stands back two intervals). It returns the
// summary's line and records what it finds as problems.
func (d *demo) checkWindows(ctx context.Context, kills []*killRecord) []string {
	type row struct {
		job        string
		intervalMS int64
		tickAt     time.Time
		status     string
		worker     string
		finished   *time.Time
	}
	rows, err := d.db.Query(ctx, `SELECT r.job, j.interval_ms, r.tick_at, r.status, r.worker_id, r.finished_at
		FROM bg_worker.job_runs r JOIN bg_worker.worker_jobs j ON j.name = r.job
		WHERE r.trigger = 'schedule' ORDER BY r.job, r.tick_at, r.id`)
	var rs []row
	if err == nil {
		rs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.job, &x.intervalMS, &x.tickAt, &x.status, &x.worker, &x.finished)
		})
	}
	if err != nil {
		d.problem("read job_runs for the window check: %v", err)
		return []string{fmt.Sprintf("  tick windows: ? (%v)", err)}
	}
	type jobWindows struct {
		iv          time.Duration
		first, last time.Time // the windows of the job's first and last rows
		rows        map[time.Time][]row
		failedEnds  []time.Time
	}
	byJob := map[string]*jobWindows{}
	var names []string
	for _, r := range rs {
		iv := time.Duration(r.intervalMS) * time.Millisecond
		jw := byJob[r.job]
		w := r.tickAt.Truncate(iv)
		if jw == nil {
			jw = &jobWindows{iv: iv, first: w, last: w, rows: map[time.Time][]row{}}
			byJob[r.job] = jw
			names = append(names, r.job)
		}
		jw.rows[w] = append(jw.rows[w], r)
		jw.last = w // rows come ordered by tick_at: the first row set first
		if r.status == "failed" && r.finished != nil {
			jw.failedEnds = append(jw.failedEnds, *r.finished)
		}
	}
	var windows, allowed int
	var twice, missing []string
	for _, name := range names {
		jw := byJob[name]
		gapOK := func(w time.Time) bool {
			for _, k := range kills {
				if !w.Before(k.at.Truncate(jw.iv)) && !w.After(k.at.Add(jw.iv+lockTimeout/2)) {
					return true
				}
			}
			for _, f := range jw.failedEnds {
				if w.After(f) && !w.After(f.Add(3*jw.iv)) {
					return true
				}
			}
			return false
		}
		for w := jw.first; !w.After(jw.last); w = w.Add(jw.iv) {
			windows++
			switch in := jw.rows[w]; {
			case len(in) > 1:
				var by []string
				for _, r := range in {
					by = append(by, r.worker+" "+r.status)
				}
				twice = append(twice, fmt.Sprintf("%s %s (%s)", name, w.Local().Format("15:04:05.000"), strings.Join(by, ", ")))
			case len(in) == 0 && gapOK(w):
				allowed++
			case len(in) == 0:
				missing = append(missing, fmt.Sprintf("%s %s", name, w.Local().Format("15:04:05.000")))
			}
		}
	}
	line := fmt.Sprintf("  tick windows from each job's first to its last: %d over %d jobs; run more than once: %d; with no run and no skip: %d",
		windows, len(names), len(twice), len(missing))
	if allowed > 0 {
		line += fmt.Sprintf(" (and %d around a kill or failed run, allowed)", allowed)
	}
	if len(twice) > 0 {
		d.problem("%d tick windows ran more than once: %s", len(twice), strings.Join(twice[:min(len(twice), 5)], "; "))
	}
	if len(missing) > 0 {
		d.problem("%d tick windows have no run and no skipped row: %s", len(missing), strings.Join(missing[:min(len(missing), 5)], "; "))
	}
	if windows == 0 {
		d.problem("no scheduled run recorded")
	}
	return []string{line}
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
