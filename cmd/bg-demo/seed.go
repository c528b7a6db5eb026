package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"mime"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/bg-worker/bg-worker/internal/appshapes"
	"github.com/bg-worker/bg-worker/internal/devservers"
)

// orphanMinAge is the replicas' ORPHAN_MIN_AGE: half the seeded orphans are older.
const orphanMinAge = time.Hour

// oddNames are object names that trip naive code: spaces, non-ASCII, characters with a
// meaning in URLs or shells, a 200-byte segment, deep paths, a repeated slash.
var oddNames = []string{
	"with space.jpg",
	"ünïcødé-文件.png",
	"plus+and&equals=.txt",
	"percent%20literal.bin",
	"question?mark#hash.txt",
	"emoji-🎉.gif",
	strings.Repeat("long-", 40) + ".dat",
	"deep/a/b/c/d/e/f.txt",
	"(parens) [brackets] {braces}.pdf",
	"quote'and\"double.txt",
	"/double-slash.txt", // uploads/odd//double-slash.txt: some stores normalise it
	"UPPER lower MiXeD.JPG",
}

// object is one object to put in the bucket.
type object struct {
	key  string
	body []byte
}

// outcome is what the worker must make of a seeded row once a sync-uploads run has
// completed.
type outcome int

const (
	wantUploaded  outcome = iota // its object was there from the start
	wantFailed                   // missing and older than SYNC_PENDING_TTL
	wantPending                  // missing and young: checked again later
	wantNotFailed                // late: its object arrives after the start (UPLOADED once checked again)
)

// seedPlan is what seed put in place, for the narration, the late arrivals and the
// end-of-run check of the rows' statuses.
type seedPlan struct {
	rows, objects int
	lines         []string
	late          []object // rows whose object arrives a few ticks after the start
	expect        map[string]outcome
}

// seed writes upload rows into the shape's table and bucket objects: a mix the worker
// must sort out.
func seed(ctx context.Context, db *pgxpool.Pool, shape appshapes.Shape, s3s *devservers.Versitygw, bucket string, n int) (*seedPlan, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	var (
		rowKeys  []string
		rowTimes []time.Time
		viaAPI   []object
		onDisk   []object
		oldFiles = map[string]bool{}
		plan     = &seedPlan{expect: map[string]outcome{}}
	)
	body := func() []byte {
		b := make([]byte, 256+rng.IntN(3840))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	exts := []string{"jpg", "png", "pdf", "mp4", "txt"}
	addRow := func(key string, age time.Duration, want outcome) {
		plan.expect[key] = want
		rowKeys = append(rowKeys, key)
		rowTimes = append(rowTimes, now.Add(-age))
	}
	say := func(count int, format string, args ...any) {
		if count > 0 {
			plan.lines = append(plan.lines, fmt.Sprintf("  %5d %s", count, fmt.Sprintf(format, args...)))
		}
	}

	odd := 0
	if n > 0 {
		odd = min(len(oddNames), n/3)
	}
	rest := n - odd
	counts := map[string]int{
		"present": rest * 55 / 100,
		"no-etag": rest * 10 / 100,
		"missing": rest * 15 / 100,
		"expired": rest * 10 / 100,
	}
	counts["late"] = rest - counts["present"] - counts["no-etag"] - counts["missing"] - counts["expired"]
	i := 0
	key := func(category string) string {
		i++
		return fmt.Sprintf("%s%s/%05d.%s", prefix, category, i, exts[i%len(exts)])
	}
	recent := func() time.Duration { return time.Duration(rng.IntN(600)) * time.Second }
	for range counts["present"] {
		k := key("present")
		addRow(k, recent(), wantUploaded)
		viaAPI = append(viaAPI, object{k, body()})
	}
	for range counts["no-etag"] {
		k := key("no-etag")
		addRow(k, recent(), wantUploaded)
		onDisk = append(onDisk, object{k, body()})
	}
	for range counts["missing"] {
		addRow(key("missing"), recent(), wantPending)
	}
	for range counts["expired"] {
		addRow(key("expired"), 25*time.Hour, wantFailed)
	}
	for range counts["late"] {
		k := key("late")
		addRow(k, recent(), wantNotFailed)
		plan.late = append(plan.late, object{k, body()})
	}
	for j, name := range oddNames[:odd] {
		k := prefix + "odd/" + name
		if j%2 == 0 {
			addRow(k, recent(), wantUploaded)
			viaAPI = append(viaAPI, object{k, body()})
		} else {
			addRow(k, recent(), wantPending)
		}
	}
	orphans := 0
	if n > 0 {
		orphans = max(4, n/10)
	}
	for j := range orphans {
		if j%2 == 0 {
			k := key("orphan-old")
			onDisk = append(onDisk, object{k, body()})
			oldFiles[k] = true
		} else {
			viaAPI = append(viaAPI, object{key("orphan-new"), body()})
		}
	}
	outside := 0
	if n > 0 {
		outside = 3
	}
	for j := range outside {
		viaAPI = append(viaAPI, object{fmt.Sprintf("other-app/report-%d.csv", j+1), body()})
	}

	// Rows first, as an application would write them before the client uploads: one
	// set-based statement in the shape's own columns and defaults.
	if len(rowKeys) > 0 {
		if _, err := db.Exec(ctx, shape.InsertMany, rowKeys, rowTimes); err != nil {
			return nil, fmt.Errorf("insert into %s: %w", shape.Table, err)
		}
	}
	if err := putObjects(ctx, s3s.Client(), bucket, viaAPI); err != nil {
		return nil, err
	}
	dir := s3s.BucketDir(bucket)
	old := now.Add(-48 * time.Hour)
	for _, o := range onDisk {
		p := filepath.Join(dir, filepath.FromSlash(o.key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, o.body, 0o644); err != nil {
			return nil, err
		}
		if oldFiles[o.key] {
			if err := os.Chtimes(p, old, old); err != nil {
				return nil, err
			}
		}
	}
	plan.rows = len(rowKeys)
	plan.objects = len(viaAPI) + len(onDisk)

	header := []string{fmt.Sprintf("seeded %d upload rows into %s and %d objects in bucket %s (R2_PREFIX=%s):",
		plan.rows, shape.Table, plan.objects, bucket, prefix)}
	plan.lines = append(header, plan.lines...)
	pending, uploaded, failed := shape.Pending, shape.Uploaded, shape.Failed
	say(counts["present"], "present: row %s, object uploaded through the S3 API → %s (with size and ETag where mapped)", pending, uploaded)
	say(counts["no-etag"], "present, written straight to disk (the store gives no ETag) → %s, etag empty", uploaded)
	say(counts["missing"], "missing, row a few minutes old → stays %s, checked again with backoff", pending)
	say(counts["expired"], "missing, row 25h old → %s (older than SYNC_PENDING_TTL=24h)", failed)
	say(counts["late"], "late: object arrives a few ticks after the start → %s, then %s", pending, uploaded)
	say(odd, "odd keys (spaces, unicode, + & = %% ? #, quotes, 200-byte names, deep paths, //), half of them present")
	say((orphans+1)/2, "orphan objects (no row) older than ORPHAN_MIN_AGE=%s → reported by the orphan scan", orphanMinAge)
	say(orphans/2, "orphan objects (no row) younger than ORPHAN_MIN_AGE → left alone (an upload may be in flight)")
	say(outside, "objects outside R2_PREFIX (another application's) → never touched")
	return plan, nil
}

// describe returns the seeding narration.
func (p *seedPlan) describe(took time.Duration, opts options) []string {
	lines := append([]string(nil), p.lines...)
	lines[0] += fmt.Sprintf(" in %s", took.Round(time.Millisecond))
	if opts.orphanDelete {
		lines = append(lines, "  ORPHAN_DELETE=true: old orphans are deleted, not only reported")
	}
	return lines
}

// putObjects uploads objects through the S3 API, 16 at a time.
func putObjects(ctx context.Context, client *s3.Client, bucket string, objs []object) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, o := range objs {
		g.Go(func() error {
			ct := mime.TypeByExtension(path.Ext(o.key))
			if ct == "" {
				ct = "application/octet-stream"
			}
			_, err := client.PutObject(gctx, &s3.PutObjectInput{
				Bucket:      aws.String(bucket),
				Key:         aws.String(o.key),
				Body:        bytes.NewReader(o.body),
				ContentType: aws.String(ct),
			})
			if err != nil {
				return fmt.Errorf("put %q: %w", o.key, err)
			}
			return nil
		})
	}
	return g.Wait()
}
