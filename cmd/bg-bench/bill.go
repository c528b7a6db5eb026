package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/bg-worker/bg-worker/internal/bucket"
)

// R2 prices, USD per million requests.
const (
	priceClassA = 4.50
	priceClassB = 0.36
	daysMonth   = 30
)

// Workload is the simulated day of item 4.
type Workload struct {
	Objects        int     `json:"objects"`
	UploadsPerHour int     `json:"uploads_per_hour"`
	NeverArrive    float64 `json:"never_arrive"`
	Replicas       int     `json:"replicas"`
	TickSec        float64 `json:"tick_sec"`
	MaxBackoffSec  float64 `json:"sync_max_backoff_sec"`
	TTLSec         float64 `json:"sync_pending_ttl_sec"`
	OrphanScanSec  float64 `json:"orphan_scan_interval_sec"`
}

// Bill is requests per day and dollars per month of one design.
type Bill struct {
	ClassAPerDay float64            `json:"class_a_per_day"`
	ClassBPerDay float64            `json:"class_b_per_day"`
	USDPerMonth  float64            `json:"usd_per_month"`
	Breakdown    map[string]float64 `json:"breakdown_per_day"`
}

func (b *Bill) finish() {
	b.USDPerMonth = daysMonth * (b.ClassAPerDay*priceClassA + b.ClassBPerDay*priceClassB) / 1e6
}

// ScaledOriginal is the original design run for real at a small scale.
type ScaledOriginal struct {
	Objects       int              `json:"objects"`
	Ticks         int              `json:"ticks"`
	Requests      map[string]int64 `json:"requests"`
	PagesPerTick  float64          `json:"list_pages_per_tick"`
	ModelPerTick  float64          `json:"model_pages_per_tick"` // ceil(objects/1000)
	MeasuredModel float64          `json:"measured_over_model"`
}

// ScaledOurs is bg-worker (3 replicas, sync-uploads + scan-orphans) run for real at a
// small, time-compressed scale, against the request model that the day extrapolation uses.
type ScaledOurs struct {
	Workload       Workload         `json:"workload"`
	DurationSec    float64          `json:"duration_sec"`
	Uploads        int              `json:"uploads"`
	Missing        int              `json:"never_arriving"`
	SyncRuns       int              `json:"sync_runs"`
	SyncRunsDue    int              `json:"sync_runs_with_uploads_due"`
	ScanRuns       int              `json:"scan_runs"`
	Leaders        []string         `json:"run_by"`
	Requests       map[string]int64 `json:"requests"`
	Model          map[string]int64 `json:"model"`
	ClassAMeasured int64            `json:"class_a_measured"`
	ClassAModel    int64            `json:"class_a_model"`
	ClassBMeasured int64            `json:"class_b_measured"`
	ClassBModel    int64            `json:"class_b_model"`
}

// BillResult is item 4.
type BillResult struct {
	ScaledOriginal ScaledOriginal `json:"scaled_original"`
	ScaledOurs     ScaledOurs     `json:"scaled_ours"`
	Day            Workload       `json:"day_workload"`
	ChecksMissing  int            `json:"heads_per_never_arriving_upload"`
	DueTickShare   float64        `json:"share_of_ticks_with_uploads_due"`
	Original       Bill           `json:"original_single_instance"`
	OriginalX3     Bill           `json:"original_naively_scaled_x3"`
	Ours           Bill           `json:"ours"`
	ClassARatio    float64        `json:"class_a_original_over_ours"`
	ClassBRatio    float64        `json:"class_b_original_over_ours"`
}

// checkTimes models when sync-uploads HEADs one upload created at t (seconds, database
// clock): at the first tick boundary at or after t; an object that is there is HEADed
// once; a missing one again after min(maxBackoff, tick·2^k) for its k-th miss (k from
// 0), at the first boundary at or after that (the backoff is counted from the run's
// window, TickAt, since 721fe5a; before, from the write's now(), which made a backoff of
// whole ticks land one tick late), until the check at which it is older than the TTL
// (that check marks it FAILED). Checks at or after end are not made.
func checkTimes(t float64, arrives bool, w Workload, end float64) []float64 {
	tick := w.TickSec
	at := math.Ceil(t/tick) * tick
	var out []float64
	for k := 0; at < end; k++ {
		out = append(out, at)
		if arrives || at-t >= w.TTLSec {
			break
		}
		next := at + math.Min(w.MaxBackoffSec, tick*math.Pow(2, float64(k)))
		at = math.Ceil(next/tick-1e-9) * tick
	}
	return out
}

// dayBill extrapolates a day of the workload with the formulas in BENCHMARKS.md.
func dayBill(w Workload) (orig, origX3, ours Bill, hMiss int) {
	ticks := 86400 / w.TickSec
	pages := math.Ceil(float64(w.Objects) / 1000)
	scans := 86400 / w.OrphanScanSec
	uploads := float64(w.UploadsPerHour) * 24
	hMiss = len(checkTimes(0, false, w, math.Inf(1)))

	orig = Bill{ClassAPerDay: ticks * pages, Breakdown: map[string]float64{"ListObjectsV2 (every tick)": ticks * pages}}
	orig.finish()
	origX3 = Bill{ClassAPerDay: float64(w.Replicas) * ticks * pages,
		Breakdown: map[string]float64{"ListObjectsV2 (every tick, every replica)": float64(w.Replicas) * ticks * pages}}
	origX3.finish()

	arriving := uploads * (1 - w.NeverArrive) * 1
	missing := uploads * w.NeverArrive * float64(hMiss)
	// sync-uploads checks the bucket only in runs that have uploads due: a tick has some
	// when an upload arrived since the last one or a missing upload's recheck falls in it
	// (Poisson with the day's mean checks per tick).
	checksPerTick := (arriving + missing) / ticks
	dueTicks := ticks * (1 - math.Exp(-checksPerTick))
	ours = Bill{
		ClassAPerDay: scans * pages,
		ClassBPerDay: dueTicks + scans + arriving + missing,
		Breakdown: map[string]float64{
			"ListObjectsV2 (orphan scan)":                    scans * pages,
			"HeadBucket (one per sync run with uploads due)": dueTicks,
			"HeadBucket (one per orphan scan)":               scans,
			"HeadObject (arriving uploads, 1 each)":          arriving,
			"HeadObject (never-arriving, backoff)":           missing,
		},
	}
	ours.finish()
	return orig, origX3, ours, hMiss
}

// newBillResult is the day's extrapolation of item 4 (the scaled runs are filled later).
func newBillResult(day Workload) *BillResult {
	res := &BillResult{Day: day}
	res.Original, res.OriginalX3, res.Ours, res.ChecksMissing = dayBill(day)
	res.DueTickShare = res.Ours.Breakdown["HeadBucket (one per sync run with uploads due)"] / (86400 / day.TickSec)
	res.ClassARatio = res.Original.ClassAPerDay / res.Ours.ClassAPerDay
	res.ClassBRatio = res.Original.ClassBPerDay / res.Ours.ClassBPerDay
	return res
}

// classTotals adds up requests by R2 class.
func classTotals(reqs map[string]int64) (a, b int64) {
	for op, n := range reqs {
		if classA[op] {
			a += n
		}
		if classB[op] {
			b += n
		}
	}
	return a, b
}

// scaledRun is a run of the scaled bill run, as job_runs recorded it.
type scaledRun struct {
	job, worker string
	started     float64 // Unix seconds
	listed, due int64   // stats
}

// scaledUpload is an upload the scaled bill run made: when its row was created (Unix
// seconds, database clock) and whether its object was ever put.
type scaledUpload struct {
	created float64
	arrives bool
}

// model counts the runs and sets the requests the model predicts for them: a HeadBucket
// per sync run with uploads due and per scan, a scan's list pages, and every HEAD
// checkTimes schedules before the last sync run started; then both sides' class totals.
func (s *ScaledOurs) model(runs []scaledRun, ups []scaledUpload) {
	leaders := map[string]bool{}
	model := map[string]int64{}
	var lastSyncStart float64
	for _, r := range runs {
		leaders[r.job+"="+r.worker] = true
		switch r.job {
		case "sync-uploads":
			s.SyncRuns++
			if r.due > 0 {
				s.SyncRunsDue++
				model[opHeadBucket]++ // the bucket is checked only when uploads are due
			}
			lastSyncStart = max(lastSyncStart, r.started)
		case "scan-orphans":
			s.ScanRuns++
			model[opHeadBucket]++
			model[opList] += int64(math.Max(1, math.Ceil(float64(r.listed)/1000)))
		}
	}
	for k := range leaders {
		s.Leaders = append(s.Leaders, k)
	}
	end := lastSyncStart + 1e-3
	for _, u := range ups {
		model[opHeadObject] += int64(len(checkTimes(u.created, u.arrives, s.Workload, end)))
	}
	s.Model = model
	s.ClassAMeasured, s.ClassBMeasured = classTotals(s.Requests)
	s.ClassAModel, s.ClassBModel = classTotals(model)
}

// bill is item 4.
func (b *bench) bill(ctx context.Context) (*BillResult, error) {
	o := b.opts
	res := newBillResult(Workload{Objects: 1_000_000, UploadsPerHour: 1000, NeverArrive: 0.01, Replicas: 3,
		TickSec: 5, MaxBackoffSec: 300, TTLSec: 86400, OrphanScanSec: 3600})

	// The bill bucket: O old objects, each with an UPLOADED row (so they are neither
	// checked nor orphans).
	root := b.s3.BucketDir(billBucket)
	for i := 0; i < o.billObjects; i++ {
		if i%1000 == 0 {
			if err := os.MkdirAll(filepath.Join(root, "old", fmt.Sprintf("%03d", i/1000)), 0o755); err != nil {
				return nil, err
			}
		}
		if err := os.WriteFile(filepath.Join(root, "old", fmt.Sprintf("%03d/%07d", i/1000, i)), []byte("old\n"), 0o644); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "new"), 0o755); err != nil {
		return nil, err
	}
	for _, q := range []string{`TRUNCATE public.uploads RESTART IDENTITY`, `TRUNCATE bg_worker.upload_checks`} {
		if _, err := b.db.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("bill: %s: %w", q, err)
		}
	}
	if _, err := b.db.Exec(ctx, `INSERT INTO public.uploads (object_key, status, size_bytes, verified_at)
		SELECT 'old/' || lpad((i / 1000)::text, 3, '0') || '/' || lpad(i::text, 7, '0'), 'UPLOADED', 4, now()
		FROM generate_series(0, $1::int - 1) AS i`, o.billObjects); err != nil {
		return nil, err
	}
	if _, err := b.db.Exec(ctx, `VACUUM ANALYZE public.uploads`); err != nil {
		return nil, err
	}

	if err := b.billOriginal(ctx, res); err != nil {
		return res, err
	}
	if err := b.billOurs(ctx, res); err != nil {
		return res, err
	}
	return res, nil
}

// billOriginal runs the original design's loop for real: every tick, list the whole
// bucket, then read the PENDING rows and match them against the listing.
func (b *bench) billOriginal(ctx context.Context, res *BillResult) error {
	o := b.opts
	client, err := bucket.New(bucket.Config{Endpoint: b.proxy.URL(), Region: b.s3.Region,
		AccessKeyID: b.s3.AccessKey, SecretAccessKey: b.s3.SecretKey, Bucket: billBucket})
	if err != nil {
		return err
	}
	b.proxy.SetLatency(0)
	b.resetRequests()
	for tick := 0; tick < o.billOrigTicks; tick++ {
		listed := map[string]bool{}
		err := client.List(ctx, "", func(page []bucket.Object) error {
			for _, obj := range page {
				listed[obj.Key] = true
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("original design: list: %w", err)
		}
		rows, err := b.db.Query(ctx, `SELECT id, object_key FROM public.uploads WHERE status = 'PENDING'`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			var key string
			if err := rows.Scan(&id, &key); err != nil {
				rows.Close()
				return err
			}
			_ = listed[key] // the original logged EXISTS / MISSING
		}
		rows.Close()
		if len(listed) < o.billObjects {
			return fmt.Errorf("original design: listed %d of %d objects", len(listed), o.billObjects)
		}
	}
	s := &res.ScaledOriginal
	s.Objects, s.Ticks = o.billObjects, o.billOrigTicks
	s.Requests = b.reqs.snapshot()
	s.PagesPerTick = float64(s.Requests[opList]) / float64(s.Ticks)
	s.ModelPerTick = math.Ceil(float64(s.Objects) / 1000)
	s.MeasuredModel = s.PagesPerTick / s.ModelPerTick
	b.logf("original design: %d ticks over %d objects: %v (%.1f list pages per tick, model %.0f)",
		s.Ticks, s.Objects, s.Requests, s.PagesPerTick, s.ModelPerTick)
	return nil
}

// billOurs runs 3 replicas of bg-worker with sync-uploads and scan-orphans, time
// compressed, while an application inserts uploads (1% never arrive), counts every
// request at the proxy, and compares the counts with checkTimes' model.
func (b *bench) billOurs(ctx context.Context, res *BillResult) error {
	o := b.opts
	w := Workload{Objects: o.billObjects, UploadsPerHour: int(o.billRate * 3600), NeverArrive: 0.01, Replicas: 3,
		TickSec: 1, MaxBackoffSec: 8, TTLSec: 45, OrphanScanSec: 30}
	s := &res.ScaledOurs
	s.Workload = w
	extra := map[string]string{
		"WORKER_JOBS":          "sync-uploads,scan-orphans",
		"WORKER_INTERVAL_MS":   fmt.Sprint(int(w.TickSec * 1000)),
		"SYNC_MAX_BACKOFF":     fmt.Sprintf("%gs", w.MaxBackoffSec),
		"SYNC_PENDING_TTL":     fmt.Sprintf("%gs", w.TTLSec),
		"ORPHAN_SCAN_INTERVAL": fmt.Sprintf("%gs", w.OrphanScanSec),
		"ORPHAN_MIN_AGE":       "24h",
	}
	b.proxy.SetLatency(o.latency)
	b.resetRequests()
	var t0 time.Time
	if err := b.db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t0); err != nil {
		return err
	}
	var reps []*proc
	defer func() {
		for _, p := range reps {
			p.stop()
		}
	}()
	for i := 1; i <= w.Replicas; i++ {
		p, err := b.startReplica(b.bin, fmt.Sprintf("bench-bill-r%d", i), billBucket, extra)
		if err != nil {
			return err
		}
		reps = append(reps, p)
	}

	// The application: an upload every 1/rate seconds; the object goes into the bucket
	// before the row (so it is there at the first check), except every 100th.
	var ups []scaledUpload
	every := time.Duration(float64(time.Second) / o.billRate)
	start := time.Now()
	deadline := start.Add(o.billFor)
	root := b.s3.BucketDir(billBucket)
	for i := 0; time.Now().Before(deadline); i++ {
		key := fmt.Sprintf("new/%06d", i)
		arrives := i%100 != 99
		if arrives {
			if err := os.WriteFile(filepath.Join(root, key), []byte("new upload\n"), 0o644); err != nil {
				return err
			}
		}
		var created time.Time
		if err := b.db.QueryRow(ctx, `INSERT INTO public.uploads (object_key) VALUES ($1) RETURNING created_at`, key).Scan(&created); err != nil {
			return err
		}
		ups = append(ups, scaledUpload{created: float64(created.UnixNano()) / 1e9, arrives: arrives})
		if d := time.Until(start.Add(time.Duration(i+1) * every)); d > 0 {
			time.Sleep(d)
		}
	}
	for _, p := range reps {
		p.stop()
	}
	var t1 time.Time
	if err := b.db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t1); err != nil {
		return err
	}
	s.Requests = b.reqs.snapshot()
	s.DurationSec = t1.Sub(t0).Seconds()
	s.Uploads = len(ups)
	for _, u := range ups {
		if !u.arrives {
			s.Missing++
		}
	}

	// Runs that really happened, and the list pages each scan needed.
	rows, err := b.db.Query(ctx, `SELECT job, worker_id, extract(epoch FROM started_at)::float8,
			coalesce((stats->>'listed')::bigint, 0), coalesce((stats->>'due')::bigint, 0)
		FROM bg_worker.job_runs WHERE worker_id LIKE 'bench-bill-%' AND status NOT IN ('skipped') ORDER BY id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var runs []scaledRun
	for rows.Next() {
		var r scaledRun
		if err := rows.Scan(&r.job, &r.worker, &r.started, &r.listed, &r.due); err != nil {
			return err
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	s.model(runs, ups)
	b.logf("bg-worker, 3 replicas, %.0fs: %d uploads (%d never arrive), %d sync runs (%d with uploads due), %d scans; measured %v, model %v",
		s.DurationSec, s.Uploads, s.Missing, s.SyncRuns, s.SyncRunsDue, s.ScanRuns, s.Requests, s.Model)
	return nil
}
