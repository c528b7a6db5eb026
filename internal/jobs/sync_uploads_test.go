package jobs_test

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/faultproxy"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/logging"
	"github.com/bg-worker/bg-worker/internal/store"
)

const textPlain = "text/plain; charset=utf-8"

// A mixed set ends in exactly the right statuses, sizes and ETags; a second run changes
// nothing and HEADs nothing but the bucket; a re-due missing upload backs off doubling, up
// to SYNC_MAX_BACKOFF.
func TestSyncUploadsMixed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	job := h.job(h.deps(cfg, h.client(nil)), "sync-uploads")

	present := []string{
		"uploads/plain.txt",
		"uploads/日本語/ファイル-ü-ß-😀.txt",
		"uploads/with space.txt",
		"uploads/a+b.txt",
		"uploads/100%25 literal%.txt",
		"uploads/hash#tag.txt",
		"uploads/what?x=1&y=2.txt",
		"/leading/slash.txt",
		"uploads/semi;colon:at@eq=comma,dollar$bang!'()*~.txt",
		longKey("uploads/long/"),
	}
	if n := len(longKey("uploads/long/")); n != 1024 {
		t.Fatalf("long key is %d bytes", n)
	}
	etags := map[string]string{}
	bodies := map[string]string{}
	for i, k := range present {
		bodies[k] = fmt.Sprintf("body %d of %q", i, k)
		etags[k] = h.put(k, bodies[k], textPlain)
	}
	h.writeFile("uploads/raw/no-etag.bin", "12345", time.Time{}) // no ETag from versitygw
	oldPresent := "uploads/old but present.txt"
	bodies[oldPresent] = "old body"
	etags[oldPresent] = h.put(oldPresent, bodies[oldPresent], "")
	youngMissing := []string{"uploads/young-missing.txt", "uploads/young missing ü?#+%.txt"}
	oldMissing := []string{"uploads/old-missing.txt", "/old/leading+%20.txt"}

	ids := map[string]int64{}
	for _, set := range []struct {
		age  time.Duration
		keys []string
	}{
		{0, present}, {0, []string{"uploads/raw/no-etag.bin"}}, {0, youngMissing},
		{48 * time.Hour, oldMissing}, {48 * time.Hour, []string{oldPresent}},
		{0, []string{"uploads/already-uploaded.txt", "uploads/not-due.txt"}},
	} {
		for i, id := range h.insertUploads(set.age, set.keys...) {
			ids[set.keys[i]] = id
		}
	}
	h.exec(`UPDATE uploads SET status = 'UPLOADED', size_bytes = 1, verified_at = now() WHERE object_key = 'uploads/already-uploaded.txt'`)
	h.setNextCheck("uploads/not-due.txt", time.Hour, 0)
	due := len(present) + 1 + len(youngMissing) + len(oldMissing) + 1
	before := h.uploads()

	// Run 1.
	h.proxy.ResetStats()
	res := h.run(job, runOpts{})
	if res.Status != store.StatusSucceeded || res.Err != nil {
		t.Fatalf("run 1: %s %v", res.Status, res.Err)
	}
	if got := h.proxy.Stats().ByMethod[http.MethodHead]; got != int64(1+due) {
		t.Errorf("run 1: %d HEAD requests; want %d (bucket + %d due uploads)", got, 1+due, due)
	}
	wantStats := map[string]int64{"due": int64(due), "checked": int64(due), "uploaded": int64(len(present) + 2),
		"failed": 2, "still_pending": 2, "errors": 0, "pending_total": int64(due + 1)}
	for k, v := range wantStats {
		if res.Stats[k] != v {
			t.Errorf("run 1 stats[%s] = %d; want %d (stats %v)", k, res.Stats[k], v, res.Stats)
		}
	}
	after := h.uploads()
	for _, k := range append(present, oldPresent) {
		r := after[ids[k]]
		if r.Status != store.UploadUploaded || r.Size != int8v(int64(len(bodies[k]))) ||
			r.ETag != textv(etags[k]) || !r.VerifiedAt.Valid || r.CheckCount != 1 || r.LastError.Valid {
			t.Errorf("%q: %s; want UPLOADED size %d etag %s", k, fmtRow(r), len(bodies[k]), etags[k])
		}
		if k != oldPresent && r.ContentType != textv(textPlain) {
			t.Errorf("%q: content type %v", k, r.ContentType)
		}
	}
	if r := after[ids["uploads/raw/no-etag.bin"]]; r.Status != store.UploadUploaded || r.Size != int8v(5) || r.ETag.Valid {
		t.Errorf("file without ETag: %s; want UPLOADED, size 5, etag NULL", fmtRow(r))
	}
	for _, k := range youngMissing {
		r := after[ids[k]]
		if r.Status != store.UploadPending || r.CheckCount != 1 || !r.NextCheckAt.Equal(res.Row.TickAt.Add(cfg.Interval)) || r.LastError.Valid {
			t.Errorf("%q: %s; want PENDING, 1 check, next check one tick (%s) after the run's tick", k, fmtRow(r), cfg.Interval)
		}
	}
	for _, k := range oldMissing {
		r := after[ids[k]]
		if r.Status != store.UploadFailed || r.CheckCount != 1 || !strings.Contains(r.LastError.String, "SYNC_PENDING_TTL") || r.Size.Valid {
			t.Errorf("%q: %s; want FAILED with a reason", k, fmtRow(r))
		}
	}
	for _, k := range []string{"uploads/already-uploaded.txt", "uploads/not-due.txt"} {
		if after[ids[k]] != before[ids[k]] {
			t.Errorf("%q changed: %s -> %s", k, fmtRow(before[ids[k]]), fmtRow(after[ids[k]]))
		}
	}
	for _, want := range []string{
		"[sync-uploads] Starting sync job...",
		fmt.Sprintf("[sync-uploads] Found %d PENDING uploads in DB", due+1),
		"[sync-uploads] Upload EXISTS in R2",
		fmt.Sprintf(" upload_id=%d key=uploads/plain.txt size=", ids["uploads/plain.txt"]),
		"[sync-uploads] Upload MISSING in R2",
		fmt.Sprintf(" upload_id=%d key=uploads/young-missing.txt check_count=0", ids["uploads/young-missing.txt"]),
		"[sync-uploads] Sync job completed",
		" checked=16 uploaded=12 failed=2 still_pending=2 errors=0 duration=",
	} {
		if !strings.Contains(res.Logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if n := strings.Count(res.Logs, " INFO "); n != 3 {
		t.Errorf("%d info lines; want 3 (start, found, summary):\n%s", n, res.Logs)
	}

	// Run 2: nothing is due; nothing changes; no request is sent (not even the bucket check).
	h.proxy.ResetStats()
	res = h.run(job, runOpts{})
	if res.Status != store.StatusSucceeded || res.Stats["checked"] != 0 {
		t.Fatalf("run 2: %s %v stats %v", res.Status, res.Err, res.Stats)
	}
	if st := h.proxy.Stats(); st.Requests != 0 {
		t.Errorf("run 2: proxy saw %d requests (%v); want none", st.Requests, st.ByMethod)
	}
	if again := h.uploads(); !sameRows(after, again) {
		t.Errorf("run 2 changed rows")
	}

	// Run 3: the two young missing uploads are due again; one has 20 checks behind it.
	h.setNextCheck(youngMissing[0], 0, 1)
	h.setNextCheck(youngMissing[1], 0, 20)
	h.proxy.ResetStats()
	res = h.run(job, runOpts{})
	if res.Status != store.StatusSucceeded || res.Stats["checked"] != 2 || res.Stats["still_pending"] != 2 {
		t.Fatalf("run 3: %s %v stats %v", res.Status, res.Err, res.Stats)
	}
	if got := h.proxy.Stats().ByMethod[http.MethodHead]; got != 3 {
		t.Errorf("run 3: %d HEADs; want 3", got)
	}
	final := h.uploads()
	if r := final[ids[youngMissing[0]]]; r.CheckCount != 2 || !r.NextCheckAt.Equal(res.Row.TickAt.Add(2*cfg.Interval)) {
		t.Errorf("second miss: %s; want 2 checks and a backoff of 2 ticks", fmtRow(r))
	}
	if r := final[ids[youngMissing[1]]]; r.CheckCount != 21 || !r.NextCheckAt.Equal(res.Row.TickAt.Add(cfg.SyncMaxBackoff)) {
		t.Errorf("21st miss: %s; want the backoff capped at SYNC_MAX_BACKOFF %s", fmtRow(r), cfg.SyncMaxBackoff)
	}
}

// With R2_PREFIX set, only uploads under it are HEADed.
func TestSyncUploadsPrefix(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.R2Prefix = "tenant-a/"
	job := h.job(h.deps(cfg, h.client(nil)), "sync-uploads")
	h.put("tenant-a/x", "x", "")
	h.put("tenant-b/y", "y", "")
	ids := h.insertUploads(0, "tenant-a/x", "tenant-b/y", "tenant-a")
	h.proxy.ResetStats()
	res := h.run(job, runOpts{})
	if res.Status != store.StatusSucceeded || res.Stats["checked"] != 1 || res.Stats["pending_total"] != 1 {
		t.Fatalf("%s %v stats %v", res.Status, res.Err, res.Stats)
	}
	if got := h.proxy.Stats().ByMethod[http.MethodHead]; got != 2 {
		t.Errorf("%d HEADs; want 2 (bucket, tenant-a/x)", got)
	}
	rows := h.uploads()
	if rows[ids[0]].Status != store.UploadUploaded || rows[ids[1]].Status != store.UploadPending || rows[ids[1]].CheckCount != 0 ||
		rows[ids[2]].CheckCount != 0 {
		t.Errorf("rows: %s / %s / %s", fmtRow(rows[ids[0]]), fmtRow(rows[ids[1]]), fmtRow(rows[ids[2]]))
	}
}

// Faults on a fraction of HEADs (500, 503, 429, resets, stalls past the per-attempt
// timeout) never change a status: an upload whose HEAD failed is exactly as it was, and
// one whose HEAD failed once and then answered gets that answer. The run reports the
// errors; the next clean run converges.
//
// Which uploads are hit is fixed, not drawn: every attempt for one upload in eight fails
// (two attempts: the upload ends with an error), only the first attempt for another one
// in eight (the retry answers), the rest never; the seeded generator only picks each
// fault's kind. So the faults always reach the job, and the counts are exact.
func TestSyncUploadsFaults(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.SyncConcurrency = 16
	job := jobs.SyncUploadsSized(h.deps(cfg, h.client(func(c *bucket.Config) {
		c.MaxAttempts = 2
		c.RequestTimeout = 300 * time.Millisecond
	})), 50, 40, 100*time.Millisecond)

	const n = 240
	var presentKeys, youngKeys, oldKeys []string
	alwaysFails, failsOnce := map[string]bool{}, map[string]bool{}
	for i := range n {
		var k string
		switch i % 3 {
		case 0:
			k = fmt.Sprintf("f/present %03d+?.txt", i)
			h.put(k, k, textPlain)
			presentKeys = append(presentKeys, k)
		case 1:
			k = fmt.Sprintf("f/young-missing-%03d", i)
			youngKeys = append(youngKeys, k)
		case 2:
			k = fmt.Sprintf("f/old-missing-%03d", i)
			oldKeys = append(oldKeys, k)
		}
		switch i % 8 { // 8 and 3 are coprime: each class spans present, young and old
		case 3:
			alwaysFails[k] = true
		case 6:
			failsOnce[k] = true
		}
	}
	want := map[int64]string{}
	for _, set := range []struct {
		age    time.Duration
		keys   []string
		status string
	}{{0, presentKeys, store.UploadUploaded}, {0, youngKeys, store.UploadPending}, {72 * time.Hour, oldKeys, store.UploadFailed}} {
		for _, id := range h.insertUploads(set.age, set.keys...) {
			want[id] = set.status
		}
	}
	before := h.uploads()

	// Faults only on object HEADs of the chosen uploads (the bucket check must pass for
	// the run to start). The rates add up to 1: every matched request gets a fault.
	var mu sync.Mutex
	faulted := map[string]int{}
	match := func(r *http.Request) bool {
		if r.Method != http.MethodHead {
			return false
		}
		p, err := url.PathUnescape(r.URL.EscapedPath())
		key, ok := strings.CutPrefix(p, "/"+h.info.Name+"/")
		if err != nil || !ok {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if alwaysFails[key] || failsOnce[key] && faulted[key] == 0 {
			faulted[key]++
			return true
		}
		return false
	}
	if err := h.proxy.SetConfig(faultproxy.Config{Err500: 0.25, Err503: 0.25, Err429: 0.2, Reset: 0.15, Stall: 0.15,
		StallFor: 5 * time.Second, Seed: 7, Match: match}); err != nil {
		t.Fatal(err)
	}
	h.proxy.ResetStats()
	res := h.run(job, runOpts{})
	st := h.proxy.Stats()
	t.Logf("faulty run: %s, stats %v, proxy %d requests, faults %v", res.Status, res.Stats, st.Requests, st.ByFault)
	if res.Status != store.StatusSucceeded {
		t.Fatalf("faulty run: %s %v", res.Status, res.Err)
	}
	mu.Lock()
	for k := range alwaysFails {
		if faulted[k] < 2 {
			t.Errorf("%q: %d faulted attempts; want both attempts faulted", k, faulted[k])
		}
	}
	for k := range failsOnce {
		if faulted[k] != 1 {
			t.Errorf("%q: %d faulted attempts; want exactly the first", k, faulted[k])
		}
	}
	mu.Unlock()
	if res.Stats["errors"] != int64(len(alwaysFails)) {
		t.Errorf("the run reported %d errors; want %d (the uploads whose every attempt failed)", res.Stats["errors"], len(alwaysFails))
	}
	if !strings.Contains(res.Logs, fmt.Sprintf("errors=%d", res.Stats["errors"])) || !strings.Contains(res.Logs, "first_error=") {
		t.Errorf("summary does not report the errors:\n%s", res.Logs)
	}
	after := h.uploads()
	var unchanged int64
	for id, r := range after {
		b := before[id]
		switch {
		case alwaysFails[r.Key]:
			// A transient error: the application's row and the check count stay; only the
			// worker's own backoff moved (one tick, by the error count) with the error kept.
			if r.appView() != b.appView() {
				t.Errorf("%q changed after its HEAD failed: %s -> %s", r.Key, fmtRow(b), fmtRow(r))
				continue
			}
			unchanged++
			if r.ErrorCount != 1 || !r.LastError.Valid || !r.NextCheckAt.Equal(res.Row.TickAt.Add(cfg.Interval)) {
				t.Errorf("%q after a transient error: %s errors=%d; want 1 error recorded and the next check one tick later", r.Key, fmtRow(r), r.ErrorCount)
			}
		case r.Status != want[id] || r.CheckCount != 1 || r.ErrorCount != 0:
			// Answered, on the first attempt or after one fault.
			t.Errorf("%q: %s errors=%d; want %s after one check", r.Key, fmtRow(r), r.ErrorCount, want[id])
		}
	}
	if unchanged != int64(len(alwaysFails)) || res.Stats["retry_later"] != unchanged {
		t.Errorf("%d rows unchanged; want %d, and the run reported %d to retry later", unchanged, len(alwaysFails), res.Stats["retry_later"])
	}
	if res.Stats["checked"]+res.Stats["errors"] != n {
		t.Errorf("checked %d + errors %d != %d", res.Stats["checked"], res.Stats["errors"], n)
	}

	// Once their backoff is over, a clean run checks exactly the rows the faults left
	// unchanged, and converges.
	if err := h.proxy.SetFaults(faultproxy.Faults{}); err != nil {
		t.Fatal(err)
	}
	h.exec(`UPDATE bg_worker.upload_checks SET next_check_at = now() WHERE error_count > 0`)
	h.proxy.ResetStats()
	res = h.run(job, runOpts{})
	if res.Status != store.StatusSucceeded || res.Stats["checked"] != unchanged || res.Stats["errors"] != 0 {
		t.Fatalf("clean run: %s %v stats %v; want %d checked", res.Status, res.Err, res.Stats, unchanged)
	}
	for id, r := range h.uploads() {
		if r.Status != want[id] || r.CheckCount != 1 || r.ErrorCount != 0 {
			t.Errorf("%q: %s after the clean run; want %s", r.Key, fmtRow(r), want[id])
		}
	}
}

// Wrong credentials, a missing bucket, or a store that fails every HEAD: the run fails
// with one clear log line and no upload changes.
func TestSyncUploadsFailsWithoutChanging(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		mod     func(*bucket.Config)
		faults  faultproxy.Faults
		wantLog string
		wantErr error
	}{
		{name: "wrong secret", mod: func(c *bucket.Config) { c.SecretAccessKey = "wrong-secret-value" },
			wantLog: "access denied", wantErr: bucket.ErrAccessDenied},
		{name: "missing bucket", mod: func(c *bucket.Config) { c.Bucket = "no-such-bucket-here" },
			wantLog: "does not exist", wantErr: bucket.ErrNoSuchBucket},
		{name: "every HEAD fails", faults: faultproxy.Faults{Err503: 1},
			wantLog: "all 5 HEAD requests failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			job := h.job(h.deps(h.config(), h.client(tc.mod)), "sync-uploads")
			h.put("x/present", "p", "")
			h.insertUploads(0, "x/present", "x/young-missing")
			h.insertUploads(48*time.Hour, "x/old-missing", "x/old-missing-2", "x/present-2")
			before := h.uploads()
			if tc.faults != (faultproxy.Faults{}) {
				_ = h.proxy.SetConfig(faultproxy.Config{Err503: tc.faults.Err503,
					Match: func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/x/") }})
			}
			res := h.run(job, runOpts{})
			if res.Status != store.StatusFailed || res.Err == nil || (tc.wantErr != nil && !errors.Is(res.Err, tc.wantErr)) {
				t.Fatalf("status %s, err %v; want failed with %v", res.Status, res.Err, tc.wantErr)
			}
			for id, r := range h.uploads() {
				if r.appView() != before[id].appView() {
					t.Errorf("%q changed: %s -> %s", r.Key, fmtRow(before[id]), fmtRow(r))
				}
			}
			if res.Row.Error == "" || !strings.Contains(res.Row.Error, tc.wantLog) {
				t.Errorf("job_runs.error = %q; want it to say %q", res.Row.Error, tc.wantLog)
			}
			if strings.Contains(res.Logs, "wrong-secret-value") || strings.Contains(res.Row.Error, "wrong-secret-value") {
				t.Error("the secret leaked into logs or the run's error")
			}
			var errLines []string
			for _, l := range strings.Split(strings.TrimSpace(res.Logs), "\n") {
				if strings.Contains(l, " ERROR ") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 || !strings.Contains(errLines[0], tc.wantLog) {
				t.Errorf("error lines %q; want one saying %q", errLines, tc.wantLog)
			}
		})
	}
}

// The fan-out never has more than SYNC_CONCURRENCY HEADs in flight, and reaches it.
func TestSyncUploadsConcurrencyLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.SyncConcurrency = 4
	job := h.job(h.deps(cfg, h.client(func(c *bucket.Config) { c.MaxConcurrency = 4 })), "sync-uploads")
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("c/%03d", i)
	}
	h.insertUploads(0, keys...)
	h.proxy.SetLatency(20 * time.Millisecond)
	h.proxy.ResetStats()
	res := h.run(job, runOpts{})
	st := h.proxy.Stats()
	if res.Status != store.StatusSucceeded || res.Stats["checked"] != 200 {
		t.Fatalf("%s %v stats %v", res.Status, res.Err, res.Stats)
	}
	t.Logf("peak in flight %d, %d requests on %d connections", st.MaxInFlight, st.Requests, st.Connections)
	if st.MaxInFlight > 4 || st.MaxInFlight < 4 {
		t.Errorf("peak in flight %d; want exactly SYNC_CONCURRENCY = 4", st.MaxInFlight)
	}
	if st.Connections > 8 {
		t.Errorf("%d connections for 4-way fan-out: idle connections are not kept", st.Connections)
	}
}

// A run whose lock session is terminated mid-run commits nothing afterwards: its next
// fenced write fails with lock.ErrLockLost, and the run is recorded cancelled.
//
// "Afterwards" is judged by transaction, not by a timestamp the writes carry (now() is
// a transaction's start, not its commit). Right after the backend is gone the test takes
// a database snapshot: the UPLOADED rows then, and the transactions in progress then. A
// fenced write transaction gets its transaction id at its fence check (FOR SHARE locks
// the run row), so one whose check passed before the termination is in that snapshot's
// in-progress list, and may still commit; one that checks later fails. Every row that
// became UPLOADED after the snapshot must therefore carry (xmin) one of those in-progress
// transactions.
func TestSyncUploadsFencing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := h.config()
	cfg.SyncConcurrency = 4
	job := jobs.SyncUploadsSized(h.deps(cfg, h.client(nil)), 20, 10, time.Hour)
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("fence/%03d", i)
		h.writeFile(keys[i], "x", time.Time{})
	}
	h.insertUploads(0, keys...)
	h.proxy.SetLatency(20 * time.Millisecond)

	var atTermination map[int64]bool // UPLOADED rows right after the termination
	var inProgress map[int64]bool    // transactions in progress then
	var snapshotXmax int64
	var terminated bool
	res := h.run(job, runOpts{during: func(pid int32) {
		// Wait for a few batches, then kill the lock session.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			var n int
			if err := h.db.QueryRow(h.ctx, `SELECT count(*) FROM uploads WHERE status = 'UPLOADED'`).Scan(&n); err != nil {
				t.Error(err)
				return
			}
			if n >= 30 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("only %d uploads written after 30s; the lock session was never terminated", n)
				return
			}
		}
		h.terminate(pid)
		var err error
		if atTermination, inProgress, snapshotXmax, err = h.uploadedSnapshot(); err != nil {
			t.Error(err)
			return
		}
		terminated = true
	}})
	if !terminated {
		t.FailNow()
	}
	if !errors.Is(res.Err, lock.ErrLockLost) || res.Status != store.StatusCancelled {
		t.Fatalf("status %s, err %v; want cancelled with ErrLockLost", res.Status, res.Err)
	}
	final, _, _, err := h.uploadedSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := h.db.Query(h.ctx, `SELECT id, xmin::text::bigint FROM uploads WHERE status = 'UPLOADED'`)
	if err != nil {
		t.Fatal(err)
	}
	writer := map[int64]int64{}
	for rows.Next() {
		var id, xmin int64
		if err := rows.Scan(&id, &xmin); err != nil {
			t.Fatal(err)
		}
		writer[id] = xmin
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var late int
	for id := range final {
		if atTermination[id] {
			continue
		}
		late++
		if x := writer[id]; !inProgress[x] {
			t.Errorf("upload %d became UPLOADED in transaction %d, which had not passed its fence when the lock session "+
				"was terminated (in progress then: %v, next transaction id %d)", id, x, slices.Sorted(maps.Keys(inProgress)), snapshotXmax)
		}
	}
	for id := range atTermination {
		if !final[id] {
			t.Errorf("upload %d was UPLOADED at the termination and is not now", id)
		}
	}
	t.Logf("%d of %d uploaded at the termination, %d more by the transactions already past their fence; stats %v",
		len(atTermination), len(keys), late, res.Stats)
	if len(final) >= len(keys) || len(atTermination) < 30 {
		t.Errorf("%d uploads written; want the run stopped part-way", len(final))
	}
}

// TestSyncUploadsBench measures one run over 10,000 PENDING uploads (90% present): HEAD
// requests, SQL statements, peak in-flight HEADs, and wall time with 20 ms added per
// request at the default concurrency against the ideal N × latency / concurrency; then a
// second run with nothing due. Opt-in: BENCH_SYNC=1 go test -run TestSyncUploadsBench -v.
func TestSyncUploadsBench(t *testing.T) {
	if os.Getenv("BENCH_SYNC") == "" {
		t.Skip("set BENCH_SYNC=1 to measure a 10,000-upload run")
	}
	h := newHarness(t)
	h.log = slog.New(logging.NewTextHandler(h.logs, slog.LevelInfo)) // 10,000 debug lines would dominate
	const n = 10000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/%02d/%05d.bin", i%100, i)
		if i%10 != 0 {
			h.writeFile(keys[i], "payload", time.Time{})
		}
	}
	for _, tc := range []struct {
		conc    int
		latency time.Duration
	}{{32, 20 * time.Millisecond}, {32, 0}, {64, 20 * time.Millisecond}, {8, 20 * time.Millisecond}} {
		t.Run(fmt.Sprintf("concurrency %d latency %s", tc.conc, tc.latency), func(t *testing.T) {
			h.exec(`TRUNCATE uploads`)
			h.insertUploads(0, keys...)
			cfg := h.config()
			cfg.SyncConcurrency = tc.conc
			job := h.job(h.deps(cfg, h.client(func(c *bucket.Config) { c.MaxConcurrency = tc.conc })), "sync-uploads")
			h.proxy.SetLatency(tc.latency)
			h.proxy.ResetStats()
			start := time.Now()
			res := h.run(job, runOpts{})
			wall := time.Since(start)
			st := h.proxy.Stats()
			if res.Status != store.StatusSucceeded || res.Stats["checked"] != n {
				t.Fatalf("%s %v stats %v", res.Status, res.Err, res.Stats)
			}
			line := fmt.Sprintf("%d uploads, concurrency %d, +%s per request: %d HEAD requests (1 bucket check), "+
				"%d SQL statements %v, peak %d HEADs in flight on %d connections, wall %s",
				n, tc.conc, tc.latency, st.ByMethod[http.MethodHead], res.Stmts, res.StmtsBy, st.MaxInFlight, st.Connections,
				wall.Round(time.Millisecond))
			if tc.latency > 0 {
				ideal := time.Duration(n) * tc.latency / time.Duration(tc.conc)
				line += fmt.Sprintf(" vs ideal %s (%.2fx)", ideal, float64(wall)/float64(ideal))
			}
			t.Log(line)
			if st.MaxInFlight > int64(tc.conc) {
				t.Errorf("peak in flight %d > %d", st.MaxInFlight, tc.conc)
			}

			h.proxy.ResetStats()
			res = h.run(job, runOpts{})
			t.Logf("second run: %d HEAD requests, %d SQL statements %v, checked %d",
				h.proxy.Stats().ByMethod[http.MethodHead], res.Stmts, res.StmtsBy, res.Stats["checked"])
		})
	}
}

func fmtRow(r uploadRow) string {
	s := fmt.Sprintf("{%s checks=%d", r.Status, r.CheckCount)
	if r.Size.Valid {
		s += fmt.Sprintf(" size=%d", r.Size.Int64)
	}
	if r.ETag.Valid {
		s += fmt.Sprintf(" etag=%q", r.ETag.String)
	}
	if r.LastError.Valid {
		s += fmt.Sprintf(" last_error=%q", r.LastError.String)
	}
	return s + fmt.Sprintf(" next_check_at=%s}", r.NextCheckAt.UTC().Format(time.RFC3339Nano))
}

func sameRows(a, b map[int64]uploadRow) bool {
	if len(a) != len(b) {
		return false
	}
	for id, r := range a {
		if b[id] != r {
			return false
		}
	}
	return true
}
