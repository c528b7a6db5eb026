package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// TakeoverTrial is one fault injected into the leader mid-run.
type TakeoverTrial struct {
	Victim    string  `json:"victim"`
	NewLeader string  `json:"next_run_by"`
	Sec       float64 `json:"sec"` // fault to the next run's start (database clock)
	OldRun    string  `json:"old_run_status"`
	// OldRunEndSec is when the old run left "running" (cancelled by its own holder after
	// a terminated backend, or abandoned by the new leader), after the fault.
	OldRunEndSec float64 `json:"old_run_end_sec"`
}

// TakeoverScenario is one kind of fault, repeated.
type TakeoverScenario struct {
	Name         string          `json:"name"`
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
}

// TakeoverResult is item 6.
type TakeoverResult struct {
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

// takeover is item 6: 3 replicas of the e2e binary leading e2e-slow (a run that writes
// an event every 50 ms through the fenced path and lasts far longer than the test), the
// leader hit mid-run by kill -9, pg_terminate_backend of its lock session, or SIGSTOP.
func (b *bench) takeover(ctx context.Context) (*TakeoverResult, error) {
	o := b.opts
	iv, hb, to := o.takeoverInterval, o.lockHeartbeat, o.lockTimeout
	res := &TakeoverResult{Job: "e2e-slow", IntervalSec: iv.Seconds(), HeartbeatSec: hb.Seconds(), TimeoutSec: to.Seconds()}
	env := map[string]string{
		"WORKER_JOBS":        "e2e-slow",
		"WORKER_INTERVAL_MS": fmt.Sprint(iv.Milliseconds()),
		"LOCK_HEARTBEAT":     hb.String(),
		"LOCK_TIMEOUT":       to.String(),
		"SHUTDOWN_TIMEOUT":   "2s",
		"E2E_SLOW_FOR":       "1h",
	}
	reps := map[string]*proc{}
	defer func() {
		for _, p := range reps {
			p.stop()
		}
	}()
	start := func(id string) error {
		p, err := b.startReplica(b.binE2E, id, benchBucket, env)
		if err == nil {
			reps[id] = p
		}
		return err
	}
	for i := 1; i <= 3; i++ {
		if err := start(fmt.Sprintf("bench-to-r%d", i)); err != nil {
			return nil, err
		}
	}

	crash := iv + to/2
	pause := to + iv + to/2
	scenarios := []struct {
		name, bound string
		boundD      time.Duration
	}{
		{"kill -9", "interval + LOCK_TIMEOUT/2", crash},
		{"pg_terminate_backend", "interval + LOCK_TIMEOUT/2", crash},
		{"SIGSTOP", "LOCK_TIMEOUT + interval + LOCK_TIMEOUT/2", pause},
	}
	type lateCheck struct {
		scenario int // index in res.Scenarios
		runID    int64
		after    time.Time
	}
	var late []lateCheck
	for _, sc := range scenarios {
		s := TakeoverScenario{Name: sc.name, Bound: sc.bound, BoundSec: sc.boundD.Seconds()}
		var secs []float64
		for trial := 0; trial < o.takeoverTrials; trial++ {
			victim, lockPID, runID, err := b.waitMidRun(ctx, 60*time.Second)
			if err != nil {
				return res, err
			}
			// A random phase within the tick, so the trials sample where in its window
			// the fault lands (the wait for the next tick is part of the takeover).
			time.Sleep(rand.N(iv))
			vp := reps[victim]
			if vp == nil {
				return res, fmt.Errorf("takeover: holder %s is not one of ours", victim)
			}
			var t0 time.Time
			if err := b.db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t0); err != nil {
				return res, err
			}
			switch sc.name {
			case "kill -9":
				vp.kill()
			case "pg_terminate_backend":
				if _, err := b.db.Exec(ctx, `SELECT pg_terminate_backend($1)`, lockPID); err != nil {
					return res, err
				}
			case "SIGSTOP":
				if err := vp.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					return res, err
				}
			}
			// The next scheduled run; after a crash or a pause it must be another
			// replica's, after a terminated backend any healthy replica may win.
			exclude := victim
			if sc.name == "pg_terminate_backend" {
				exclude = ""
			}
			tr := TakeoverTrial{Victim: victim}
			var next time.Time
			deadline := time.Now().Add(sc.boundD + 30*time.Second)
			for {
				err := b.db.QueryRow(ctx, `SELECT worker_id, started_at FROM job_runs
					WHERE job = 'e2e-slow' AND trigger = 'schedule' AND status <> 'skipped' AND started_at > $1 AND worker_id <> $2
					ORDER BY started_at LIMIT 1`, t0, exclude).Scan(&tr.NewLeader, &next)
				if err == nil {
					break
				}
				if !errors.Is(err, pgx.ErrNoRows) {
					return res, err
				}
				if time.Now().After(deadline) {
					return res, fmt.Errorf("takeover %s: no new run within %s", sc.name, sc.boundD+30*time.Second)
				}
				time.Sleep(20 * time.Millisecond)
			}
			tr.Sec = next.Sub(t0).Seconds()
			var fin *time.Time
			_ = b.db.QueryRow(ctx, `SELECT status, finished_at FROM job_runs WHERE id = $1`, runID).Scan(&tr.OldRun, &fin)
			if fin != nil {
				tr.OldRunEndSec = fin.Sub(t0).Seconds()
			}
			if tr.NewLeader == victim {
				s.SameReplica++
			}
			// Restore three healthy replicas.
			switch sc.name {
			case "kill -9":
				if err := start(victim); err != nil {
					return res, err
				}
			case "SIGSTOP":
				lost := logCount(vp, "Lost lock")
				_ = vp.cmd.Process.Signal(syscall.SIGCONT)
				// The woken holder finds out at its next heartbeat; its run's writes
				// after the takeover are counted at the end.
				b.waitLog(vp, "Lost lock", lost, 10*time.Second)
				late = append(late, lateCheck{len(res.Scenarios), runID, next})
			}
			s.Trials = append(s.Trials, tr)
			secs = append(secs, tr.Sec)
			b.logf("takeover %s #%d: %s hit, next run by %s after %.2fs (bound %.2fs); old run %s at +%.2fs",
				sc.name, trial+1, victim, tr.NewLeader, tr.Sec, sc.boundD.Seconds(), tr.OldRun, tr.OldRunEndSec)
		}
		s.MedianSec = median(secs)
		for _, x := range secs {
			s.MaxSec = max(s.MaxSec, x)
		}
		s.MaxVsBound = s.MaxSec / s.BoundSec
		res.Scenarios = append(res.Scenarios, s)
	}
	for _, p := range reps {
		p.stop()
	}
	for _, lc := range late {
		var n int
		if err := b.db.QueryRow(ctx, `SELECT count(*) FROM e2e_events WHERE run_id = $1 AND at > $2`, lc.runID, lc.after).Scan(&n); err != nil {
			return res, err
		}
		res.Scenarios[lc.scenario].LateWrites += n
	}
	runs, writes, err := b.overlaps(ctx)
	if err != nil {
		return res, err
	}
	for i := range res.Scenarios {
		res.Scenarios[i].OverlapRuns, res.Scenarios[i].OverlapWrite = runs, writes
	}
	return res, nil
}

// waitMidRun waits until a replica leads e2e-slow and its run has written a few events.
func (b *bench) waitMidRun(ctx context.Context, within time.Duration) (worker string, pid int32, runID int64, err error) {
	deadline := time.Now().Add(within)
	for {
		err = b.db.QueryRow(ctx, `SELECT h.worker_id, h.pid, r.id FROM worker_lock_holders h
			JOIN job_runs r ON r.job = h.job AND r.status = 'running' AND r.lock_pid = h.pid
			WHERE h.job = 'e2e-slow'
			  AND (SELECT count(*) FROM e2e_events e WHERE e.run_id = r.id) >= 3
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

// overlaps checks the whole takeover history: no two e2e-slow runs overlap in time
// (an abandoned run's recorded end is its abandonment, so it is skipped), and each run's
// committed writes form one block in commit order.
func (b *bench) overlaps(ctx context.Context) (runs, writes int, err error) {
	rows, err := b.db.Query(ctx, `SELECT id, started_at, finished_at, status FROM job_runs
		WHERE job = 'e2e-slow' AND status <> 'skipped' ORDER BY started_at, id`)
	if err != nil {
		return 0, 0, err
	}
	type r struct {
		id       int64
		start    time.Time
		finished *time.Time
		status   string
	}
	var rs []r
	for rows.Next() {
		var x r
		if err := rows.Scan(&x.id, &x.start, &x.finished, &x.status); err != nil {
			rows.Close()
			return 0, 0, err
		}
		rs = append(rs, x)
	}
	rows.Close()
	for i := 1; i < len(rs); i++ {
		p := rs[i-1]
		if p.status != "abandoned" && p.finished != nil && rs[i].start.Before(*p.finished) {
			runs++
		}
	}
	evRows, err := b.db.Query(ctx, `SELECT run_id FROM e2e_events WHERE job = 'e2e-slow' ORDER BY at, id`)
	if err != nil {
		return runs, 0, err
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
