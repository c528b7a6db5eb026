package jobs_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/faultproxy"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/store"
)

// A key the bucket can never answer is an answer about that upload: it backs off like a
// missing object with the reason recorded, and past SYNC_PENDING_TTL it is FAILED. The
// run succeeds; the other uploads are verified.
func TestSyncUploadsRejectedKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	job := h.job(h.deps(cfg, h.client(nil)), "sync-uploads")
	h.put("k/present.txt", "p", "")
	tooLong := "k/" + strings.Repeat("x", 1100)
	// "" and an over-long key are refused before any request; "/" and "../x" go to the
	// store, whose answer (400 or 404) is about the key either way.
	young := map[string]string{"": "empty key", tooLong: "at most 1024", "/": "", "../x": ""}
	var keys []string
	for k := range young {
		keys = append(keys, k)
	}
	ids := h.insertUploads(0, append(keys, "k/present.txt")...)
	oldIDs := h.insertUploads(48*time.Hour, "k/old-"+strings.Repeat("y", 1100))

	res := h.run(job, runOpts{})
	if res.Status != store.StatusSucceeded {
		t.Fatalf("run: %s %v; want succeeded (a rejected key is the upload's answer, not the run's)", res.Status, res.Err)
	}
	if res.Stats["rejected"] < 3 || res.Stats["checked"] != 6 || res.Stats["uploaded"] != 1 || res.Stats["errors"] != 0 {
		t.Errorf("stats %v; want 6 checked (at least 3 rejected keys), 1 uploaded, 0 errors", res.Stats)
	}
	rows := h.uploads()
	for i, k := range keys {
		r := rows[ids[i]]
		if r.Status != store.UploadPending || r.CheckCount != 1 || !strings.Contains(r.LastError.String, young[k]) ||
			!r.NextCheckAt.Equal(res.Row.TickAt.Add(cfg.Interval)) {
			t.Errorf("%.20q: %s; want PENDING, 1 check, backoff one tick, last_error naming %q", k, fmtRow(r), young[k])
		}
	}
	if r := rows[oldIDs[0]]; r.Status != store.UploadFailed || !strings.Contains(r.LastError.String, "the bucket rejects this key") {
		t.Errorf("old rejected key: %s; want FAILED with the reason", fmtRow(r))
	}
	if r := rows[ids[len(ids)-1]]; r.Status != store.UploadUploaded {
		t.Errorf("present: %s", fmtRow(r))
	}
	// Nothing due any more: the next run sends no request at all.
	h.proxy.ResetStats()
	if res = h.run(job, runOpts{}); res.Status != store.StatusSucceeded || h.proxy.Stats().Requests != 0 {
		t.Errorf("second run: %s, %d requests; want none", res.Status, h.proxy.Stats().Requests)
	}
}

// Rows the application holds locked are skipped (checked next tick), never waited for;
// every other due row is verified in the same run.
func TestSyncUploadsSkipsLockedRows(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	job := h.job(h.deps(h.config(), h.client(nil)), "sync-uploads")
	var keys []string
	for i := range 200 {
		k := fmt.Sprintf("l/%03d.txt", i)
		h.writeFile(k, "x", time.Time{})
		keys = append(keys, k)
	}
	ids := h.insertUploads(0, keys...)

	// The application: five rows locked in a transaction it keeps open for a minute.
	appTx, err := h.db.Begin(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer appTx.Rollback(context.Background()) //nolint:errcheck
	if _, err := appTx.Exec(h.ctx, `SELECT 1 FROM uploads WHERE id = ANY($1) FOR UPDATE`, ids[:5]); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	res := h.run(job, runOpts{})
	took := time.Since(started)
	if res.Status != store.StatusSucceeded || res.Stats["uploaded"] != 195 || res.Stats["not_written"] != 5 {
		t.Fatalf("run with 5 rows locked: %s %v stats %v; want 195 uploaded, 5 not written", res.Status, res.Err, res.Stats)
	}
	if took > store.AppLockTimeout {
		t.Errorf("run took %s with rows locked: it waited for them", took)
	}
	rows := h.uploads()
	for i, id := range ids {
		r := rows[id]
		if locked := i < 5; locked != (r.Status == store.UploadPending) || (locked && r.CheckCount != 0) {
			t.Errorf("%s (locked %v): %s", keys[i], locked, fmtRow(r))
		}
	}
	// The application commits; the skipped rows are still due and verified next run.
	if err := appTx.Rollback(h.ctx); err != nil {
		t.Fatal(err)
	}
	if res = h.run(job, runOpts{}); res.Status != store.StatusSucceeded || res.Stats["uploaded"] != 5 {
		t.Errorf("next run: %s %v stats %v; want the 5 rows verified", res.Status, res.Err, res.Stats)
	}
}

// A table the application locks outright (LOCK TABLE … ACCESS EXCLUSIVE) blocks the run
// for at most the worker's lock_timeout; the run ends with a line naming the table and
// changes nothing.
func TestSyncUploadsTableLocked(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	job := h.job(h.deps(h.config(), h.client(nil)), "sync-uploads")
	h.put("t/present.txt", "p", "")
	h.insertUploads(0, "t/present.txt")
	before := h.uploads()
	appTx, err := h.db.Begin(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer appTx.Rollback(context.Background()) //nolint:errcheck
	if _, err := appTx.Exec(h.ctx, `LOCK TABLE uploads IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	res := h.run(job, runOpts{})
	took := time.Since(started)
	if res.Status != store.StatusFailed || !strings.Contains(res.Row.Error, "uploads table public.uploads is locked by another session") {
		t.Fatalf("run against a locked table: %s, error %q", res.Status, res.Row.Error)
	}
	if took > 3*store.AppLockTimeout {
		t.Errorf("run took %s against a locked table; lock_timeout is %s", took, store.AppLockTimeout)
	}
	if !strings.Contains(res.Logs, "Sync job blocked by a lock on the uploads table") || !strings.Contains(res.Logs, " table=public.uploads ") {
		t.Errorf("no log line names the table:\n%s", res.Logs)
	}
	if err := appTx.Rollback(h.ctx); err != nil {
		t.Fatal(err)
	}
	if after := h.uploads(); !sameRows(before, after) {
		t.Error("a blocked run changed rows")
	}
}

// A bucket that stops answering stops the run after a bounded number of failed HEADs,
// not after the whole backlog; the failed uploads back off, the rest stay due.
func TestSyncUploadsStopsWhenTheBucketStopsAnswering(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.SyncConcurrency = 4 // stops after max(2×4, 16) = 16 failures in a row
	job := h.job(h.deps(cfg, h.client(nil)), "sync-uploads")
	var keys []string
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("d/%03d", i))
	}
	h.insertUploads(0, keys...)
	if err := h.proxy.SetConfig(faultproxy.Config{Err503: 1, Match: func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/d/") // object HEADs only: the bucket check passes
	}}); err != nil {
		t.Fatal(err)
	}
	res := h.run(job, runOpts{})
	if res.Status != store.StatusFailed || !strings.Contains(res.Row.Error, "bucket not answering: 16 HEAD requests in a row failed") {
		t.Fatalf("run: %s, error %q", res.Status, res.Row.Error)
	}
	if heads := res.Stats["head_requests"]; heads < 16 || heads > 16+int64(cfg.SyncConcurrency) {
		t.Errorf("%d HEADs before stopping; want 16 … %d, not the backlog of 300", heads, 16+cfg.SyncConcurrency)
	}
	var backedOff, due int
	err := h.db.QueryRow(h.ctx, `SELECT count(*) FILTER (WHERE error_count > 0 AND next_check_at > now()),
		count(*) FILTER (WHERE next_check_at <= now()) FROM bg_worker.upload_checks`).Scan(&backedOff, &due)
	if err != nil {
		t.Fatal(err)
	}
	if int64(backedOff) != res.Stats["retry_later"] || backedOff+due != 300 {
		t.Errorf("%d backed off (run: %d to retry), %d still due; want them to add up to 300", backedOff, res.Stats["retry_later"], due)
	}
}

// A bucket that stops answering altogether (requests hang) stops the run once no HEAD
// has completed for the stall limit, instead of waiting out every request's retries.
func TestSyncUploadsStopsWhenTheBucketHangs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.SyncConcurrency = 4
	c := h.client(func(bc *bucket.Config) { bc.RequestTimeout, bc.MaxAttempts = 30*time.Second, 1 })
	job := jobs.SyncUploadsStallAfter(h.deps(cfg, c), time.Second)
	var keys []string
	for i := range 50 {
		keys = append(keys, fmt.Sprintf("s/%03d", i))
	}
	h.insertUploads(0, keys...)
	if err := h.proxy.SetConfig(faultproxy.Config{Stall: 1, StallFor: time.Minute, Match: func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/s/") // object HEADs only: the bucket check passes
	}}); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	res := h.run(job, runOpts{})
	took := time.Since(started)
	if res.Status != store.StatusFailed || !strings.Contains(res.Row.Error, "bucket not answering") ||
		!strings.Contains(res.Row.Error, "none answered for") {
		t.Fatalf("run: %s, error %q", res.Status, res.Row.Error)
	}
	if took > 5*time.Second {
		t.Errorf("run took %s against a hanging bucket; the stall limit is 1s", took)
	}
	if n := h.proxy.Stats().ByMethod[http.MethodHead]; n > int64(cfg.SyncConcurrency)+1 {
		t.Errorf("%d HEADs sent; want only the first %d in flight (plus the bucket check)", n, cfg.SyncConcurrency)
	}
	if rows := h.uploads(); len(rows) != 50 {
		t.Fatalf("%d rows", len(rows))
	} else {
		for _, r := range rows {
			if r.Status != store.UploadPending || r.CheckCount != 0 {
				t.Errorf("%q changed: %s", r.Key, fmtRow(r))
			}
		}
	}
}
