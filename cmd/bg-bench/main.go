// Command bg-bench measures what bg-worker's users pay for, each figure against a
// baseline or limit measured in the same run: verification throughput, memory vs work,
// SQL statements per verified upload, the R2 request bill, idle overhead of 3 replicas,
// takeover time after kill -9 / a terminated backend / SIGSTOP / a network partition of
// the leader (at the bench's short lock timings and at production's), and the requests a
// fleet sends to a bucket that stopped answering (optionally against an older commit).
//
// It starts its own PostgreSQL (initdb/postgres on PATH, statement logging on) and
// versitygw (make tools), puts a latency proxy (internal/faultproxy) in front of the
// S3 server, builds bg-worker, and runs it the way production does: `bg-worker once
// sync-uploads` and `bg-worker run` replicas as separate processes.
//
//	go run ./cmd/bg-bench --quick        # a few minutes
//	go run ./cmd/bg-bench                # full (about 20 minutes on 2 cores)
//
// It prints a markdown report and writes the numbers as JSON (--out).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	quick     bool
	only      map[string]bool
	out       string
	md        string
	latency   time.Duration
	versitygw string
	keep      string

	tputNs, tputCs []int
	baseN          int
	memNs          []int
	regionCs       []int
	headlineReps   int

	billObjects   int
	billOrigTicks int
	billFor       time.Duration
	billRate      float64

	idleFor      time.Duration
	idleInterval time.Duration
	allocWindow  time.Duration

	takeoverTrials   int
	takeoverDefaults bool
	takeoverInterval time.Duration
	lockTimeout      time.Duration
	lockHeartbeat    time.Duration

	profileDir      string
	profileInterval time.Duration

	outageDue    int
	outageFor    time.Duration
	outageTick   time.Duration
	outageKinds  []string
	outageBefore string
}

var items = []string{"throughput", "cpuhead", "memory", "bill", "idle", "takeover", "outage", "appdb"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bg-bench: %v\n", err)
		os.Exit(1)
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mult := 1
		if strings.HasSuffix(f, "k") {
			f, mult = strings.TrimSuffix(f, "k"), 1000
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bg-bench", flag.ContinueOnError)
	var o options
	fs.BoolVar(&o.quick, "quick", false, "smaller sizes and shorter windows (a few minutes)")
	only := fs.String("only", strings.Join(items, ","), "items to run: "+strings.Join(items, ","))
	fs.StringVar(&o.out, "out", "bench-results.json", "JSON results file")
	fs.StringVar(&o.md, "md", "", "also write the markdown report to this file")
	fs.DurationVar(&o.latency, "latency", 20*time.Millisecond, "latency the proxy adds to every S3 request")
	fs.StringVar(&o.versitygw, "versitygw", "", "versitygw binary (default $VERSITYGW_BIN or .bin/versitygw; make tools)")
	fs.StringVar(&o.keep, "keep", "", "keep binaries and logs in this directory (default: a temporary one, removed)")
	ns := fs.String("n", "", "throughput sizes (default 1k,10k,50k; quick 1k,10k)")
	cs := fs.String("c", "8,32,128", "throughput concurrencies")
	mem := fs.String("mem", "", "memory sizes (default 10k,200k; quick 10k,100k)")
	fs.IntVar(&o.takeoverTrials, "trials", 0, "takeover trials per fault (default 10; quick 3)")
	fs.DurationVar(&o.takeoverInterval, "takeover-interval", time.Second, "WORKER_INTERVAL_MS of the takeover replicas")
	fs.DurationVar(&o.lockTimeout, "lock-timeout", 4*time.Second, "LOCK_TIMEOUT of the takeover replicas")
	fs.DurationVar(&o.lockHeartbeat, "lock-heartbeat", 500*time.Millisecond, "LOCK_HEARTBEAT of the takeover replicas")
	fs.BoolVar(&o.takeoverDefaults, "takeover-defaults", true, "also run the takeover item with production's LOCK_TIMEOUT 10s / LOCK_HEARTBEAT 1s")
	fs.IntVar(&o.outageDue, "outage-due", 10000, "outage item: uploads due when the bucket is cut")
	fs.DurationVar(&o.outageFor, "outage-for", 60*time.Second, "outage item: how long the bucket is cut (quick: 20s)")
	fs.DurationVar(&o.outageTick, "outage-tick", time.Second, "outage item: WORKER_INTERVAL_MS of its replicas")
	outageKinds := fs.String("outage-kinds", "reset,stall", "outage item: kinds of cut (reset: connections reset at once; stall: requests held unanswered)")
	fs.StringVar(&o.outageBefore, "outage-before", "", "outage item: also run bg-worker built from this commit (e.g. 4a26deb), in a database migrated by it")
	fs.DurationVar(&o.idleFor, "idle-for", 0, "idle measurement window (default 2m; quick 30s)")
	fs.DurationVar(&o.idleInterval, "idle-interval", 5*time.Second, "WORKER_INTERVAL_MS of the idle replicas")
	fs.DurationVar(&o.allocWindow, "alloc-window", -1, "idle allocations: whole forced-GC periods (2m each) to measure over (default 4m; quick: not measured)")
	fs.DurationVar(&o.profileInterval, "profile-interval", 250*time.Millisecond, "tick of the in-process idle leader whose allocations are profiled")
	fs.StringVar(&o.profileDir, "profile", "", "also profile bg-worker in this process (CPU of a sync run, allocations of an idle leader) into this directory")
	rerender := fs.String("report", "", "only print the markdown report of an earlier results file (and rewrite it to --out when given, derived figures recomputed)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *rerender != "" {
		data, err := os.ReadFile(*rerender)
		if err != nil {
			return err
		}
		var res Results
		if err := json.Unmarshal(data, &res); err != nil {
			return fmt.Errorf("%s: %w", *rerender, err)
		}
		res.evaluate()
		fmt.Print(res.markdown())
		outSet := false
		fs.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
		if outSet { // rewrite with the derived figures and goals recomputed
			data, err := json.MarshalIndent(&res, "", "  ")
			if err != nil {
				return err
			}
			return os.WriteFile(o.out, append(data, '\n'), 0o644)
		}
		return nil
	}
	o.only = map[string]bool{}
	for _, it := range strings.Split(*only, ",") {
		it = strings.TrimSpace(it)
		known := it == "profile"
		for _, k := range items {
			known = known || k == it
		}
		if !known {
			return fmt.Errorf("--only: unknown item %q (items: %s)", it, strings.Join(items, ","))
		}
		o.only[it] = true
	}
	var err error
	def := func(s, full, quick string) string {
		if s != "" {
			return s
		}
		if o.quick {
			return quick
		}
		return full
	}
	if o.tputNs, err = parseInts(def(*ns, "1k,10k,50k", "1k,10k")); err != nil {
		return fmt.Errorf("-n: %w", err)
	}
	if o.tputCs, err = parseInts(*cs); err != nil {
		return fmt.Errorf("-c: %w", err)
	}
	if o.memNs, err = parseInts(def(*mem, "10k,200k", "10k,100k")); err != nil {
		return fmt.Errorf("--mem: %w", err)
	}
	o.baseN = 1000
	o.regionCs = []int{32, 128}
	o.headlineReps = 3
	if o.quick {
		o.regionCs = []int{32}
	}
	o.billObjects, o.billOrigTicks, o.billFor, o.billRate = 20000, 20, 120*time.Second, 10
	if o.quick {
		o.billObjects, o.billOrigTicks, o.billFor = 5000, 10, 60*time.Second
	}
	if o.idleFor == 0 {
		o.idleFor = 2 * time.Minute
		if o.quick {
			o.idleFor = 30 * time.Second
		}
	}
	if o.allocWindow < 0 {
		o.allocWindow = 4 * time.Minute
		if o.quick {
			o.allocWindow = 0
		}
	}
	if o.takeoverTrials == 0 {
		o.takeoverTrials = 10
		if o.quick {
			o.takeoverTrials = 3
		}
	}
	for _, k := range strings.Split(*outageKinds, ",") {
		if k = strings.TrimSpace(k); k != "reset" && k != "stall" {
			return fmt.Errorf("--outage-kinds: %q is not reset or stall", k)
		}
		o.outageKinds = append(o.outageKinds, k)
	}
	outageForSet := false
	fs.Visit(func(f *flag.Flag) { outageForSet = outageForSet || f.Name == "outage-for" })
	if o.quick && !outageForSet {
		o.outageFor = 20 * time.Second
	}
	if o.lockTimeout <= 2*o.lockHeartbeat {
		return errors.New("--lock-timeout must be more than twice --lock-heartbeat")
	}

	repo, err := findRepo()
	if err != nil {
		return err
	}
	if o.versitygw == "" {
		o.versitygw = os.Getenv("VERSITYGW_BIN")
	}
	if o.versitygw == "" {
		o.versitygw = filepath.Join(repo, ".bin", "versitygw")
	}
	if _, err := os.Stat(o.versitygw); err != nil {
		return fmt.Errorf("versitygw not found at %s (run `make tools` or pass --versitygw): %w", o.versitygw, err)
	}

	b := &bench{opts: o, repo: repo}
	began := time.Now()
	defer b.stop()
	if err := b.start(ctx); err != nil {
		return err
	}
	idle0 := machineCPU()
	time.Sleep(2 * time.Second)
	background := busyFraction(idle0, machineCPU())
	res := &Results{StartedAt: began.UTC(), Mode: "full", Machine: b.machine(ctx),
		BackgroundBusy: background, LoadAvgStart: loadAvg1(), Tree: b.tree, Command: "go run ./cmd/bg-bench " + strings.Join(args, " ")}
	if o.quick {
		res.Mode = "quick"
	}
	if background > 0.15 {
		b.logf("warning: the machine was %.0f%% busy before the bench started; CPU-bound figures will suffer", 100*background)
	}
	save := func() {
		res.DurationSec = time.Since(began).Seconds()
		res.LoadAvgEnd = loadAvg1()
		res.evaluate()
		if data, err := json.MarshalIndent(res, "", "  "); err == nil {
			_ = os.WriteFile(o.out, append(data, '\n'), 0o644)
		}
	}
	if o.profileDir != "" {
		o.only["profile"] = true
	} else if o.only["profile"] {
		b.opts.profileDir = "bench-profile"
	}
	step := func(name string, fn func() error) error {
		if !o.only[name] || ctx.Err() != nil {
			return ctx.Err()
		}
		t := time.Now()
		b.logf("== %s", name)
		err := fn()
		b.logf("== %s done in %s", name, time.Since(t).Round(time.Second))
		save()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"throughput", func() (err error) { res.Throughput, err = b.throughput(ctx); return }},
		{"cpuhead", func() (err error) { res.CPUHead, err = b.cpuPerHead(ctx); return }},
		{"memory", func() (err error) { res.Memory, err = b.memory(ctx); return }},
		{"bill", func() (err error) { res.Bill, err = b.bill(ctx); return }},
		{"idle", func() (err error) { res.Idle, err = b.idle(ctx); return }},
		{"takeover", func() (err error) { res.Takeovers, err = b.takeovers(ctx); return }},
		{"outage", func() (err error) { res.Outage, err = b.outage(ctx); return }},
		{"appdb", func() (err error) { res.AppDB, err = b.appDB(ctx); return }},
		{"profile", func() (err error) { res.Profile, err = b.profiles(ctx); return }},
	}
	var errs []error
	for _, s := range steps {
		if err := step(s.name, s.fn); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			b.logf("error: %v", err)
		}
	}
	save()
	report := res.markdown()
	fmt.Print(report)
	if o.md != "" {
		_ = os.WriteFile(o.md, []byte(report), 0o644)
	}
	b.logf("results written to %s", o.out)
	return errors.Join(errs...)
}
