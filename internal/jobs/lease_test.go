package jobs_test

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/faultproxy"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/store"
)

// A run whose lease ends while it makes no database write is cancelled within about one
// heartbeat, through its context (the scheduler's lease cancellation), not at its next
// fenced write: here the run is waiting on a request the fault proxy holds (sync-uploads
// on its HEADs, scan-orphans on its listing), a request that would otherwise keep it
// for the bucket client's 20-second timeout. The lock session is terminated while the
// request hangs; the run must end cancelled, with lock-lost, within heartbeat + slack,
// having written nothing and deleted nothing.
func TestLeaseLossCancelsRunWaitingOnBucket(t *testing.T) {
	t.Parallel()
	// The lease notices a terminated backend at its next heartbeat (the check fails at
	// once); the slack covers the cancelled request returning and the run recording
	// its outcome.
	const bound = lockHeartbeat + 1500*time.Millisecond
	isObjectHead := func(r *http.Request) bool {
		return r.Method == http.MethodHead && strings.Count(strings.Trim(r.URL.EscapedPath(), "/"), "/") >= 1
	}
	isList := func(r *http.Request) bool {
		return r.Method == http.MethodGet && r.URL.Query().Has("list-type")
	}
	for _, tc := range []struct {
		name  string
		job   string
		stall func(*http.Request) bool
	}{
		{"sync-uploads waiting on HEADs", "sync-uploads", isObjectHead},
		{"scan-orphans waiting on a listing", "scan-orphans", isList},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			old := time.Now().Add(-48 * time.Hour)
			keys := make([]string, 20)
			for i := range keys {
				keys[i] = fmt.Sprintf("lease/%02d", i)
				h.writeFile(keys[i], "x", old) // present for sync-uploads, orphans for scan-orphans
			}
			if tc.job == "sync-uploads" {
				h.insertUploads(0, keys...)
			}
			cfg := h.config()
			cfg.OrphanDelete = true
			job := h.job(h.deps(cfg, h.client(func(c *bucket.Config) {
				c.RequestTimeout = 20 * time.Second // far beyond the bound: only the cancellation ends the wait
				c.MaxAttempts = 1
			})), tc.job)
			rowsBefore, objectsBefore := h.uploads(), h.objects()

			if err := h.proxy.SetConfig(faultproxy.Config{Stall: 1, StallFor: time.Minute, Match: tc.stall}); err != nil {
				t.Fatal(err)
			}
			h.proxy.ResetStats()
			var terminatedAt time.Time
			res := h.run(job, runOpts{cancelOnLockLoss: true, during: func(pid int32) {
				// Wait until the run hangs on a held request, then end its lease.
				for deadline := time.Now().Add(30 * time.Second); h.proxy.Stats().ByFault["stall"] == 0; time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Errorf("no request reached the stall within 30s (proxy %+v)", h.proxy.Stats())
						return
					}
				}
				terminatedAt = time.Now()
				h.terminate(pid)
			}})
			ended := time.Since(terminatedAt)
			if terminatedAt.IsZero() {
				t.FailNow()
			}
			st := h.proxy.Stats()
			t.Logf("run ended %s after its lock session was terminated (heartbeat %s): %s %v; proxy %v",
				ended.Round(time.Millisecond), lockHeartbeat, res.Status, res.Err, st.ByMethod)
			if res.Status != store.StatusCancelled || !strings.Contains(res.Row.Error, lock.ErrLockLost.Error()) {
				t.Errorf("run %s, error %q; want cancelled for %q", res.Status, res.Row.Error, lock.ErrLockLost)
			}
			if ended > bound {
				t.Errorf("run ended %s after the lease was lost; want within %s (heartbeat %s + slack)", ended, bound, lockHeartbeat)
			}
			if rows := h.uploads(); !sameRows(rowsBefore, rows) {
				t.Error("the run changed upload rows after losing its lease")
			}
			if objs := h.objects(); !maps.Equal(objectsBefore, objs) {
				t.Errorf("the run changed the bucket: %d objects, %d before", len(objs), len(objectsBefore))
			}
			if st.ByMethod[http.MethodPost] != 0 {
				t.Errorf("%d DeleteObjects calls", st.ByMethod[http.MethodPost])
			}
		})
	}
}

// scan-orphans with ORPHAN_DELETE=true checks its lock before each DeleteObjects batch,
// not once: the lock is lost while the first of two batches is on its way to the bucket
// (the lock session is terminated as the proxy receives that batch), and the second
// batch is never sent; the run ends cancelled with lock-lost. The run's context is not
// tied to its lease here (cancelOnLockLoss off), so only the check before the batch can
// stop it.
func TestScanOrphansRechecksLockBeforeEachBatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	old := time.Now().Add(-48 * time.Hour)
	const orphans = 1500 // two batches: 1000 at the end of the first listing page, 500 at the end
	for i := range orphans {
		h.writeFile(fmt.Sprintf("batch/%04d", i), "x", old)
	}
	cfg := h.config()
	cfg.OrphanDelete = true
	job := h.job(h.deps(cfg, h.client(nil)), "scan-orphans")

	var pid atomic.Int32
	var deletes atomic.Int32
	if err := h.proxy.SetConfig(faultproxy.Config{Match: func(r *http.Request) bool {
		if r.Method == http.MethodPost && r.URL.Query().Has("delete") {
			if deletes.Add(1) == 1 {
				h.terminate(pid.Load()) // before the first batch is forwarded
			}
		}
		return false // faults none: every request is forwarded
	}}); err != nil {
		t.Fatal(err)
	}
	h.proxy.ResetStats()
	res := h.run(job, runOpts{before: func(p int32) { pid.Store(p) }})
	t.Logf("%s %v; stats %v; %d DeleteObjects calls", res.Status, res.Err, res.Stats, deletes.Load())
	if n := deletes.Load(); n != 1 {
		t.Errorf("%d DeleteObjects calls; want exactly 1: the batch after the lock was lost must not be sent", n)
	}
	if !errors.Is(res.Err, lock.ErrLockLost) || res.Status != store.StatusCancelled {
		t.Errorf("status %s, err %v; want cancelled with ErrLockLost", res.Status, res.Err)
	}
	if res.Stats["deleted"] != bucket.MaxDeleteKeys {
		t.Errorf("%d deleted; want the first batch's %d", res.Stats["deleted"], bucket.MaxDeleteKeys)
	}
	if left := len(h.objects()); left != orphans-bucket.MaxDeleteKeys {
		t.Errorf("%d orphans left; want the second batch's %d untouched", left, orphans-bucket.MaxDeleteKeys)
	}
}
