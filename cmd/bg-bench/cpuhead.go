package main

import (
	"context"
	"fmt"
	"strings"
)

// CPUHeadResult is the "cpuhead" item: the worker's CPU per HEAD with R2_REGION=auto
// against R2_REGION=us-east-1, the same sync-uploads fan-out in the same bench run.
//
// It exists because the AWS SDK's endpoint rules used to cost the worker about half of
// its CPU per HEAD with `auto` (a region outside the SDK's partition table: every
// resolution compiled every partition's region regexp, twice per request), while
// us-east-1 skipped that work. internal/bucket now resolves once per client and hands
// each request a copy, so both regions should cost the same.
type CPUHeadResult struct {
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	LatencyMs   float64 `json:"latency_ms"`
	// Auto and Control are the runs, in ABBA order after an uncounted warm-up of each.
	Auto    []SyncRun `json:"auto_runs"`
	Control []SyncRun `json:"us_east_1_runs"`
	// Medians over the runs of HEADs (counted at the proxy) per worker CPU-second
	// (utime+stime of the whole `bg-worker once` process, start-up included).
	AutoHeadsPerCPUSec    float64 `json:"auto_heads_per_worker_cpu_sec"`
	ControlHeadsPerCPUSec float64 `json:"us_east_1_heads_per_worker_cpu_sec"`
	// Ratio is CPU per HEAD at auto ÷ CPU per HEAD at us-east-1 (goal ≤ 1.1).
	Ratio float64 `json:"auto_cpu_per_head_over_us_east_1"`
}

const cpuHeadGoal = 1.1

// headsPerCPUSec is HEADs sent per second of the worker process's CPU.
func (r SyncRun) headsPerCPUSec() float64 {
	if r.WorkerCPUSec <= 0 {
		return 0
	}
	return float64(r.Requests[opHeadObject]) / r.WorkerCPUSec
}

// cpuPerHead runs sync-uploads (N=10k, C=32, the bench's latency) against the main
// versitygw (--region auto) and a second one started with --region us-east-1
// (bench.withRegion, same bucket directory), trials times each.
func (b *bench) cpuPerHead(ctx context.Context) (*CPUHeadResult, error) {
	const n, c = 10000, 32
	trials := 5
	if b.opts.quick {
		trials = 3
	}
	res := &CPUHeadResult{N: n, Concurrency: c, LatencyMs: float64(b.opts.latency.Microseconds()) / 1000}
	if err := b.ensureObjects(n); err != nil {
		return nil, err
	}
	run := func(region, label string, n int) (SyncRun, error) {
		var r SyncRun
		err := b.withRegion(ctx, region, func() (err error) {
			r, err = b.syncRun(ctx, label, n, c, b.opts.latency)
			return err
		})
		if err != nil {
			return r, fmt.Errorf("cpu per HEAD, R2_REGION=%s, %s: %w", region, label, err)
		}
		return r, nil
	}
	// Uncounted warm-up at both regions: the first runs after start-up pay for cold
	// caches (versitygw's, PostgreSQL's), which would land on whichever region came first.
	for _, region := range []string{b.s3.Region, "us-east-1"} {
		if _, err := run(region, "cpuhead-warmup-"+region, 2000); err != nil {
			return res, err
		}
	}
	// ABBA order (auto first in odd trials, us-east-1 first in even ones), so that a
	// drift in the machine's load lands on both regions alike.
	for i := range trials {
		order := []string{b.s3.Region, "us-east-1"}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, region := range order {
			r, err := run(region, fmt.Sprintf("cpuhead%d-%s", i+1, region), n)
			if err != nil {
				return res, err
			}
			if region == "us-east-1" {
				res.Control = append(res.Control, r)
			} else {
				res.Auto = append(res.Auto, r)
			}
		}
	}
	res.summarize()
	b.logf("CPU per HEAD: %.0f HEADs per worker CPU-second at auto, %.0f at us-east-1: auto costs %.2f× (goal ≤ %.1f×)",
		res.AutoHeadsPerCPUSec, res.ControlHeadsPerCPUSec, res.Ratio, cpuHeadGoal)
	return res, nil
}

func (res *CPUHeadResult) summarize() {
	rates := func(runs []SyncRun) []float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, r.headsPerCPUSec())
		}
		return xs
	}
	res.AutoHeadsPerCPUSec = median(rates(res.Auto))
	res.ControlHeadsPerCPUSec = median(rates(res.Control))
	res.Ratio = 0
	if res.AutoHeadsPerCPUSec > 0 {
		res.Ratio = res.ControlHeadsPerCPUSec / res.AutoHeadsPerCPUSec
	}
}

func (res *CPUHeadResult) goal() Goal {
	return Goal{Item: "1 CPU per HEAD", Measure: fmt.Sprintf("worker CPU per HEAD, R2_REGION=auto vs us-east-1 (N=%s, C=%d, median of %d runs each)", kfmt(res.N), res.Concurrency, len(res.Auto)),
		Value:   fmt.Sprintf("%.0f HEADs per worker CPU-s at auto", res.AutoHeadsPerCPUSec),
		Against: fmt.Sprintf("%.0f at us-east-1", res.ControlHeadsPerCPUSec),
		Ratio:   res.Ratio, Goal: fmt.Sprintf("≤ %.1f×", cpuHeadGoal), Met: res.Ratio > 0 && res.Ratio <= cpuHeadGoal, HasLimit: true}
}

func (res *CPUHeadResult) markdown() string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	p("### CPU per HEAD by region (N = %s, C = %d, L = %.0f ms; ABBA order after a warm-up run of each)\n\n", kfmt(res.N), res.Concurrency, res.LatencyMs)
	p("| R2_REGION | run | run s | HEADs | worker CPU s | HEADs per worker CPU-s | worker CPU ms per HEAD |\n|---|---|---|---|---|---|---|\n")
	row := func(i int, r SyncRun) {
		heads := r.Requests[opHeadObject]
		var msPer float64
		if heads > 0 {
			msPer = r.WorkerCPUSec * 1000 / float64(heads)
		}
		p("| %s | %d | %.2f | %d | %.2f | %.0f | %.3f |\n", r.Region, i+1, r.RunSec, heads, r.WorkerCPUSec, r.headsPerCPUSec(), msPer)
	}
	for i := range max(len(res.Auto), len(res.Control)) {
		if i < len(res.Auto) {
			row(i, res.Auto[i])
		}
		if i < len(res.Control) {
			row(i, res.Control[i])
		}
	}
	p("\nMedian HEADs per worker CPU-second: auto %.0f, us-east-1 %.0f; CPU per HEAD at auto ÷ at us-east-1 = %.2f× (goal ≤ %.1f×). Worker CPU is the `bg-worker once` process's utime+stime (start-up and database work included); HEADs are counted at the proxy. us-east-1 runs go to a second versitygw started with `--region us-east-1` serving the same bucket directory.\n\n",
		res.AutoHeadsPerCPUSec, res.ControlHeadsPerCPUSec, res.Ratio, cpuHeadGoal)
	return w.String()
}
