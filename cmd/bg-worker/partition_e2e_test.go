package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/tcpproxy"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

// partitionRound is what one round of TestE2EPartitionedLeader observed. Times named
// ...DB are on the database clock; the others are local (the replicas' log times are on
// the same machine's clock).
type partitionRound struct {
	old, next      string    // the partitioned leader and the replica that took over
	cut, healed    time.Time // local
	cutDB, healDB  time.Time
	takeoverDB     time.Time // the new holder's held_since
	endDB          time.Time // the round's checks cover up to here
	reset          bool      // healed by resetting the connections instead of delivering
	lateBytes      int64     // what the partition held and the heal delivered
	sessLost, lost time.Time // the old leader's "Lost lock" lines (session, scheduler)
}

// Item 4 of issue 10 (claims are fenced), with the network cut rather than the process
// paused: each round cuts the leader of e2e-fast off from PostgreSQL (a TCP proxy that
// holds every byte, both ways, sockets open) at a random point of a window, for longer
// than LOCK_TIMEOUT, so that the server frees the lock (idle_session_timeout) and a
// standby takes over while the old leader's statements are still held. Most rounds then
// heal by delivering what was held, just as a window opens, so that any window claim the
// old leader sent races the new leader's claim of that window; every third round heals
// by resetting the connections, as a long partition really ends. After each round:
//
//	(a) no window claimed by the old leader from the takeover on (a claim is fenced in
//	    its statement: the claiming replica's lock session must hold the lock);
//	(b) the old leader logged "Lost lock" within its client bound of the cut
//	    (LOCK_TIMEOUT/2 + one heartbeat + slack), by its own log times, not at the heal;
//	(c) from one window after the takeover on, every window has a run;
//
// and at the end (d) no two non-abandoned runs overlap, nor their writes.
//
// Every replica reaches PostgreSQL through its own proxy, so whichever one leads can be
// cut; a proxy that is not partitioned only forwards, as a direct connection would.
func TestE2EPartitionedLeader(t *testing.T) {
	t.Parallel()
	const (
		job        = "e2e-fast"
		interval   = 200 * time.Millisecond
		heartbeat  = 250 * time.Millisecond // LOCK_HEARTBEAT
		lockTO     = 3 * time.Second        // LOCK_TIMEOUT
		rounds     = 7
		hold       = lockTO + 1500*time.Millisecond // the lock is freed ~LOCK_TIMEOUT after the cut
		lostBound  = lockTO/2 + heartbeat + 750*time.Millisecond
		maxMissing = 1 // windows without a run per round, beyond the takeover's one window
	)
	dbURL := testenv.DatabaseURL(t)
	db := e2eDB(t, dbURL)
	env := e2eEnv(dbURL)
	env["WORKER_JOBS"] = job
	env["WORKER_INTERVAL_MS"] = fmt.Sprint(interval.Milliseconds())
	env["LOCK_HEARTBEAT"] = heartbeat.String()
	env["LOCK_TIMEOUT"] = lockTO.String()
	env["LOG_FORMAT"] = "json" // parseable times for (b)
	env["LOG_LEVEL"] = "info"  // standbys would log every tick at debug

	ps := map[string]*proc{}
	proxies := map[string]*tcpproxy.Proxy{}
	for i := range 3 {
		id := fmt.Sprintf("r%d", i+1)
		px, purl := proxyFor(t, dbURL)
		renv := map[string]string{}
		for k, v := range env {
			renv[k] = v
		}
		renv["DATABASE_URL"] = purl
		proxies[id] = px
		ps[id] = startReplica(t, id, renv)
	}

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)
	var rs []partitionRound
	since := time.Time{} // DB clock: the previous round's end
	for i := range rounds {
		r := partitionRound{reset: i%3 == 2}
		// A settled leader: it holds the lock and has run a window since the last round.
		poll(t, 20*time.Second, fmt.Sprintf("round %d: a leader running windows", i+1), func() bool {
			w, _ := holder(t, db, job)
			if ps[w] == nil {
				return false
			}
			var n int
			err := db.QueryRow(context.Background(), `SELECT count(*) FROM job_runs
				WHERE job = $1 AND trigger = 'schedule' AND worker_id = $2 AND status = 'succeeded' AND started_at > $3`,
				job, w, since).Scan(&n)
			r.old = w
			return err == nil && n >= 2
		})

		// Cut at a random point of a window.
		off := clockOffset(t, db)
		sleepUntil(windowStart(time.Now().Add(off), interval).Add(interval + time.Duration(rng.Int64N(int64(interval)))).Add(-off))
		r.cut = time.Now()
		proxies[r.old].Partition()
		r.cutDB = r.cut.Add(off)

		// The takeover: the server ends the silent lock session ~LOCK_TIMEOUT after its
		// last statement, and a standby takes the lock at its next tick.
		poll(t, lockTO+10*time.Second, fmt.Sprintf("round %d: a standby takes over from %s", i+1, r.old), func() bool {
			w, _ := holder(t, db, job)
			if w == "" || w == r.old {
				return false
			}
			r.next = w
			// held_since is the new holder's holder_since once it has recorded itself
			// (right after taking the lock); until then the view falls back to its
			// session's start, which is older than the takeover.
			err := db.QueryRow(context.Background(), `SELECT held_since FROM worker_lock_holders WHERE job = $1`, job).Scan(&r.takeoverDB)
			return err == nil && r.takeoverDB.After(r.cutDB)
		})

		// Hold the cut for its planned length (longer than LOCK_TIMEOUT), then heal as a
		// window opens (1 ms in, before the new leader's tick, which wakes a few ms past
		// the boundary): a held claim, delivered now, would land in a window nobody has
		// claimed yet.
		healAt := r.cut.Add(hold)
		if !r.reset {
			healAt = windowStart(healAt.Add(off), interval).Add(interval + time.Millisecond).Add(-off)
		}
		sleepUntil(healAt)
		before := proxies[r.old].LateBytes()
		if r.reset {
			proxies[r.old].HealReset()
		} else {
			proxies[r.old].Heal()
		}
		r.healed = time.Now()
		r.healDB = r.healed.Add(off)
		r.lateBytes = proxies[r.old].LateBytes() - before

		// The old leader's "Lost lock" lines, whenever they come; (b) checks when.
		poll(t, 20*time.Second, fmt.Sprintf("round %d: %s logs the loss", i+1, r.old), func() bool {
			r.sessLost, r.lost = lockLossLines(ps[r.old].out.String(), job, r.cut)
			return !r.lost.IsZero()
		})
		// Let the new leader run a few windows after the heal: what the heal delivered
		// reached the server at once, so by then it has been executed.
		poll(t, 10*time.Second, fmt.Sprintf("round %d: runs after the heal", i+1), func() bool {
			var n int
			_ = db.QueryRow(context.Background(), `SELECT count(*) FROM job_runs
				WHERE job = $1 AND trigger = 'schedule' AND started_at > $2`, job, r.healDB).Scan(&n)
			return n >= 3
		})
		r.endDB = dbNow(t, db)
		if w, _ := holder(t, db, job); w != r.next {
			t.Fatalf("round %d: the lock moved from %s to %q after the heal; the new leader should keep it", i+1, r.next, w)
		}
		since = r.endDB
		rs = append(rs, r)
	}
	for _, p := range ps {
		p.stop(t)
	}

	runs := loadRuns(t, db, job)
	var maxLost time.Duration
	var late int64
	for i, r := range rs {
		// (a) From the takeover to the round's end only the new leader holds the lock, so
		// every claim in that span must be its.
		var foreign []string
		for _, run := range runs {
			if !run.StartedAt.Before(r.takeoverDB) && run.StartedAt.Before(r.endDB) && run.WorkerID != r.next {
				foreign = append(foreign, fmt.Sprintf("run %d by %s (%s, window %s) %s after the takeover",
					run.ID, run.WorkerID, run.Status, run.TickAt.Format("15:04:05.000"), run.StartedAt.Sub(r.takeoverDB)))
			}
		}
		// (b)
		lostAfter, sessLostAfter := r.lost.Sub(r.cut), r.sessLost.Sub(r.cut)
		maxLost = max(maxLost, lostAfter)
		// (c) Windows from one after the takeover's window to the last one that began
		// before the round's end minus a window (its claim may still be in flight).
		claimed := map[time.Time]bool{}
		for _, run := range runs {
			claimed[run.TickAt.UTC()] = true
		}
		var missing []string
		from := windowStart(r.takeoverDB, interval).Add(2 * interval)
		to := windowStart(r.endDB, interval).Add(-interval)
		windows := 0
		for w := from; w.Before(to); w = w.Add(interval) {
			windows++
			if !claimed[w.UTC()] {
				missing = append(missing, w.Format("15:04:05.000"))
			}
		}
		how := "heal delivers"
		if r.reset {
			how = "heal resets"
		} else {
			late += r.lateBytes
		}
		t.Logf("round %d (%s): %s cut at +%dms of its window for %s; %s took over %s after the cut; "+
			"Lost lock after %s (session %s); %d bytes held and delivered late; claims by a non-holder %d; windows after the takeover %d, missing %d %v",
			i+1, how, r.old, r.cutDB.Sub(windowStart(r.cutDB, interval)).Milliseconds(), r.healed.Sub(r.cut).Round(time.Millisecond),
			r.next, r.takeoverDB.Sub(r.cutDB).Round(time.Millisecond), lostAfter.Round(time.Millisecond),
			sessLostAfter.Round(time.Millisecond), r.lateBytes, len(foreign), windows, len(missing), missing)
		for _, f := range foreign {
			t.Errorf("round %d: window claimed by a non-holder: %s", i+1, f)
		}
		if lostAfter > lostBound {
			t.Errorf("round %d: %s logged \"Lost lock\" %s after the cut, want within %s (LOCK_TIMEOUT/2 + a heartbeat + slack); the heal was %s after the cut",
				i+1, r.old, lostAfter, lostBound, r.healed.Sub(r.cut))
		}
		if len(missing) > maxMissing {
			t.Errorf("round %d: %d of %d windows after the takeover have no run: %v", i+1, len(missing), windows, missing)
		}
	}
	t.Logf("%d rounds, latest \"Lost lock\" %s after a cut (bound %s)", len(rs), maxLost.Round(time.Millisecond), lostBound)
	// The old leaders' statements must really have arrived late (at least their lock
	// sessions' goodbyes), or (a) proved nothing about a claim delivered after a takeover.
	if late == 0 {
		t.Errorf("no byte held by a partition was delivered by a heal: the proxy did not deliver late")
	}
	// (d)
	checkNoOverlap(t, db, job)
}

// proxyFor starts a TCP proxy to raw's host and returns it with raw pointed at it.
func proxyFor(t *testing.T, raw string) (*tcpproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse database URL: %v", err)
	}
	px, err := tcpproxy.Listen(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	u.Host = px.Addr()
	return px, u.String()
}

// clockOffset is the database clock minus the local clock.
func clockOffset(t *testing.T, db *pgxpool.Pool) time.Duration {
	t.Helper()
	sent := time.Now()
	now := dbNow(t, db)
	return now.Sub(sent.Add(time.Since(sent) / 2))
}

// windowStart is the start of the window at: like the claim's date_bin, windows are
// aligned to the Unix epoch (time.Truncate would align them to year 1).
func windowStart(at time.Time, interval time.Duration) time.Time {
	ms, iv := at.UnixMilli(), interval.Milliseconds()
	return time.UnixMilli(ms - ms%iv)
}

func sleepUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// lockLossLines finds, in a replica's JSON log, the first "Lost lock" lines of job
// logged after cut: the lock session's (its heartbeat failed) and the scheduler's (it
// stopped leading, which is what cancels the run and stops the claims).
func lockLossLines(out, job string, cut time.Time) (session, scheduler time.Time) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
			Job  string    `json:"job"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Job != job || l.Time.Before(cut) {
			continue
		}
		switch {
		case strings.HasPrefix(l.Msg, "Lost lock: heartbeat failed") && session.IsZero():
			session = l.Time
		case strings.HasPrefix(l.Msg, "Lost lock; no longer leading") && scheduler.IsZero():
			scheduler = l.Time
		}
	}
	return session, scheduler
}
