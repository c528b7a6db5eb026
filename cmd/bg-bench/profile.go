package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/logging"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/wiring"
)

// ProfileResult names the profiles written (--profile DIR), per R2_REGION.
type ProfileResult struct {
	Dir  string             `json:"dir"`
	Sync []SyncProfile      `json:"sync_cpu"`
	Idle []IdleAllocProfile `json:"idle_allocs"`
}

// SyncProfile is a CPU profile of one in-process sync-uploads run.
type SyncProfile struct {
	Region    string  `json:"r2_region"`
	Profile   string  `json:"profile"`
	Top       string  `json:"top"`
	RunSec    float64 `json:"run_sec"`
	WorkerCPU float64 `json:"worker_cpu_sec"` // samples labelled part=worker
	RegexpCPU float64 `json:"regexp_compile_cpu_sec"`
}

// IdleAllocProfile is an allocation profile of an idle in-process leader.
type IdleAllocProfile struct {
	Region      string  `json:"r2_region"`
	Profile     string  `json:"profile"`
	Top         string  `json:"top"`
	Runs        int     `json:"runs"`
	Sec         float64 `json:"sec"`
	AllocPerRun float64 `json:"alloc_bytes_per_run"`
	AllocPerSec float64 `json:"alloc_bytes_per_sec"`
}

// inProcess is bg-worker's wiring (internal/wiring, as cmd/bg-worker builds it) in this
// process, so its hot paths can be profiled.
type inProcess struct {
	cfg     config.Config
	st      *store.Store
	job     jobs.Job
	log     *slog.Logger
	connCfg *pgx.ConnConfig
}

func (b *bench) newInProcess(ctx context.Context, id, endpoint string, extra map[string]string) (*inProcess, error) {
	env := map[string]string{
		"DATABASE_URL": b.dbURL, "WORKER_ID": id, "R2_ENDPOINT": endpoint, "R2_REGION": b.s3.Region,
		"R2_ACCESS_KEY_ID": b.s3.AccessKey, "R2_SECRET_ACCESS_KEY": b.s3.SecretKey, "R2_BUCKET_NAME": benchBucket,
	}
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := config.Load(config.MapEnv(env))
	if err != nil {
		return nil, err
	}
	log, err := logging.New(io.Discard, "text", "info") // formatted as in production, then dropped
	if err != nil {
		return nil, err
	}
	log = log.With("worker_id", cfg.WorkerID)
	deps, err := wiring.Deps(cfg, log, metrics.New())
	if err != nil {
		return nil, err
	}
	job, ok := jobs.Find(jobs.Registry(deps), "sync-uploads")
	if !ok {
		return nil, fmt.Errorf("sync-uploads not registered")
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, wiring.StoreOptions(cfg, wiring.WorkerPoolSize(cfg)))
	if err != nil {
		return nil, err
	}
	if err := scheduler.RegisterJobs(ctx, st, log, []jobs.Job{job}, false); err != nil {
		st.Close()
		return nil, err
	}
	connCfg, err := store.ParseConfig(cfg.DatabaseURL, cfg.WorkerID)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &inProcess{cfg: cfg, st: st, job: job, log: log, connCfg: connCfg}, nil
}

// profiles writes CPU profiles of one sync-uploads run (N=10k, C=32, L) and allocation
// profiles of an idle leader, in this process, with R2_REGION auto and us-east-1.
func (b *bench) profiles(ctx context.Context) (*ProfileResult, error) {
	dir := b.opts.profileDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	res := &ProfileResult{Dir: dir}
	for _, region := range []string{b.s3.Region, "us-east-1"} {
		err := b.withRegion(ctx, region, func() error {
			sp, err := b.cpuProfile(ctx)
			if err != nil {
				return err
			}
			res.Sync = append(res.Sync, sp)
			ip, err := b.allocProfile(ctx)
			if err != nil {
				return err
			}
			res.Idle = append(res.Idle, ip)
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func (b *bench) cpuProfile(ctx context.Context) (SyncProfile, error) {
	const n, c = 10000, 32
	res := SyncProfile{Region: b.s3.Region}
	if err := b.ensureObjects(n); err != nil {
		return res, err
	}
	if err := b.seedUploads(ctx, n); err != nil {
		return res, err
	}
	b.proxy.SetLatency(b.opts.latency)
	res.Profile = filepath.Join(b.opts.profileDir, "sync-uploads-cpu-"+res.Region+".pprof")
	f, err := os.Create(res.Profile)
	if err != nil {
		return res, err
	}
	defer f.Close()
	var runErr error
	// Everything the worker does carries the label part=worker (goroutines inherit it:
	// the pool's, the HTTP transport's connection loops); the proxy's do not.
	pprof.Do(ctx, pprof.Labels("part", "worker"), func(ctx context.Context) {
		p, err := b.newInProcess(ctx, "bench-profile-sync-"+res.Region, b.proxy.URL(), map[string]string{"SYNC_CONCURRENCY": strconv.Itoa(c)})
		if err != nil {
			runErr = err
			return
		}
		defer p.st.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			runErr = err
			return
		}
		defer pprof.StopCPUProfile()
		start := time.Now()
		// The production path of `bg-worker once`: lock, take over, claim, run, record, release.
		run, err := scheduler.RunNow(ctx, scheduler.RunNowOptions{Store: p.st, ConnConfig: p.connCfg,
			Logger: p.log, WorkerID: p.cfg.WorkerID, Lock: wiring.LockOptions(p.cfg)}, p.job)
		res.RunSec = time.Since(start).Seconds()
		switch {
		case err != nil:
			runErr = fmt.Errorf("profile run: %w", err)
		case !run.Here:
			runErr = fmt.Errorf("profile run: lock held by %s, run there", run.WorkerID)
		case run.Status != store.StatusSucceeded:
			runErr = fmt.Errorf("profile run %s: %s", run.Status, run.Error)
		}
	})
	if runErr != nil {
		return res, runErr
	}
	f.Close()
	top, err := pprofTop(ctx, res.Profile, "-tagfocus=part=worker")
	if err != nil {
		return res, err
	}
	res.WorkerCPU, _ = pprofTotal(ctx, res.Profile, "-tagfocus=part=worker")
	res.RegexpCPU, _ = pprofTotal(ctx, res.Profile, "-tagfocus=part=worker", "-focus=^regexp\\.compile$")
	res.Top = filepath.Join(b.opts.profileDir, "sync-uploads-cpu-"+res.Region+".txt")
	b.logf("CPU profile of one in-process sync-uploads run (N=%d, C=%d, R2_REGION=%s): %.2fs, worker CPU %.2fs of which regexp.compile %.2fs: %s",
		n, c, res.Region, res.RunSec, res.WorkerCPU, res.RegexpCPU, res.Top)
	return res, os.WriteFile(res.Top, []byte(top), 0o644)
}

func (b *bench) allocProfile(ctx context.Context) (IdleAllocProfile, error) {
	res := IdleAllocProfile{Region: b.s3.Region}
	if err := b.seedUploads(ctx, 0); err != nil {
		return res, err
	}
	interval := b.opts.profileInterval
	ticks := max(12, int(20*time.Second/interval))
	// Straight to versitygw: the proxy's allocations would land in the same profile.
	id := "bench-profile-idle-" + res.Region
	p, err := b.newInProcess(ctx, id, b.s3.Endpoint, map[string]string{
		"WORKER_INTERVAL_MS": strconv.Itoa(int(interval.Milliseconds())),
	})
	if err != nil {
		return res, err
	}
	defer p.st.Close()
	s, err := scheduler.New(scheduler.Options{WorkerID: p.cfg.WorkerID, ConnConfig: p.connCfg, Store: p.st,
		Logger: p.log, Lock: wiring.LockOptions(p.cfg), ShutdownTimeout: time.Second, MaxFailures: 3, Observer: metrics.New()}, []jobs.Job{p.job})
	if err != nil {
		return res, err
	}
	// Record every allocation from here on (the default samples one per 512 KB).
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = 512 * 1024 }()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	// Warm up: leading and a few runs done.
	time.Sleep(3 * time.Second)
	base := filepath.Join(b.opts.profileDir, "idle-leader-allocs-"+res.Region+"-base.pprof")
	if err := os.WriteFile(base, heapProfile(), 0o644); err != nil {
		cancel()
		return res, err
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	var runs0 int
	_ = b.db.QueryRow(ctx, `SELECT count(*) FROM bg_worker.job_runs WHERE worker_id = $1 AND status = 'succeeded'`, id).Scan(&runs0)
	start := time.Now()
	time.Sleep(time.Duration(ticks) * interval)
	elapsed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	var runs1 int
	_ = b.db.QueryRow(ctx, `SELECT count(*) FROM bg_worker.job_runs WHERE worker_id = $1 AND status = 'succeeded'`, id).Scan(&runs1)
	cancel()
	<-done
	res.Profile = filepath.Join(b.opts.profileDir, "idle-leader-allocs-"+res.Region+".pprof")
	if err := os.WriteFile(res.Profile, heapProfile(), 0o644); err != nil {
		return res, err
	}
	res.Runs = runs1 - runs0
	res.Sec = elapsed.Seconds()
	total := float64(m1.TotalAlloc - m0.TotalAlloc)
	if res.Runs > 0 {
		res.AllocPerRun = total / float64(res.Runs)
	}
	res.AllocPerSec = total / elapsed.Seconds()
	top, err := pprofTop(ctx, res.Profile, "-sample_index=alloc_space", "-base="+base)
	if err != nil {
		return res, err
	}
	res.Top = filepath.Join(b.opts.profileDir, "idle-leader-allocs-"+res.Region+".txt")
	b.logf("idle leader in process (R2_REGION=%s): %d runs in %.1fs, %.0f bytes allocated per run (whole process %.0f B/s): %s",
		res.Region, res.Runs, res.Sec, res.AllocPerRun, res.AllocPerSec, res.Top)
	return res, os.WriteFile(res.Top, []byte(top), 0o644)
}

func heapProfile() []byte {
	var buf bytes.Buffer
	_ = pprof.Lookup("allocs").WriteTo(&buf, 0)
	return buf.Bytes()
}

// pprofTop renders a profile with `go tool pprof -top`, flat and cumulative.
func pprofTop(ctx context.Context, path string, extra ...string) (string, error) {
	var out strings.Builder
	for _, mode := range [][]string{{"-top", "-nodecount=35"}, {"-top", "-cum", "-nodecount=60"}} {
		args := append(append([]string{"tool", "pprof"}, mode...), extra...)
		args = append(args, path)
		cmd := exec.CommandContext(ctx, "go", args...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		fmt.Fprintf(&out, "$ go %s\n%s\n", strings.Join(args, " "), b)
	}
	return out.String(), nil
}

// pprofTotal is the time a CPU profile's samples add up to after filters: with every
// node shown, "Showing nodes accounting for X" is their sum.
func pprofTotal(ctx context.Context, path string, filters ...string) (float64, error) {
	args := append(append([]string{"tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0"}, filters...), path)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return shownTotal(string(out))
}

// shownTotal reads the seconds of "Showing nodes accounting for X" in pprof -top
// output; 0 when no line says it (no sample matched).
func shownTotal(out string) (float64, error) {
	for _, line := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(line, "Showing nodes accounting for ")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, ",")
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("pprof total %q: %w", v, err)
		}
		return d.Seconds(), nil
	}
	return 0, nil // no sample matched
}
