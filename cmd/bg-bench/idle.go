package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bg-worker/bg-worker/internal/devservers"
)

// IdleReplica is one replica's cost over the idle window.
type IdleReplica struct {
	ID                string         `json:"worker_id"`
	Holder            bool           `json:"holder"`
	Statements        int            `json:"statements"`
	StatementsPerTick float64        `json:"statements_per_tick"`
	StatementKinds    map[string]int `json:"statement_kinds"`
	CPUSec            float64        `json:"cpu_sec"`
	CPUSecPerHour     float64        `json:"cpu_sec_per_hour"`
	RSSMB             float64        `json:"rss_mb"`
	AllocBytes        float64        `json:"alloc_bytes"`
	AllocMBPerHour    float64        `json:"alloc_mb_per_hour"`
	AllocWindowSec    float64        `json:"alloc_window_sec"`
	AllocsPerTick     float64        `json:"mallocs_per_tick"`   // objects (GC-aligned mode only; scrapes included)
	ScrapeAllocBytes  float64        `json:"scrape_alloc_bytes"` // one /metrics scrape, subtracted
}

// IdleResult is item 5.
type IdleResult struct {
	Job         string           `json:"job"`
	IntervalSec float64          `json:"interval_sec"`
	DurationSec float64          `json:"duration_sec"`
	Ticks       float64          `json:"ticks"`
	Replicas    []IdleReplica    `json:"replicas"`
	Requests    map[string]int64 `json:"s3_requests"`
	AllocMethod string           `json:"alloc_method"`
	AllocExact  bool             `json:"alloc_measured"`
}

// Allocation counting. go_memstats_alloc_bytes_total comes from runtime/metrics, which
// counts small objects only when a span leaves its P's cache: between garbage
// collections it lags by up to ~100 KB (back-to-back scrapes differ by 30-160 KB), which
// over a 2-minute window is an error of several MB/h. Every GC flushes those caches, and
// an idle replica has a forced GC every 2 minutes, so the exact figure is read just after
// two GCs (go_memstats_last_gc_time_seconds tells when), less the one scrape in between.
const forcedGCPeriod = 2 * time.Minute

// allocAcrossGCs measures a replica's allocations between two garbage collections at
// least span apart. It returns the bytes (less scrape cost) and the seconds between the
// two GCs.
func allocAcrossGCs(ctx context.Context, addr string, span time.Duration, scrapeCost float64) (float64, float64, float64, error) {
	afterGC := func(notBefore float64) (metricsSample, int, error) {
		polls := 0
		for {
			m, err := scrape(ctx, addr)
			if err != nil {
				return m, polls, err
			}
			if m.lastGC >= notBefore {
				return m, polls, nil
			}
			polls++
			if polls > 60 {
				return m, polls, fmt.Errorf("%s: no GC after %.0f (last %.0f)", addr, notBefore, m.lastGC)
			}
			select {
			case <-ctx.Done():
				return m, polls, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	sleepUntil := func(unix float64) error {
		d := time.Until(time.Unix(0, int64(unix*1e9)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	m0, err := scrape(ctx, addr)
	if err != nil {
		return 0, 0, 0, err
	}
	period := forcedGCPeriod.Seconds()
	next := nextGC(m0.lastGC, float64(time.Now().UnixNano())/1e9, period)
	if err := sleepUntil(next + 1.5); err != nil {
		return 0, 0, 0, err
	}
	a, pa, err := afterGC(m0.lastGC + 1)
	if err != nil {
		return 0, 0, 0, err
	}
	target := windowEnd(a.lastGC, span.Seconds(), period)
	if err := sleepUntil(target + 1.5); err != nil {
		return 0, 0, 0, err
	}
	z, pz, err := afterGC(target - 5)
	if err != nil {
		return 0, 0, 0, err
	}
	_ = pa // polls before the first GC fall before the window
	return z.alloc - a.alloc - float64(1+pz)*scrapeCost, z.lastGC - a.lastGC, z.mallocs - a.mallocs, nil
}

// nextGC is the first forced GC (every period seconds after lastGC) at least half a
// second after now (Unix seconds).
func nextGC(lastGC, now, period float64) float64 {
	next := lastGC + period
	for next < now+0.5 {
		next += period
	}
	return next
}

// windowEnd is the forced GC that closes a window of at least span seconds opened by
// the GC at start.
func windowEnd(start, span, period float64) float64 {
	return start + math.Ceil(span/period)*period
}

type metricsSample struct{ alloc, mallocs, lastGC float64 }

func scrape(ctx context.Context, addr string) (metricsSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return metricsSample{}, err
	}
	// Uncompressed: a gzip writer (~1 MB, pooled, dropped by GC) would dwarf what an
	// idle replica allocates.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return metricsSample{}, err
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

// parseMetrics reads the allocation counters and the last GC's time from a Prometheus
// text exposition.
func parseMetrics(r io.Reader) (metricsSample, error) {
	var s metricsSample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
		switch name {
		case "go_memstats_alloc_bytes_total":
			s.alloc = v
		case "go_memstats_mallocs_total":
			s.mallocs = v
		case "go_memstats_last_gc_time_seconds":
			s.lastGC = v
		}
	}
	return s, sc.Err()
}

// idle is item 5: 3 replicas of the real binary, one job with nothing to do.
func (b *bench) idle(ctx context.Context) (*IdleResult, error) {
	interval := b.opts.idleInterval
	res := &IdleResult{Job: "sync-uploads", IntervalSec: interval.Seconds()}
	if err := b.seedUploads(ctx, 0); err != nil {
		return nil, err
	}
	b.proxy.SetLatency(b.opts.latency)
	type rep struct {
		p    *proc
		addr string
	}
	var reps []rep
	defer func() {
		for _, r := range reps {
			r.p.stop()
		}
	}()
	for i := 1; i <= 3; i++ {
		port, err := devservers.FreePort()
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p, err := b.startReplica(b.bin, fmt.Sprintf("bench-idle-r%d", i), benchBucket, map[string]string{
			"WORKER_JOBS": "sync-uploads", "WORKER_INTERVAL_MS": strconv.Itoa(int(interval.Milliseconds())),
			"HTTP_ADDR": addr,
		})
		if err != nil {
			return nil, err
		}
		reps = append(reps, rep{p, addr})
	}
	// Warm up: a leader, two runs, then start at a tick boundary + 2.5s (between ticks).
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		_ = b.db.QueryRow(ctx, `SELECT count(*) FROM bg_worker.job_runs WHERE worker_id LIKE 'bench-idle-%' AND status = 'succeeded'`).Scan(&n)
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("idle: no two runs within a minute (see %s)", reps[0].p.log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	now := time.Now()
	time.Sleep(now.Truncate(interval).Add(interval + interval/2).Sub(now))

	holderAt := func() string {
		var w string
		_ = b.db.QueryRow(ctx, `SELECT worker_id FROM bg_worker.worker_lock_holders WHERE job = 'sync-uploads'`).Scan(&w)
		return w
	}
	h0 := holderAt()
	b.resetRequests()
	cpu0 := make([]time.Duration, len(reps))
	scrapeCost := make([]float64, len(reps))
	for i, r := range reps {
		// What one scrape allocates: the median of back-to-back scrapes.
		var samples []metricsSample
		for range 8 {
			m, err := scrape(ctx, r.addr)
			if err != nil {
				return nil, err
			}
			samples = append(samples, m)
		}
		var deltas []float64
		for j := 1; j < len(samples); j++ {
			deltas = append(deltas, samples[j].alloc-samples[j-1].alloc)
		}
		scrapeCost[i] = median(deltas)
		cpu0[i] = procCPU(r.p.pid())
	}
	// Allocations across forced GCs (full windows), concurrently with the window below.
	aligned := b.opts.allocWindow >= forcedGCPeriod
	type allocRes struct {
		bytes, secs, mallocs float64
		err                  error
	}
	allocs := make([]chan allocRes, len(reps))
	if aligned {
		res.AllocExact = true
		res.AllocMethod = "exact: between two forced GCs (go_memstats_alloc_bytes_total read just after each GC), less one scrape"
		for i, r := range reps {
			allocs[i] = make(chan allocRes, 1)
			go func() {
				by, secs, mallocs, err := allocAcrossGCs(ctx, r.addr, b.opts.allocWindow, scrapeCost[i])
				allocs[i] <- allocRes{by, secs, mallocs, err}
			}()
		}
	} else {
		res.AllocMethod = "not measured: an exact figure needs a window between two forced GCs, 2 minutes apart (--alloc-window ≥ 2m; the full mode uses 4m); between GCs the counter lags by up to ~1 MB"
	}
	off := b.stmts.offset()
	start := time.Now()
	b.logf("idle: measuring 3 replicas for %s (holder %s)", b.opts.idleFor, h0)
	time.Sleep(b.opts.idleFor)
	elapsed := time.Since(start)
	end := b.stmts.offset()
	res.DurationSec = elapsed.Seconds()
	res.Ticks = elapsed.Seconds() / interval.Seconds()
	res.Requests = b.reqs.snapshot()
	for i, r := range reps {
		cpu := procCPU(r.p.pid()) - cpu0[i]
		rss, _ := procRSS(r.p.pid())
		ir := IdleReplica{ID: r.p.id, CPUSec: cpu.Seconds(), RSSMB: float64(rss) / 1024,
			ScrapeAllocBytes: scrapeCost[i]}
		ir.CPUSecPerHour = ir.CPUSec * 3600 / elapsed.Seconds()
		if aligned {
			b.logf("idle: waiting for %s's forced GC that closes its allocation window", r.p.id)
			a := <-allocs[i]
			if a.err != nil {
				return res, a.err
			}
			ir.AllocBytes, ir.AllocWindowSec = a.bytes, a.secs
			ir.AllocsPerTick = a.mallocs / (a.secs / interval.Seconds())
			ir.AllocMBPerHour = ir.AllocBytes / (1 << 20) * 3600 / ir.AllocWindowSec
		}
		res.Replicas = append(res.Replicas, ir)
	}
	h1 := holderAt()
	if h0 != h1 {
		return res, fmt.Errorf("idle: the holder changed during the window (%s, then %s)", h0, h1)
	}
	time.Sleep(300 * time.Millisecond)
	counts, err := b.stmts.count(off, end)
	if err != nil {
		return res, err
	}
	for i := range res.Replicas {
		ir := &res.Replicas[i]
		ir.Holder = ir.ID == h0
		if c := counts[ir.ID]; c != nil {
			ir.Statements = c.Total
			ir.StatementKinds = c.ByKind
		}
		ir.StatementsPerTick = float64(ir.Statements) / res.Ticks
		alloc := "not measured"
		if res.AllocExact {
			alloc = fmt.Sprintf("%.2f MB/h (%.0f B, %.0f objects per tick)", ir.AllocMBPerHour,
				ir.AllocBytes/(ir.AllocWindowSec/interval.Seconds()), ir.AllocsPerTick)
		}
		b.logf("idle %s (holder %v): %.2f statements/tick %v, CPU %.2fs/h, RSS %.1f MB, allocations %s",
			ir.ID, ir.Holder, ir.StatementsPerTick, ir.StatementKinds, ir.CPUSecPerHour, ir.RSSMB, alloc)
	}
	return res, nil
}
