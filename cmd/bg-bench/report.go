package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Results is everything one bench run measured (the JSON file).
type Results struct {
	StartedAt      time.Time         `json:"started_at"`
	Mode           string            `json:"mode"`
	Command        string            `json:"command"`
	DurationSec    float64           `json:"duration_sec"`
	Machine        Machine           `json:"machine"`
	BackgroundBusy float64           `json:"background_busy_before_start"`
	LoadAvgStart   float64           `json:"load_avg_1m_start,omitempty"`
	LoadAvgEnd     float64           `json:"load_avg_1m_end,omitempty"`
	Tree           string            `json:"tree,omitempty"` // git rev-parse --short HEAD
	Goals          []Goal            `json:"goals"`
	Throughput     *ThroughputResult `json:"throughput,omitempty"`
	CPUHead        *CPUHeadResult    `json:"cpu_per_head,omitempty"`
	Memory         *MemoryResult     `json:"memory,omitempty"`
	Bill           *BillResult       `json:"bill,omitempty"`
	Idle           *IdleResult       `json:"idle,omitempty"`
	Takeover       *TakeoverResult   `json:"takeover,omitempty"` // results files before the defaults config
	Takeovers      []*TakeoverResult `json:"takeovers,omitempty"`
	Outage         *OutageResult     `json:"outage,omitempty"`
	AppDB          *AppDBResult      `json:"appdb,omitempty"`
	Profile        *ProfileResult    `json:"profile,omitempty"`
}

// Goal is one line of the summary: a measurement against its baseline or limit.
type Goal struct {
	Item     string  `json:"item"`
	Measure  string  `json:"measure"`
	Value    string  `json:"value"`
	Against  string  `json:"against"`
	Ratio    float64 `json:"ratio"`
	Goal     string  `json:"goal"`
	Met      bool    `json:"met"`
	HasLimit bool    `json:"has_limit"`
}

func (r *Results) evaluate() {
	r.Goals = nil
	if t := r.Throughput; t != nil {
		t.Baseline.recount()
		for i := range t.Runs {
			t.Runs[i].recount()
		}
		for i := range t.RegionRuns {
			t.RegionRuns[i].recount()
		}
	}
	if m := r.Memory; m != nil {
		for i := range m.Runs {
			m.Runs[i].recount()
		}
	}
	add := func(g Goal) { r.Goals = append(r.Goals, g) }
	if t := r.Throughput; t != nil {
		for _, run := range t.Runs {
			if run.N == 10000 && run.Concurrency == 32 {
				reps := ""
				if len(run.Repeats) > 1 {
					var xs []string
					for _, x := range run.Repeats {
						xs = append(xs, fmt.Sprintf("%.2f", x))
					}
					reps = fmt.Sprintf(" (median of %s)", strings.Join(xs, ", "))
				}
				add(Goal{Item: "1 throughput", Measure: "sync-uploads run, N=10k, C=32, L=20ms",
					Value: fmt.Sprintf("%.2f s%s", run.RunSec, reps), Against: fmt.Sprintf("ideal N·L/C = %.2f s", run.IdealSec),
					Ratio: run.VsIdeal, Goal: "≤ 1.25× ideal", Met: run.VsIdeal <= 1.25, HasLimit: true})
				add(Goal{Item: "1 throughput", Measure: "same run vs concurrency 1 (original's one-by-one)",
					Value: fmt.Sprintf("%.2f s", run.RunSec), Against: fmt.Sprintf("C=1: %.1f s (extrapolated)", run.C1Sec),
					Ratio: run.SpeedupVsC1, Goal: "(speedup)"})
			}
		}
		for _, run := range t.RegionRuns {
			add(Goal{Item: "1 throughput", Measure: fmt.Sprintf("control: N=10k, C=%d with R2_REGION=%s (a region in the SDK's partition table)", run.Concurrency, run.Region),
				Value: fmt.Sprintf("%.2f s", run.RunSec), Against: fmt.Sprintf("ideal %.2f s", run.IdealSec),
				Ratio: run.VsIdeal, Goal: "(info)"})
		}
	}
	if c := r.CPUHead; c != nil && len(c.Auto) > 0 {
		c.summarize()
		add(c.goal())
	}
	if m := r.Memory; m != nil && len(m.Runs) >= 2 {
		small, large := m.Runs[0], m.Runs[len(m.Runs)-1]
		add(Goal{Item: "2 memory", Measure: fmt.Sprintf("peak RSS of `once sync-uploads`, N=%s vs N=%s, L=0", kfmt(large.N), kfmt(small.N)),
			Value: fmt.Sprintf("%.1f MB", large.MaxRSSMB), Against: fmt.Sprintf("%.1f MB", small.MaxRSSMB),
			Ratio: m.Ratio, Goal: "< 1.5×", Met: m.Ratio < 1.5, HasLimit: true})
	}
	if t := r.Throughput; t != nil {
		for _, run := range t.Runs {
			if run.N == 10000 && run.Concurrency == 32 {
				add(Goal{Item: "3 database", Measure: "SQL statements of the run per 1,000 verified uploads (N=10k, C=32)",
					Value: fmt.Sprintf("%.1f (whole `once` process %.1f)", run.RunStatementsPer1k, run.StatementsPer1k), Against: "limit 10",
					Ratio: run.RunStatementsPer1k / 10, Goal: "≤ 10", Met: run.RunStatementsPer1k <= 10, HasLimit: true})
			}
		}
	}
	if b := r.Bill; b != nil {
		add(Goal{Item: "4 R2 bill", Measure: "Class A requests/day (1M objects, 1k uploads/h, 3 replicas, 5 s tick)",
			Value:   fmt.Sprintf("%s ($%.2f/month all classes)", human(b.Ours.ClassAPerDay), b.Ours.USDPerMonth),
			Against: fmt.Sprintf("original %s ($%.0f/month)", human(b.Original.ClassAPerDay), b.Original.USDPerMonth),
			Ratio:   b.ClassARatio, Goal: "≥ 100× fewer", Met: b.ClassARatio >= 100, HasLimit: true})
		if s := b.ScaledOurs; s.ClassBModel > 0 {
			add(Goal{Item: "4 R2 bill", Measure: "scaled run for real: requests counted at the proxy vs the model",
				Value:   fmt.Sprintf("A %d, B %d", s.ClassAMeasured, s.ClassBMeasured),
				Against: fmt.Sprintf("model A %d, B %d", s.ClassAModel, s.ClassBModel),
				Ratio:   float64(s.ClassAMeasured+s.ClassBMeasured) / float64(s.ClassAModel+s.ClassBModel), Goal: "(≈ 1: model holds)"})
		}
	}
	if id := r.Idle; id != nil {
		var worstNon, worstAlloc float64
		var holder *IdleReplica
		for i, rep := range id.Replicas {
			if rep.Holder {
				holder = &id.Replicas[i]
			} else {
				worstNon = max(worstNon, rep.StatementsPerTick)
			}
			worstAlloc = max(worstAlloc, rep.AllocMBPerHour)
		}
		add(Goal{Item: "5 idle", Measure: "statements per tick, non-holder (worst of 2)",
			Value: fmt.Sprintf("%.2f", worstNon), Against: "limit 2", Ratio: worstNon / 2, Goal: "≤ 2", Met: worstNon <= 2, HasLimit: true})
		if holder != nil {
			add(Goal{Item: "5 idle", Measure: "statements per tick, holder",
				Value: fmt.Sprintf("%.2f", holder.StatementsPerTick), Against: "(no limit)", Goal: "(info)"})
		}
		if id.AllocExact {
			var hold, stand float64
			for _, rep := range id.Replicas {
				if rep.Holder {
					hold = rep.AllocMBPerHour
				} else {
					stand = max(stand, rep.AllocMBPerHour)
				}
			}
			add(Goal{Item: "5 idle", Measure: "allocations per replica (worst of 3)",
				Value: fmt.Sprintf("%.2f MB/h (holder %.2f, standbys ≤ %.2f)", worstAlloc, hold, stand), Against: "limit 10 MB/h", Ratio: worstAlloc / 10,
				Goal: "< 10 MB/h", Met: worstAlloc < 10, HasLimit: true})
		} else {
			add(Goal{Item: "5 idle", Measure: "allocations per replica", Value: "not measured (quick mode)", Against: "limit 10 MB/h", Goal: "< 10 MB/h"})
		}
	}
	for _, t := range r.takeovers() {
		for _, s := range t.Scenarios {
			class := "fenced job"
			if s.Effects {
				class = "job with external effects"
			}
			add(Goal{Item: "6 takeover", Measure: fmt.Sprintf("%s of a mid-run leader, %s, LOCK_TIMEOUT %gs: max (median) to next run, %d trials", s.Name, class, t.TimeoutSec, len(s.Trials)),
				Value: fmt.Sprintf("%.2f s (%.2f s)", s.MaxSec, s.MedianSec), Against: fmt.Sprintf("bound %.1f s = %s", s.BoundSec, s.Bound),
				Ratio: s.MaxVsBound, Goal: "max ≤ bound", Met: s.MaxVsBound <= 1 && s.OverlapRuns == 0 && s.OverlapWrite == 0 && s.LateWrites == 0,
				HasLimit: true})
		}
	}
	if o := r.Outage; o != nil {
		for _, x := range o.Runs {
			add(Goal{Item: "outage", Measure: fmt.Sprintf("S3 requests during a %.0f s bucket outage (%s), %s due, tick %g s, %s (%s)", x.OutageSec, x.Kind, kfmt(x.Due), x.TickSec, x.Tree, x.Commit),
				Value: fmt.Sprintf("%d (%.1f per tick)", x.Total, x.PerTick), Against: "one probe per tick = 1 HeadBucket, ≤ 5 SDK attempts",
				Ratio: x.PerTick / 5, Goal: "≤ 5 per tick, not the backlog", Met: x.PerTick <= 5, HasLimit: true})
		}
	}
	if a := r.AppDB; a != nil {
		for _, g := range a.goals() {
			add(g)
		}
	}
}

func kfmt(n int) string {
	if n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func human(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func mark(g Goal) string {
	if !g.HasLimit {
		return ""
	}
	if g.Met {
		return "yes"
	}
	return "**no**"
}

func (r *Results) markdown() string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	m := r.Machine
	p("## Results (%s mode, %s, %.0f s)\n\n", r.Mode, r.StartedAt.Format("2006-01-02 15:04 UTC"), r.DurationSec)
	p("Machine: %d × %s, %d GB RAM, Linux %s; %s; PostgreSQL %s; versitygw %s. Machine busy before start: %.0f%%.",
		m.NProc, m.CPUModel, m.MemoryGB, m.Kernel, m.Go, m.Postgres, m.Versitygw, 100*r.BackgroundBusy)
	if r.LoadAvgStart > 0 || r.LoadAvgEnd > 0 {
		p(" Load average (1 min) %.1f at start, %.1f at end.", r.LoadAvgStart, r.LoadAvgEnd)
	}
	if r.Tree != "" {
		p(" Tree %s; `%s`.", r.Tree, r.Command)
	}
	p("\n\n")
	p("| item | measure | result | against | ratio | goal | met |\n|---|---|---|---|---|---|---|\n")
	for _, g := range r.Goals {
		ratio := ""
		if g.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f×", g.Ratio)
		}
		p("| %s | %s | %s | %s | %s | %s | %s |\n", g.Item, g.Measure, g.Value, g.Against, ratio, g.Goal, mark(g))
	}
	p("\n")

	if t := r.Throughput; t != nil {
		p("### 1. Verification throughput (L = %.0f ms per request, 90%% of objects present)\n\n", t.LatencyMs)
		p("%s.\n\n", t.BaselineNote)
		p("| N | C | run s | ideal N·L/C s | × ideal | C=1 s | speedup vs C=1 | HEAD/s | demand C/L | CPU ms/HEAD (all 4) | machine cap HEAD/s | machine busy | worker CPU s | max in flight | statements (run) | per 1k (run) |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		rows := append(append([]SyncRun{t.Baseline}, t.Runs...), t.RegionRuns...)
		for _, x := range rows {
			c1 := fmt.Sprintf("%.1f", x.C1Sec)
			if x.C1Extrapolated {
				c1 += "*"
			}
			n := kfmt(x.N)
			if x.Region != "auto" {
				n += " R2_REGION=" + x.Region
			}
			p("| %s | %d | %.2f | %.2f | %.2f | %s | %.1f | %.0f | %.0f | %.3f | %.0f | %.0f%% | %.2f | %d | %d | %.1f |\n",
				n, x.Concurrency, x.RunSec, x.IdealSec, x.VsIdeal, c1, x.SpeedupVsC1, x.HeadsPerSec, x.DemandRate,
				x.CPUMsPerHead, x.MachineCapRate, 100*x.MachineBusy, x.WorkerCPUSec, x.MaxInFlight, x.RunStatements, x.RunStatementsPer1k)
		}
		p("\n\\* extrapolated from the C=1 baseline. \"CPU ms/HEAD\" sums the worker, the proxy, versitygw and PostgreSQL; \"machine cap\" = nproc ÷ that: the HEAD rate at which this machine's cores would be saturated; a demand C/L above it means this machine, not the design, is the limit. \"machine busy\" is the whole machine (other work included).\n\n")
	}
	if t := t0(r); len(t.RegionRuns) > 0 {
		p("Rows with R2_REGION=us-east-1 (which R2 accepts) are a control: for a region in its partition table the AWS SDK resolves endpoints without compiling regular expressions; for `auto` it compiles every partition's region regexp on each resolution, twice per request. internal/bucket now resolves once per client and gives each request a copy, so both should cost the same (item `cpuhead` measures it).")
		for _, c := range t.RegionRuns {
			for _, a := range t.Runs {
				if a.N == c.N && a.Concurrency == c.Concurrency && c.N > 0 {
					p(" At N=%s, C=%d the worker spent %.2f ms CPU per HEAD with `auto` and %.2f ms with the control.",
						kfmt(c.N), c.Concurrency, a.WorkerCPUSec*1000/float64(a.N), c.WorkerCPUSec*1000/float64(c.N))
				}
			}
		}
		p("\n\n")
	}
	if c := r.CPUHead; c != nil && len(c.Auto) > 0 {
		p("%s", c.markdown())
	}
	if mm := r.Memory; mm != nil {
		p("### 2. Memory vs work (L = 0, C = 32)\n\n| N | peak RSS MB | run s | HEAD/s | statements per 1k (run) |\n|---|---|---|---|---|\n")
		for _, x := range mm.Runs {
			p("| %s | %.1f | %.2f | %.0f | %.1f |\n", kfmt(x.N), x.MaxRSSMB, x.RunSec, x.HeadsPerSec, x.RunStatementsPer1k)
		}
		p("\nlarger ÷ smaller: %.2f×\n\n", mm.Ratio)
	}
	if t := r.Throughput; t != nil {
		for _, x := range t.Runs {
			if x.N == 10000 && x.Concurrency == 32 {
				p("### 3. Database cost: the statements of `once sync-uploads`, N=10k, C=32 (%d statements, %.1f per 1,000 verified; without the `once` process's start-up and lock handling (schema check, job registration, lock take/record/release, LISTEN, takeover check), which a scheduled run does not repeat: %d, %.1f per 1,000)\n\n",
					x.Statements, x.StatementsPer1k, x.RunStatements, x.RunStatementsPer1k)
				p("| statement | count |\n|---|---|\n")
				for _, k := range kindsSorted(x.StatementKinds) {
					p("| %s | %d |\n", k, x.StatementKinds[k])
				}
				p("\n")
			}
		}
	}
	if b := r.Bill; b != nil {
		d := b.Day
		p("### 4. R2 request bill: a simulated day\n\n")
		p("Workload: %s objects, %d uploads/hour (%.0f%% never arrive), %d replicas, %.0f s tick, SYNC_MAX_BACKOFF %.0f s, SYNC_PENDING_TTL %.0f h, orphan scan every %.0f min. A never-arriving upload costs %d HEADs before it is FAILED; %.1f%% of ticks have uploads due (and so a HeadBucket).\n\n",
			human(float64(d.Objects)), d.UploadsPerHour, 100*d.NeverArrive, d.Replicas, d.TickSec, d.MaxBackoffSec, d.TTLSec/3600, d.OrphanScanSec/60, b.ChecksMissing, 100*b.DueTickShare)
		p("| design | Class A/day | Class B/day | $/month |\n|---|---|---|---|\n")
		p("| (a) original, single instance (as deployed) | %s | %s | $%.2f |\n", human(b.Original.ClassAPerDay), human(b.Original.ClassBPerDay), b.Original.USDPerMonth)
		p("| (a) original, naively run as %d replicas | %s | %s | $%.2f |\n", d.Replicas, human(b.OriginalX3.ClassAPerDay), human(b.OriginalX3.ClassBPerDay), b.OriginalX3.USDPerMonth)
		p("| (b) bg-worker, %d replicas, one leader per job | %s | %s | $%.2f |\n\n", d.Replicas, human(b.Ours.ClassAPerDay), human(b.Ours.ClassBPerDay), b.Ours.USDPerMonth)
		p("bg-worker per day: ")
		var parts []string
		for _, k := range sortedKeys(b.Ours.Breakdown) {
			parts = append(parts, fmt.Sprintf("%s %s", k, human(b.Ours.Breakdown[k])))
		}
		p("%s.\n\n", strings.Join(parts, "; "))
		so := b.ScaledOriginal
		p("Scaled, for real: the original loop over %d objects for %d ticks made %v: %.1f list pages per tick (model ⌈objects/1000⌉ = %.0f, measured/model %.2f).\n\n",
			so.Objects, so.Ticks, so.Requests, so.PagesPerTick, so.ModelPerTick, so.MeasuredModel)
		s := b.ScaledOurs
		w := s.Workload
		p("Scaled, for real: 3 bg-worker replicas for %.0f s (tick %.0f s, SYNC_MAX_BACKOFF %.0f s, SYNC_PENDING_TTL %.0f s, ORPHAN_SCAN_INTERVAL %.0f s, %d old objects), %d uploads of which %d never arrive; %d sync runs (%d with uploads due) and %d scans (run by %s).\n\n",
			s.DurationSec, w.TickSec, w.MaxBackoffSec, w.TTLSec, w.OrphanScanSec, w.Objects, s.Uploads, s.Missing, s.SyncRuns, s.SyncRunsDue, s.ScanRuns, strings.Join(s.Leaders, ", "))
		p("| operation | measured at proxy | model | measured/model |\n|---|---|---|---|\n")
		ops := map[string]bool{}
		for k := range s.Requests {
			ops[k] = true
		}
		for k := range s.Model {
			ops[k] = true
		}
		for _, k := range sortedKeys(ops) {
			ratio := ""
			if s.Model[k] > 0 {
				ratio = fmt.Sprintf("%.3f", float64(s.Requests[k])/float64(s.Model[k]))
			}
			p("| %s | %d | %d | %s |\n", k, s.Requests[k], s.Model[k], ratio)
		}
		p("\n")
	}
	if id := r.Idle; id != nil {
		p("### 5. Idle overhead: 3 replicas, job %s, %.0f s tick, %.0f s window (%.1f ticks), nothing to do\n\n", id.Job, id.IntervalSec, id.DurationSec, id.Ticks)
		p("| replica | role | statements/tick | CPU s/hour | RSS MB | allocations MB/hour | statements (window) |\n|---|---|---|---|---|---|---|\n")
		for _, x := range id.Replicas {
			role := "standby"
			if x.Holder {
				role = "holder"
			}
			alloc := "–"
			if id.AllocExact {
				alloc = fmt.Sprintf("%.2f (%.1f KB, %.0f objects per tick)", x.AllocMBPerHour, x.AllocBytes/1024/(x.AllocWindowSec/id.IntervalSec), x.AllocsPerTick)
			}
			p("| %s | %s | %.2f | %.2f | %.1f | %s | %s |\n", x.ID, role, x.StatementsPerTick, x.CPUSecPerHour, x.RSSMB, alloc, kindsLine(x.StatementKinds))
		}
		p("\nAllocations: %s. S3 requests in the window: %v.\n\n", id.AllocMethod, id.Requests)
	}
	for _, t := range r.takeovers() {
		p("### 6. Takeover: 3 replicas of the e2e binary leading `%s` (a run far longer than the test, writing through the fence every 50 ms); tick %.1f s, LOCK_HEARTBEAT %.1f s, LOCK_TIMEOUT %.1f s\n\n",
			t.Job, t.IntervalSec, t.HeartbeatSec, t.TimeoutSec)
		p("| fault | job class | trials | median s | max s | bound s | max/bound | old run left `running` after, median (max) s | next run by the same replica | old run's writes after takeover | overlapping runs / interleaved writes (the group's whole history) | load avg | each trial s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range t.Scenarios {
			class := "fenced"
			if s.Effects {
				class = "external effects"
			}
			var each []string
			var ends []float64
			var maxEnd float64
			for _, tr := range s.Trials {
				each = append(each, fmt.Sprintf("%.2f", tr.Sec))
				ends = append(ends, tr.OldRunEndSec)
				maxEnd = max(maxEnd, tr.OldRunEndSec)
			}
			p("| %s | %s | %d | %.2f | %.2f | %.1f (%s) | %.2f | %.2f (%.2f) | %d | %d | %d / %d | %.1f | %s |\n", s.Name, class, len(s.Trials), s.MedianSec, s.MaxSec,
				s.BoundSec, s.Bound, s.MaxVsBound, median(ends), maxEnd, s.SameReplica, s.LateWrites, s.OverlapRuns, s.OverlapWrite, s.LoadAvg, strings.Join(each, " "))
		}
		p("\n")
	}
	if o := r.Outage; o != nil && len(o.Runs) > 0 {
		x0 := o.Runs[0]
		p("### Bucket outage: 3 replicas leading sync-uploads, %s due, SYNC_CONCURRENCY %d, L = %.0f ms, tick %g s; the bucket cut for %.0f s once the first run has sent 2,000 HEADs\n\n",
			kfmt(x0.Due), x0.Concurrency, x0.LatencyMs, x0.TickSec, x0.OutageSec)
		p("reset: every request's connection is reset at once; stall: requests are held unanswered (the SDK's 10 s attempt timeout ends them). Requests are counted at the proxy from the cut to the heal.\n\n")
		p("| cut | tree | requests during the cut | per tick | HeadObject | HeadBucket | runs during the cut (by status) | running at heal | lock holders | recovery after heal s | load avg | first run error |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range o.Runs {
			var runs []string
			for _, k := range sortedKeys(x.Runs) {
				runs = append(runs, fmt.Sprintf("%s %d", k, x.Runs[k]))
			}
			rec := fmt.Sprintf("%.1f", x.RecoverySec)
			if x.RecoverySec < 0 {
				rec = fmt.Sprintf("> %.0f", x.RecoveryLimitSec)
			}
			p("| %s | %s (%s) | %d | %.1f | %d | %d | %s | %d | %d | %s | %.1f | %s |\n", x.Kind, x.Tree, x.Commit, x.Total, x.PerTick,
				x.Requests[opHeadObject], x.Requests[opHeadBucket], strings.Join(runs, ", "), x.RunsRunningAtEnd, x.Holders, rec, x.LoadAvg,
				strings.ReplaceAll(x.FirstError, "|", "\\|"))
		}
		p("\n")
		if o.Note != "" {
			p("%s\n\n", o.Note)
		}
	}
	if a := r.AppDB; a != nil && len(a.Variants) > 0 {
		p("%s", a.markdown())
	}
	if pr := r.Profile; pr != nil {
		p("### Profiles (in process, `--profile %s`)\n\n", pr.Dir)
		p("| R2_REGION | sync run N=10k C=32 s | worker CPU s | of which regexp.compile s | idle leader: bytes allocated per run |\n|---|---|---|---|---|\n")
		for i := range pr.Sync {
			var alloc float64
			if i < len(pr.Idle) {
				alloc = pr.Idle[i].AllocPerRun
			}
			x := pr.Sync[i]
			p("| %s | %.2f | %.2f | %.2f | %.0f |\n", x.Region, x.RunSec, x.WorkerCPU, x.RegexpCPU, alloc)
		}
		p("\n")
	}
	return w.String()
}

// takeovers are the takeover item's configurations (one in results files written before
// the production-defaults configuration).
func (r *Results) takeovers() []*TakeoverResult {
	if len(r.Takeovers) > 0 {
		return r.Takeovers
	}
	if r.Takeover != nil {
		return []*TakeoverResult{r.Takeover}
	}
	return nil
}

func t0(r *Results) ThroughputResult {
	if r.Throughput == nil {
		return ThroughputResult{}
	}
	return *r.Throughput
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
