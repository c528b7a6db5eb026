package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/tcpproxy"
)

// TakeoverTrial is one fault injected into the leader mid-run.
type TakeoverTrial struct {
	Victim    string  `json:"victim"`
	NewLeader string  `json:"next_run_by"`
	Sec       float64 `json:"sec"`       // fault to the next run's start (database clock)
	PhaseSec  float64 `json:"phase_sec"` // the random delay before the fault, within the tick
	OldRun    string  `json:"old_run_status"`
	// OldRunEndSec is when the old run left "running" (cancelled by its own holder after
	// a terminated backend, or abandoned by the new leader), after the fault.
	OldRunEndSec float64 `json:"old_run_end_sec"`
}

// TakeoverScenario is one kind of fault, repeated.
type TakeoverScenario struct {
	Name string `json:"name"`
	// Effects: the probe declares effects outside the database (jobs.Job.ExternalEffects,
	// as scan-orphans with ORPHAN_DELETE=true does), so a new leader waits LOCK_TIMEOUT/2.
	Effects      bool            `json:"external_effects,omitempty"`
	Bound        string          `json:"bound"`
	BoundSec     float64         `json:"bound_sec"`
	Trials       []TakeoverTrial `json:"trials"`
	MedianSec    float64         `json:"median_sec"`
	MaxSec       float64         `json:"max_sec"`
	MaxVsBound   float64         `json:"max_over_bound"`
	SameReplica  int             `json:"next_run_by_same_replica"`
	LateWrites   int             `json:"old_run_writes_after_takeover"`
	OverlapRuns  int             `json:"overlapping_runs"`
	OverlapWrite int             `json:"interleaved_writes"`
	LoadAvg      float64         `json:"load_avg_1m"` // when the scenario started
}

// TakeoverResult is item 6 at one lock configuration.
type TakeoverResult struct {
	Config       string             `json:"config,omitempty"` // "bench" (short lock timings) or "defaults"
	Job          string             `json:"job"`
	IntervalSec  float64            `json:"interval_sec"`
	HeartbeatSec float64            `json:"lock_heartbeat_sec"`
	TimeoutSec   float64            `json:"lock_timeout_sec"`
	Scenarios    []TakeoverScenario `json:"scenarios"`
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summarize sets the median and maximum of the trials' times and max ÷ bound.
func (s *TakeoverScenario) summarize(secs []float64) {
	s.MedianSec = median(secs)
	s.MaxSec = 0
	for _, x := range secs {
		s.MaxSec = max(s.MaxSec, x)
	}
	s.MaxVsBound = s.MaxSec / s.BoundSec
}

// takeoverSlack is the issue-11 allowance over the class bounds of internal/lock/doc.go
// (the scheduler's wake-up after a boundary, ≤ 50 ms, and the few statements before a
// run's started_at is stamped).
const takeoverSlack = 300 * time.Millisecond

// Takeover fault names.
const (
	faultKill      = "kill -9"
	faultTerminate = "pg_terminate_backend"
	faultStop      = "SIGSTOP"
	faultPartition = "network partition"
)

// takeovers is item 6: the bench's short lock timings (--lock-timeout, --lock-heartbeat)
// and, unless --takeover-defaults=false, production's LOCK_TIMEOUT 10s / LOCK_HEARTBEAT 1s.
func (b *bench) takeovers(ctx context.Context) ([]*TakeoverResult, error) {
	o := b.opts
	cfgs := []struct {
		name   string
		hb, to time.Duration
	}{{"bench", o.lockHeartbeat, o.lockTimeout}}
	if o.takeoverDefaults {
		cfgs = append(cfgs, struct {
			name   string
			hb, to time.Duration
		}{"defaults", time.Second, 10 * time.Second})
	}
	var out []*TakeoverResult
	for _, c := range cfgs {
		r, err := b.takeover(ctx, c.name, o.takeoverInterval, c.hb, c.to)
		if r != nil {
			out = append(out, r)
		}
		if err != nil {
			return out, fmt.Errorf("takeover (%s): %w", c.name, err)
		}
	}
	return out, nil
}

// takeover runs 3 replicas of the e2e binary leading e2e-slow (a run that writes an
// event every 50 ms through the fenced path and lasts far longer than the test), each
// connected to PostgreSQL through its own TCP proxy, and hits the leader mid-run with
// kill -9, pg_terminate_backend of its lock session, SIGSTOP, or a network partition;
// then 3 replicas of the same probe declaring effects outside the database, hit by
// kill -9.
func (b *bench) takeover(ctx context.Context, name string, iv, hb, to time.Duration) (*TakeoverResult, error) {
	res := &TakeoverResult{Config: name, Job: "e2e-slow", IntervalSec: iv.Seconds(), HeartbeatSec: hb.Seconds(), TimeoutSec: to.Seconds()}
	fenced := []struct {
		fault, bound string
		boundD       time.Duration
	}{
		{faultKill, "interval + 0.3 s", iv + takeoverSlack},
		{faultTerminate, "interval + 0.3 s", iv + takeoverSlack},
		{faultStop, "LOCK_TIMEOUT + interval + 0.3 s", to + iv + takeoverSlack},
		{faultPartition, "LOCK_TIMEOUT + interval + 0.3 s", to + iv + takeoverSlack},
	}
	for _, effects := range []bool{false, true} {
		var faults []takeoverFault
		for _, f := range fenced {
			faults = append(faults, takeoverFault{f.fault, f.bound, f.boundD})
		}
		if effects { // kill -9 only: the class keeps the LOCK_TIMEOUT/2 wait-out
			faults = []takeoverFault{{faultKill, "interval + LOCK_TIMEOUT/2 + 0.3 s", iv + to/2 + takeoverSlack}}
		}
		b.logf("takeover (%s, LOCK_TIMEOUT %s, LOCK_HEARTBEAT %s, effects outside the database %v)", name, to, hb, effects)
		ss, err := b.takeoverGroup(ctx, iv, hb, to, effects, faults)
		res.Scenarios = append(res.Scenarios, ss...)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

type takeoverFault struct {
	name, bound string
	boundD      time.Duration
}

// dbProxy is a replica's own TCP proxy to PostgreSQL (kept across its restarts).
type dbProxy struct {
	p   *tcpproxy.Proxy
	url string
}

func (b *bench) newDBProxy() (*dbProxy, error) {
	u, err := url.Parse(b.dbURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	p, err := tcpproxy.Listen(u.Host)
	if err != nil {
		return nil, err
	}
	u.Host = p.Addr()
	return &dbProxy{p: p, url: u.String()}, nil
}

func (b *bench) takeoverGroup(ctx context.Context, iv, hb, to time.Duration, effects bool, faults []takeoverFault) ([]TakeoverScenario, error) {
	o := b.opts
	env := map[string]string{
		"WORKER_JOBS":        "e2e-slow",
		"WORKER_INTERVAL_MS": fmt.Sprint(iv.Milliseconds()),
		"LOCK_HEARTBEAT":     hb.String(),
		"LOCK_TIMEOUT":       to.String(),
		"SHUTDOWN_TIMEOUT":   "2s",
		"E2E_SLOW_FOR":       "1h",
		"E2E_SLOW_EFFECTS":   fmt.Sprint(effects),
	}
	var groupStart time.Time
	if err := b.db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&groupStart); err != nil {
		return nil, fmt.Errorf("takeover: clock: %w", err)
	}
	reps := map[string]*proc{}
	proxies := map[string]*dbProxy{}
	defer func() {
		for _, p := range reps {
			p.stop()
		}
		for _, dp := range proxies {
			dp.p.Close()
		}
	}()
	prefix := "bench-to-r"
	if effects {
		prefix = "bench-tox-r"
	}
	start := func(id string) error {
		dp := proxies[id]
		if dp == nil {
			var err error
			if dp, err = b.newDBProxy(); err != nil {
				return err
			}
			proxies[id] = dp
		}
		e := map[string]string{"DATABASE_URL": dp.url}
		for k, v := range env {
			e[k] = v
		}
		p, err := b.startReplica(b.binE2E, id, benchBucket, e)
		if err == nil {
			reps[id] = p
		}
		return err
	}
	for i := 1; i <= 3; i++ {
		if err := start(fmt.Sprintf("%s%d", prefix, i)); err != nil {
			return nil, err
		}
	}
	type lateCheck struct {
		scenario int // index in out
		runID    int64
		after    time.Time
	}
	var late []lateCheck
	var out []TakeoverScenario
	for _, sc := range faults {
		s := TakeoverScenario{Name: sc.name, Effects: effects, Bound: sc.bound, BoundSec: sc.boundD.Seconds(), LoadAvg: loadAvg1()}
		var secs []float64
		for trial := 0; trial < o.takeoverTrials; trial++ {
			victim, lockPID, runID, err := b.waitMidRun(ctx, 60*time.Second)
			if err != nil {
				return out, err
			}
			// A random phase within the tick, so the trials sample where in its window
			// the fault lands (the wait for the next tick is part of the takeover).
			phase := rand.N(iv)
			time.Sleep(phase)
			vp := reps[victim]
			if vp == nil {
				return out, fmt.Errorf("takeover: holder %s is not one of ours", victim)
			}
			lost := logCount(vp, "Lost lock")
			var t0 time.Time
			if err := b.db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t0); err != nil {
				return out, fmt.Errorf("takeover: clock: %w", err)
			}
			switch sc.name {
			case faultKill:
				vp.kill()
			case faultTerminate:
				if _, err := b.db.Exec(ctx, `SELECT pg_terminate_backend($1)`, lockPID); err != nil {
					return out, fmt.Errorf("takeover: terminate: %w", err)
				}
			case faultStop:
				if err := vp.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					return out, fmt.Errorf("takeover: SIGSTOP: %w", err)
				}
			case faultPartition:
				proxies[victim].p.Partition()
			}
			// The next scheduled run; after a terminated backend any healthy replica may
			// win, otherwise it must be another replica's.
			exclude := victim
			if sc.name == faultTerminate {
				exclude = ""
			}
			tr := TakeoverTrial{Victim: victim, PhaseSec: phase.Seconds()}
			var next time.Time
			deadline := time.Now().Add(sc.boundD + 30*time.Second)
			for {
				err := b.db.QueryRow(ctx, `SELECT worker_id, started_at FROM bg_worker.job_runs
					WHERE job = 'e2e-slow' AND trigger = 'schedule' AND status <> 'skipped' AND started_at > $1 AND worker_id <> $2
					ORDER BY started_at LIMIT 1`, t0, exclude).Scan(&tr.NewLeader, &next)
				if err == nil {
					break
				}
				if !errors.Is(err, pgx.ErrNoRows) {
					return out, fmt.Errorf("takeover: next run: %w", err)
				}
				if time.Now().After(deadline) {
					return out, fmt.Errorf("takeover %s: no new run within %s", sc.name, sc.boundD+30*time.Second)
				}
				time.Sleep(20 * time.Millisecond)
			}
			tr.Sec = next.Sub(t0).Seconds()
			var fin *time.Time
			_ = b.db.QueryRow(ctx, `SELECT status, finished_at FROM bg_worker.job_runs WHERE id = $1`, runID).Scan(&tr.OldRun, &fin)
			if fin != nil {
				tr.OldRunEndSec = fin.Sub(t0).Seconds()
			}
			if tr.NewLeader == victim {
				s.SameReplica++
			}
			// Restore three healthy replicas.
			switch sc.name {
			case faultKill:
				if err := start(victim); err != nil {
					return out, err
				}
			case faultStop:
				_ = vp.cmd.Process.Signal(syscall.SIGCONT)
				// The woken holder finds out at its next heartbeat; its run's writes
				// after the takeover are counted at the end.
				b.waitLog(vp, "Lost lock", lost, 10*time.Second)
				late = append(late, lateCheck{len(out), runID, next})
			case faultPartition:
				// Heal delivers whatever the cut held (statements the old leader sent
				// and gave up on arrive now, after the takeover: they must not commit).
				proxies[victim].p.Heal()
				b.waitLog(vp, "Lost lock", lost, 10*time.Second)
				late = append(late, lateCheck{len(out), runID, next})
			}
			s.Trials = append(s.Trials, tr)
			secs = append(secs, tr.Sec)
			b.logf("takeover %s #%d: %s hit (+%.2fs into the tick), next run by %s after %.2fs (bound %.2fs); old run %s at +%.2fs",
				sc.name, trial+1, victim, phase.Seconds(), tr.NewLeader, tr.Sec, sc.boundD.Seconds(), tr.OldRun, tr.OldRunEndSec)
		}
		s.summarize(secs)
		out = append(out, s)
	}
	for _, p := range reps {
		p.stop()
	}
	for _, lc := range late {
		var n int
		if err := b.db.QueryRow(ctx, `SELECT count(*) FROM bg_worker.e2e_events WHERE run_id = $1 AND at > $2`, lc.runID, lc.after).Scan(&n); err != nil {
			return out, fmt.Errorf("takeover: late writes: %w", err)
		}
		out[lc.scenario].LateWrites += n
	}
	runs, writes, err := b.overlaps(ctx, groupStart)
	if err != nil {
		return out, err
	}
	for i := range out {
		out[i].OverlapRuns, out[i].OverlapWrite = runs, writes
	}
	return out, nil
}

// loadAvg1 is the machine's 1-minute load average.
func loadAvg1() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	x, _ := strconv.ParseFloat(f[0], 64)
	return x
}

// waitMidRun waits until a replica leads e2e-slow and its run has written a few events.
func (b *bench) waitMidRun(ctx context.Context, within time.Duration) (worker string, pid int32, runID int64, err error) {
	deadline := time.Now().Add(within)
	for {
		err = b.db.QueryRow(ctx, `SELECT h.worker_id, h.pid, r.id FROM bg_worker.worker_lock_holders h
			JOIN bg_worker.job_runs r ON r.job = h.job AND r.status = 'running' AND r.lock_pid = h.pid
			WHERE h.job = 'e2e-slow'
			  AND (SELECT count(*) FROM bg_worker.e2e_events e WHERE e.run_id = r.id) >= 3
			ORDER BY r.id DESC LIMIT 1`).Scan(&worker, &pid, &runID)
		if err == nil {
			return worker, pid, runID, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return "", 0, 0, err
		}
		if time.Now().After(deadline) {
			return "", 0, 0, fmt.Errorf("takeover: no leader in a run within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog waits until p's log has more than n lines containing text.
func (b *bench) waitLog(p *proc, text string, n int, within time.Duration) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && logCount(p, text) <= n {
		time.Sleep(50 * time.Millisecond)
	}
}

func logCount(p *proc, text string) int {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), text)
}

// overlaps checks the takeover history since a group started: no two e2e-slow runs overlap in time, and
// each run's committed writes form one block in commit order. A run's end is its last
// committed write or, unless it was abandoned (an abandoned run's recorded end is when the
// new leader marked it, not when it stopped), its finished_at, whichever is later.
func (b *bench) overlaps(ctx context.Context, since time.Time) (runs, writes int, err error) {
	rows, err := b.db.Query(ctx, `SELECT r.id, r.started_at, r.status,
			greatest(CASE WHEN r.status <> 'abandoned' THEN r.finished_at END,
			         (SELECT max(e.at) FROM bg_worker.e2e_events e WHERE e.run_id = r.id))
		FROM bg_worker.job_runs r
		WHERE r.job = 'e2e-slow' AND r.status <> 'skipped' AND r.started_at >= $1 ORDER BY r.started_at, r.id`, since)
	if err != nil {
		return 0, 0, fmt.Errorf("overlaps: runs: %w", err)
	}
	type r struct {
		id     int64
		start  time.Time
		status string
		end    *time.Time
	}
	var rs []r
	for rows.Next() {
		var x r
		if err := rows.Scan(&x.id, &x.start, &x.status, &x.end); err != nil {
			rows.Close()
			return 0, 0, err
		}
		rs = append(rs, x)
	}
	rows.Close()
	var latest time.Time // the latest end of any earlier run
	for i, x := range rs {
		if i > 0 && x.start.Before(latest) {
			runs++
		}
		if x.end != nil && x.end.After(latest) {
			latest = *x.end
		}
	}
	evRows, err := b.db.Query(ctx, `SELECT run_id FROM bg_worker.e2e_events WHERE job = 'e2e-slow' AND at >= $1 ORDER BY at, id`, since)
	if err != nil {
		return runs, 0, fmt.Errorf("overlaps: events: %w", err)
	}
	ids, err := pgx.CollectRows(evRows, pgx.RowTo[int64])
	if err != nil {
		return runs, 0, err
	}
	done := map[int64]bool{}
	for i, id := range ids {
		if done[id] {
			writes++
		}
		if i > 0 && ids[i-1] != id {
			done[ids[i-1]] = true
		}
	}
	return runs, writes, nil
}
