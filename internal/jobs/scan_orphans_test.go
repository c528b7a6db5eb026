package jobs_test

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/store"
)

// scan-orphans reports objects that no upload names and that are older than
// ORPHAN_MIN_AGE; it deletes exactly those, in batches of at most 1000, only with
// ORPHAN_DELETE=true.
func TestScanOrphans(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	old := time.Now().Add(-48 * time.Hour)

	// Named by an upload row (old, so only the row protects them).
	owned := []string{"o/owned.txt", "o/owned ü ?#+%.txt"}
	for _, k := range owned {
		h.writeFile(k, "owned", old)
	}
	h.insertUploads(0, owned...)
	// Rows whose keys this store normalises ("/o/slashed.txt" is stored and listed as
	// "o/slashed.txt"): the listed key must still count as named.
	h.put("/o/slashed.txt", "s", "")
	h.put("o//double.txt", "d", "")
	h.writeFile("o/slashed.txt", "s", old)
	h.writeFile("o/double.txt", "d", old)
	h.insertUploads(0, "/o/slashed.txt", "o//double.txt")
	// A row whose object is gone is not an object, and is left alone.
	h.insertUploads(0, "o/row-without-object.txt")
	// Orphans: old, no row. Odd keys, and enough plain ones for two delete batches.
	oddOrphans := []string{"o/orphan-1.txt", "o/orphan ü ?#+%.txt", "o/a+b=c&d.txt", longKey("o/long/")}
	for _, k := range oddOrphans {
		h.writeFile(k, "orphan", old)
	}
	var bulk []string
	for i := range 1200 {
		k := fmt.Sprintf("bulk/%04d.bin", i)
		h.writeFile(k, "x", old)
		bulk = append(bulk, k)
	}
	// Young: no row, but newer than ORPHAN_MIN_AGE (an upload may be on its way).
	h.writeFile("o/young-orphan.txt", "young", time.Time{})
	h.put("bulk/young.bin", "young", "")

	cfg := h.config()
	run := func(prefix string, del bool) runResult {
		t.Helper()
		c := cfg
		c.R2Prefix, c.OrphanDelete = prefix, del
		job := h.job(h.deps(c, h.client(nil)), "scan-orphans")
		h.proxy.ResetStats()
		res := h.run(job, runOpts{})
		if res.Status != store.StatusSucceeded {
			t.Fatalf("scan (prefix %q, delete %v): %s %v", prefix, del, res.Status, res.Err)
		}
		return res
	}
	all := h.objects()

	// Report only, under a prefix.
	res := run("o/", false)
	want := map[string]int64{"listed": 9, "with_row": 4, "too_young": 1, "orphans": 4, "deleted": 0, "pages": 1}
	for k, v := range want {
		if res.Stats[k] != v {
			t.Errorf("prefix scan: stats[%s] = %d; want %d (%v)", k, res.Stats[k], v, res.Stats)
		}
	}
	if !strings.Contains(res.Logs, "[scan-orphans] Found 4 orphaned objects older than 24h0m0s") ||
		!strings.Contains(res.Logs, "not deleted (ORPHAN_DELETE=false)") || !strings.Contains(res.Logs, "examples=") {
		t.Errorf("report line missing:\n%s", res.Logs)
	}
	for _, k := range oddOrphans {
		// Keys are attributes, never the message; the text handler quotes the odd ones.
		want := "key=" + k
		if strings.ContainsAny(k, " =\"") {
			want = "key=" + strconv.Quote(k)
		}
		if !strings.Contains(res.Logs, "DEBUG [scan-orphans] Orphan ") || !strings.Contains(res.Logs, want) {
			t.Errorf("no debug line for orphan %q", k)
		}
	}

	// Report only, whole bucket: nothing deleted.
	res = run("", false)
	if res.Stats["orphans"] != 1204 || res.Stats["pages"] != 2 || res.Stats["deleted"] != 0 {
		t.Errorf("bucket scan: stats %v; want 1204 orphans over 2 pages", res.Stats)
	}
	if got := h.objects(); !maps.Equal(got, all) {
		t.Fatalf("a report-only scan changed the bucket")
	}

	// Delete: exactly the old orphans go, in two DeleteObjects calls.
	res = run("", true)
	if res.Stats["orphans"] != 1204 || res.Stats["deleted"] != 1204 || res.Stats["delete_errors"] != 0 {
		t.Errorf("delete scan: stats %v", res.Stats)
	}
	if got := h.proxy.Stats().ByMethod[http.MethodPost]; got != 2 {
		t.Errorf("%d DeleteObjects calls; want 2 (1000 + 204)", got)
	}
	left := slices.Sorted(maps.Keys(h.objects()))
	wantLeft := []string{"bulk/young.bin", "o/double.txt", "o/owned ü ?#+%.txt", "o/owned.txt", "o/slashed.txt", "o/young-orphan.txt"}
	if !slices.Equal(left, wantLeft) {
		t.Errorf("left in bucket:\n got %q\nwant %q", left, wantLeft)
	}
	if !strings.Contains(res.Logs, "1204 deleted") {
		t.Errorf("delete not reported:\n%s", lastLines(res.Logs, 5))
	}

	// Nothing left to do.
	res = run("", true)
	if res.Stats["orphans"] != 0 || res.Stats["deleted"] != 0 {
		t.Errorf("second delete scan: stats %v", res.Stats)
	}
}

// A scan whose lock is gone deletes nothing: it checks the lock before each batch.
func TestScanOrphansLockLost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.writeFile("orphan.txt", "x", time.Now().Add(-48*time.Hour))
	cfg := h.config()
	cfg.OrphanDelete = true
	job := h.job(h.deps(cfg, h.client(nil)), "scan-orphans")
	h.proxy.ResetStats()
	res := h.run(job, runOpts{before: func(pid int32) { h.terminate(pid) }})
	if !errors.Is(res.Err, lock.ErrLockLost) || res.Status != store.StatusCancelled {
		t.Fatalf("status %s, err %v; want cancelled with ErrLockLost", res.Status, res.Err)
	}
	if !h.objects()["orphan.txt"] {
		t.Error("the orphan was deleted by a run that had lost its lock")
	}
	if got := h.proxy.Stats().ByMethod[http.MethodPost]; got != 0 {
		t.Errorf("%d DeleteObjects calls", got)
	}
}

// scan-orphans fails its run, deleting nothing, without a bucket client or with wrong
// credentials.
func TestScanOrphansBadBucket(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.writeFile("orphan.txt", "x", time.Now().Add(-48*time.Hour))
	cfg := h.config()
	cfg.OrphanDelete = true
	for _, tc := range []struct {
		name   string
		client *bucket.Client
		want   string
	}{
		{"no client", nil, "no bucket configured"},
		{"wrong secret", h.client(func(c *bucket.Config) { c.SecretAccessKey = "wrong-secret-value" }), "access denied"},
	} {
		res := h.run(h.job(h.deps(cfg, tc.client), "scan-orphans"), runOpts{})
		if res.Status != store.StatusFailed || !strings.Contains(res.Row.Error, tc.want) {
			t.Errorf("%s: %s %q; want failed with %q", tc.name, res.Status, res.Row.Error, tc.want)
		}
	}
	if !h.objects()["orphan.txt"] {
		t.Error("the orphan was deleted")
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
