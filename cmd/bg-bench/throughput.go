package main

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"time"
)

// SyncRun is one `bg-worker once sync-uploads` over N seeded PENDING uploads.
type SyncRun struct {
	ID          string  `json:"worker_id"`
	Region      string  `json:"r2_region"`
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	LatencyMs   float64 `json:"latency_ms"`
	// RunSec is the run as job_runs records it (claim to finish, database clock);
	// ProcessSec is the whole `once` process (start, connect, lock, run, exit).
	RunSec     float64 `json:"run_sec"`
	ProcessSec float64 `json:"process_sec"`
	IdealSec   float64 `json:"ideal_sec"` // N·L/C
	VsIdeal    float64 `json:"vs_ideal"`
	// C1Sec is the same N at concurrency 1: measured, or extrapolated from the baseline.
	C1Sec          float64 `json:"c1_sec"`
	C1Extrapolated bool    `json:"c1_extrapolated"`
	SpeedupVsC1    float64 `json:"speedup_vs_c1"`
	HeadsPerSec    float64 `json:"heads_per_sec"`
	// Repeats are the run times of all repetitions (this run is the median one).
	Repeats []float64 `json:"repeats_run_sec,omitempty"`

	Requests    map[string]int64 `json:"requests"` // at the proxy, by S3 operation
	MaxInFlight int64            `json:"max_in_flight"`
	Status      string           `json:"status"`
	Stats       map[string]int64 `json:"stats"` // job_runs.stats

	Statements      int     `json:"statements"`
	StatementsPer1k float64 `json:"statements_per_1k_verified"`
	// RunStatements leaves out what only the `once` process does (schema check, job
	// registration, lock take and release, LISTEN, takeover check): what a scheduled run
	// of the leader sends.
	RunStatements      int            `json:"run_statements"`
	RunStatementsPer1k float64        `json:"run_statements_per_1k_verified"`
	StatementKinds     map[string]int `json:"statement_kinds"`

	// CPU over the process's lifetime: the worker (rusage), the proxy (this process),
	// versitygw and PostgreSQL (/proc), and the machine's busy share of all cores.
	WorkerCPUSec   float64 `json:"worker_cpu_sec"`
	ProxyCPUSec    float64 `json:"proxy_cpu_sec"`
	S3CPUSec       float64 `json:"versitygw_cpu_sec"`
	PGCPUSec       float64 `json:"postgres_cpu_sec"`
	MachineBusy    float64 `json:"machine_busy"`
	MachineIRQSec  float64 `json:"machine_irq_softirq_sec"`
	MachineSteal   float64 `json:"machine_steal_sec"`
	CPUMsPerHead   float64 `json:"cpu_ms_per_head"`           // worker+proxy+versitygw+postgres, per HEAD
	MachineCapRate float64 `json:"machine_cap_heads_per_sec"` // nproc / CPU per HEAD
	DemandRate     float64 `json:"demand_heads_per_sec"`      // C / L
	MaxRSSMB       float64 `json:"max_rss_mb"`
}

// ThroughputResult is item 1 (and the runs item 3 counts statements in).
type ThroughputResult struct {
	LatencyMs    float64   `json:"latency_ms"`
	Baseline     SyncRun   `json:"baseline_c1"`
	BaselineNote string    `json:"baseline_note"`
	Runs         []SyncRun `json:"runs"`
	// RegionRuns repeat runs with R2_REGION=us-east-1 (see bench.withRegion).
	RegionRuns []SyncRun `json:"region_us_east_1_runs,omitempty"`
}

// MemoryResult is item 2.
type MemoryResult struct {
	Runs  []SyncRun `json:"runs"`
	Ratio float64   `json:"larger_over_smaller"`
}

// onceOnly are the statements `bg-worker once` sends around a run that a leader's
// scheduled run does not (JobRunStartManual stands in for the leader's JobRunClaim):
// the start-up checks (schema version, schema access, the mapping's fingerprint), job
// registration, the lock and its holder record, LISTEN and the takeover check.
var onceOnly = map[string]bool{"schema:version": true, "schema:access": true, "schema:fingerprint": true,
	"WorkerJobRegister": true, "listen": true,
	"lock:try": true, "lock:unlock": true, "JobRunListRunning": true, "WorkerJobSetHolder": true}

// runStatements is total less the statements only the `once` process sends (onceOnly
// and the start-up checks).
func runStatements(total int, kinds map[string]int) int {
	for k, n := range kinds {
		if onceOnly[k] || startupCheck(k) {
			total -= n
		}
	}
	return total
}

// recount derives the per-run statement figures from the classified counts.
func (r *SyncRun) recount() {
	r.RunStatements = runStatements(r.Statements, r.StatementKinds)
	if verified := r.Stats["checked"]; verified > 0 {
		r.StatementsPer1k = float64(r.Statements) * 1000 / float64(verified)
		r.RunStatementsPer1k = float64(r.RunStatements) * 1000 / float64(verified)
	}
}

func (b *bench) syncRun(ctx context.Context, label string, n, c int, latency time.Duration) (SyncRun, error) {
	r := SyncRun{ID: fmt.Sprintf("bench-%s-n%d-c%d", label, n, c), N: n, Concurrency: c,
		LatencyMs: float64(latency) / float64(time.Millisecond), Region: b.s3.Region}
	if err := b.ensureObjects(n); err != nil {
		return r, err
	}
	if err := b.seedUploads(ctx, n); err != nil {
		return r, err
	}
	res, err := b.measureOnce(ctx, r.ID, latency, map[string]string{"SYNC_CONCURRENCY": strconv.Itoa(c)})
	if err != nil {
		return r, err
	}
	run, err := b.lastRun(ctx, r.ID, "sync-uploads")
	if err != nil {
		return r, fmt.Errorf("run row of %s: %w", r.ID, err)
	}
	ps := b.proxy.Stats()
	r.Requests = b.reqs.snapshot()
	r.MaxInFlight = ps.MaxInFlight
	r.Status = run.Status
	r.Stats = run.Stats
	r.RunSec = run.Duration.Seconds()
	r.ProcessSec = res.wall.Seconds()
	heads := r.Requests[opHeadObject]
	if sc := res.counts[r.ID]; sc != nil {
		r.Statements = sc.Total
		r.StatementKinds = sc.ByKind
	}
	r.recount()
	verified := run.Stats["checked"]
	r.WorkerCPUSec = res.cpu.Seconds()
	r.ProxyCPUSec = res.proxyCPU.Seconds()
	r.S3CPUSec = res.s3CPU.Seconds()
	r.PGCPUSec = res.pgCPU.Seconds()
	r.MachineBusy = busyFraction(res.machine0, res.machine1)
	r.MachineIRQSec = res.machine1.irq - res.machine0.irq
	r.MachineSteal = res.machine1.steal - res.machine0.steal
	r.MaxRSSMB = float64(res.maxRSSKB) / 1024
	r.derive(latency, runtime.NumCPU())
	if run.Status != "succeeded" {
		return r, fmt.Errorf("%s: run %d %s", r.ID, run.ID, run.Status)
	}
	if int(verified) != n {
		return r, fmt.Errorf("%s: checked %d of %d uploads (stats %v)", r.ID, verified, n, run.Stats)
	}
	b.logf("%s: run %.2fs (ideal %.2fs, ×%.2f), process %.2fs, %d HEAD (max %d in flight), %d statements (%.1f/1k), worker CPU %.2fs, machine busy %.0f%%, peak RSS %.1f MB",
		r.ID, r.RunSec, r.IdealSec, r.VsIdeal, r.ProcessSec, heads, r.MaxInFlight, r.Statements, r.StatementsPer1k,
		r.WorkerCPUSec, 100*r.MachineBusy, r.MaxRSSMB)
	return r, nil
}

// derive computes the run's rates from its measurements (N, C, RunSec, Requests, the
// CPU seconds): latency is the proxy's added latency L, nproc the machine's cores.
func (r *SyncRun) derive(latency time.Duration, nproc int) {
	r.IdealSec = float64(r.N) * latency.Seconds() / float64(r.Concurrency)
	if r.IdealSec > 0 {
		r.VsIdeal = r.RunSec / r.IdealSec
	}
	heads := r.Requests[opHeadObject]
	if r.RunSec > 0 {
		r.HeadsPerSec = float64(heads) / r.RunSec
	}
	if heads > 0 {
		// Our processes only: the machine is shared, other work shows in MachineBusy.
		ours := r.WorkerCPUSec + r.ProxyCPUSec + r.S3CPUSec + r.PGCPUSec
		r.CPUMsPerHead = ours * 1000 / float64(heads)
		if r.CPUMsPerHead > 0 {
			r.MachineCapRate = float64(nproc) * 1000 / r.CPUMsPerHead
		}
	}
	if latency > 0 {
		r.DemandRate = float64(r.Concurrency) / latency.Seconds()
	}
}

// medianRun is the repetition with the median run time (the upper one of an even
// count), carrying all repetitions' times in Repeats when there are several.
func medianRun(tries []SyncRun) SyncRun {
	tries = append([]SyncRun(nil), tries...)
	sort.Slice(tries, func(i, j int) bool { return tries[i].RunSec < tries[j].RunSec })
	r := tries[len(tries)/2]
	if len(tries) > 1 {
		for _, t := range tries {
			r.Repeats = append(r.Repeats, t.RunSec)
		}
	}
	return r
}

// setC1 sets the concurrency-1 comparison: N uploads at perUpload seconds each.
func (r *SyncRun) setC1(perUpload float64, extrapolated bool) {
	r.C1Sec = perUpload * float64(r.N)
	r.C1Extrapolated = extrapolated
	if r.RunSec > 0 {
		r.SpeedupVsC1 = r.C1Sec / r.RunSec
	}
}

// throughput is item 1: wall time vs N·L/C, and vs concurrency 1 (measured at baseN and
// extrapolated linearly: at C = 1 each upload costs one full round trip).
func (b *bench) throughput(ctx context.Context) (*ThroughputResult, error) {
	o := b.opts
	res := &ThroughputResult{LatencyMs: float64(o.latency) / float64(time.Millisecond)}
	maxN := 0
	for _, n := range o.tputNs {
		maxN = max(maxN, n)
	}
	if err := b.ensureObjects(max(maxN, o.baseN)); err != nil {
		return nil, err
	}
	base, err := b.syncRun(ctx, "tput", o.baseN, 1, o.latency)
	if err != nil {
		return nil, err
	}
	base.C1Sec = base.RunSec
	base.SpeedupVsC1 = 1
	res.Baseline = base
	perUpload := base.RunSec / float64(o.baseN)
	res.BaselineNote = fmt.Sprintf("C=1 measured at N=%d (%.2f ms per upload); C=1 at larger N extrapolated as N × %.2f ms",
		o.baseN, perUpload*1000, perUpload*1000)
	for _, n := range o.tputNs {
		for _, c := range o.tputCs {
			// The goal's cell is repeated; the run with the median time is reported.
			reps := 1
			if n == 10000 && c == 32 {
				reps = o.headlineReps
			}
			var tries []SyncRun
			for i := range reps {
				label := "tput"
				if i > 0 {
					label = fmt.Sprintf("tput%d", i+1)
				}
				r, err := b.syncRun(ctx, label, n, c, o.latency)
				if err != nil {
					return res, err
				}
				tries = append(tries, r)
			}
			r := medianRun(tries)
			r.setC1(perUpload, n != o.baseN)
			res.Runs = append(res.Runs, r)
		}
	}
	// The same at N=10k with a region the SDK finds in its partition table.
	for _, c := range o.regionCs {
		err := b.withRegion(ctx, "us-east-1", func() error {
			r, err := b.syncRun(ctx, "tput-useast1", 10000, c, o.latency)
			if err != nil {
				return err
			}
			r.setC1(perUpload, true)
			res.RegionRuns = append(res.RegionRuns, r)
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// memory is item 2: peak RSS of the once process at two sizes, L = 0.
func (b *bench) memory(ctx context.Context) (*MemoryResult, error) {
	res := &MemoryResult{}
	for _, n := range b.opts.memNs {
		r, err := b.syncRun(ctx, "mem", n, 32, 0)
		if err != nil {
			return res, err
		}
		res.Runs = append(res.Runs, r)
	}
	if len(res.Runs) >= 2 && res.Runs[0].MaxRSSMB > 0 {
		res.Ratio = res.Runs[len(res.Runs)-1].MaxRSSMB / res.Runs[0].MaxRSSMB
	}
	return res, nil
}
