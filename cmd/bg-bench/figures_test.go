package main

import (
	"math"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), tc.xs...)
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
		if !reflect.DeepEqual(in, tc.xs) {
			t.Errorf("median sorted its input %v", in)
		}
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct{ a, b, want float64 }{{6, 3, 2}, {1, 4, 0.25}, {5, 0, 0}, {0, 5, 0}} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNumberFormats(t *testing.T) {
	for n, want := range map[int]string{10000: "10k", 1000: "1k", 0: "0k", 2500: "2500", 7: "7"} {
		if got := kfmt(n); got != want {
			t.Errorf("kfmt(%d) = %q, want %q", n, got, want)
		}
	}
	for x, want := range map[float64]string{1e6: "1.00M", 2_345_678: "2.35M", 1e4: "10.0k", 12_345: "12.3k", 9999: "9999", 0.4: "0"} {
		if got := human(x); got != want {
			t.Errorf("human(%v) = %q, want %q", x, got, want)
		}
	}
}

func TestMark(t *testing.T) {
	for _, tc := range []struct {
		g    Goal
		want string
	}{
		{Goal{}, ""},
		{Goal{Met: true}, ""}, // no limit: no verdict
		{Goal{HasLimit: true, Met: true}, "yes"},
		{Goal{HasLimit: true}, "**no**"},
	} {
		if got := mark(tc.g); got != tc.want {
			t.Errorf("mark(%+v) = %q, want %q", tc.g, got, tc.want)
		}
	}
}

func TestSyncRunDerive(t *testing.T) {
	r := SyncRun{N: 10000, Concurrency: 32, RunSec: 8, Requests: map[string]int64{opHeadObject: 10000},
		WorkerCPUSec: 1, ProxyCPUSec: 0.5, S3CPUSec: 2, PGCPUSec: 0.5}
	r.derive(20*time.Millisecond, 4)
	want := SyncRun{IdealSec: 6.25, VsIdeal: 1.28, HeadsPerSec: 1250, CPUMsPerHead: 0.4, MachineCapRate: 10000, DemandRate: 1600}
	for name, pair := range map[string][2]float64{
		"IdealSec": {r.IdealSec, want.IdealSec}, "VsIdeal": {r.VsIdeal, want.VsIdeal}, "HeadsPerSec": {r.HeadsPerSec, want.HeadsPerSec},
		"CPUMsPerHead": {r.CPUMsPerHead, want.CPUMsPerHead}, "MachineCapRate": {r.MachineCapRate, want.MachineCapRate}, "DemandRate": {r.DemandRate, want.DemandRate},
	} {
		if !near(pair[0], pair[1]) {
			t.Errorf("%s = %v, want %v", name, pair[0], pair[1])
		}
	}
	// L = 0 (the memory item) and no HEAD: no ideal, no rates, no division by zero.
	z := SyncRun{N: 100, Concurrency: 32, RunSec: 1}
	z.derive(0, 4)
	if z.IdealSec != 0 || z.VsIdeal != 0 || z.DemandRate != 0 || z.CPUMsPerHead != 0 || z.MachineCapRate != 0 || z.HeadsPerSec != 0 {
		t.Errorf("derive at L=0, no HEADs: %+v", z)
	}
}

func TestMedianRunAndC1(t *testing.T) {
	tries := []SyncRun{{ID: "a", N: 10000, RunSec: 9}, {ID: "b", N: 10000, RunSec: 7}, {ID: "c", N: 10000, RunSec: 8}}
	r := medianRun(tries)
	if r.ID != "c" || !reflect.DeepEqual(r.Repeats, []float64{7, 8, 9}) {
		t.Errorf("medianRun = %s %v, want c [7 8 9]", r.ID, r.Repeats)
	}
	if tries[0].ID != "a" || tries[0].Repeats != nil {
		t.Errorf("medianRun changed its input: %+v", tries)
	}
	if one := medianRun(tries[:1]); one.ID != "a" || one.Repeats != nil {
		t.Errorf("medianRun of one = %s %v", one.ID, one.Repeats)
	}
	// An even count reports the upper middle.
	if r := medianRun(tries[:2]); r.ID != "a" {
		t.Errorf("medianRun of two = %s, want a (9 s)", r.ID)
	}
	r.setC1(0.02, true)
	if !near(r.C1Sec, 200) || !near(r.SpeedupVsC1, 25) || !r.C1Extrapolated {
		t.Errorf("setC1: %v s, %v×, %v", r.C1Sec, r.SpeedupVsC1, r.C1Extrapolated)
	}
}

func TestCheckTimes(t *testing.T) {
	w := Workload{TickSec: 1, MaxBackoffSec: 8, TTLSec: 45}
	inf := math.Inf(1)
	for _, tc := range []struct {
		name    string
		t       float64
		arrives bool
		end     float64
		want    []float64
	}{
		{"arrives: one HEAD at the next boundary", 0.5, true, inf, []float64{1}},
		{"on a boundary: checked at it", 3, true, inf, []float64{3}},
		{"missing: doubling backoff, capped, until older than the TTL", 0.5, false, inf, []float64{1, 2, 4, 8, 16, 24, 32, 40, 48}},
		{"checks at or after end are not made", 0.5, false, 8, []float64{1, 2, 4}},
		{"created after end", 9.5, true, 8, nil},
	} {
		if got := checkTimes(tc.t, tc.arrives, w, tc.end); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: checkTimes = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Backoffs of whole ticks land on their boundary (not one tick late).
	w5 := Workload{TickSec: 5, MaxBackoffSec: 300, TTLSec: 86400}
	got := checkTimes(0, false, w5, 400)
	if want := []float64{0, 5, 15, 35, 75, 155, 315}; !reflect.DeepEqual(got, want) {
		t.Errorf("checkTimes at a 5 s tick = %v, want %v", got, want)
	}
}

func TestBillFinish(t *testing.T) {
	b := Bill{ClassAPerDay: 1e6, ClassBPerDay: 1e6}
	b.finish()
	if want := 30 * (4.50 + 0.36); !near(b.USDPerMonth, want) {
		t.Errorf("USDPerMonth = %v, want %v", b.USDPerMonth, want)
	}
}

func TestDayBill(t *testing.T) {
	// No uploads: the original lists every tick, ours only in orphan scans.
	w := Workload{Objects: 2500, Replicas: 3, TickSec: 10, MaxBackoffSec: 300, TTLSec: 3600, OrphanScanSec: 3600}
	orig, x3, ours, _ := dayBill(w)
	if orig.ClassAPerDay != 8640*3 || x3.ClassAPerDay != 3*8640*3 || ours.ClassAPerDay != 24*3 || ours.ClassBPerDay != 24 {
		t.Errorf("idle day: original A %v, ×3 A %v, ours A %v B %v", orig.ClassAPerDay, x3.ClassAPerDay, ours.ClassAPerDay, ours.ClassBPerDay)
	}
	if !near(orig.USDPerMonth, 30*8640*3*4.50/1e6) {
		t.Errorf("original $/month = %v", orig.USDPerMonth)
	}

	// The day of BENCHMARKS.md.
	res := newBillResult(Workload{Objects: 1_000_000, UploadsPerHour: 1000, NeverArrive: 0.01, Replicas: 3,
		TickSec: 5, MaxBackoffSec: 300, TTLSec: 86400, OrphanScanSec: 3600})
	// 0, 5, 15, 35, 75, 155, 315, then every 300 s to the first check at 86,400 s or later.
	if want := len(checkTimes(0, false, res.Day, math.Inf(1))); res.ChecksMissing != want || want != 7+287 {
		t.Errorf("ChecksMissing = %d (checkTimes %d), want 294", res.ChecksMissing, want)
	}
	sum := 0.0
	for _, v := range res.Ours.Breakdown {
		sum += v
	}
	if !near(sum, res.Ours.ClassAPerDay+res.Ours.ClassBPerDay) {
		t.Errorf("breakdown %v adds up to %v, not A+B %v", res.Ours.Breakdown, sum, res.Ours.ClassAPerDay+res.Ours.ClassBPerDay)
	}
	if arriving := res.Ours.Breakdown["HeadObject (arriving uploads, 1 each)"]; !near(arriving, 24000*0.99) {
		t.Errorf("arriving HEADs = %v, want 23760", arriving)
	}
	if res.DueTickShare <= 0 || res.DueTickShare > 1 {
		t.Errorf("DueTickShare = %v", res.DueTickShare)
	}
	if !near(res.ClassARatio, 17280*1000/(24*1000.0)) || res.ClassARatio < 100 {
		t.Errorf("ClassARatio = %v, want 720", res.ClassARatio)
	}
}

func TestClassTotals(t *testing.T) {
	a, b := classTotals(map[string]int64{opList: 2, opPutObject: 3, opHeadObject: 10, opHeadBucket: 1, opDelete: 7, opOther: 9})
	if a != 5 || b != 11 {
		t.Errorf("classTotals = %d, %d, want 5, 11", a, b)
	}
}

func TestScaledModel(t *testing.T) {
	s := ScaledOurs{Workload: Workload{TickSec: 1, MaxBackoffSec: 8, TTLSec: 45},
		Requests: map[string]int64{opHeadBucket: 3, opList: 3, opHeadObject: 6}}
	s.model([]scaledRun{
		{job: "sync-uploads", worker: "r1", started: 1, due: 2},
		{job: "sync-uploads", worker: "r1", started: 2},
		{job: "scan-orphans", worker: "r2", started: 3, listed: 2001},
		{job: "sync-uploads", worker: "r2", started: 4, due: 1},
		{job: "scan-orphans", worker: "r2", started: 5}, // an empty bucket still costs a page
	}, []scaledUpload{{created: 0.5, arrives: true}, {created: 0.5}})
	if s.SyncRuns != 3 || s.SyncRunsDue != 2 || s.ScanRuns != 2 {
		t.Errorf("runs: %d sync (%d due), %d scans", s.SyncRuns, s.SyncRunsDue, s.ScanRuns)
	}
	sort.Strings(s.Leaders)
	if want := []string{"scan-orphans=r2", "sync-uploads=r1", "sync-uploads=r2"}; !reflect.DeepEqual(s.Leaders, want) {
		t.Errorf("Leaders = %v", s.Leaders)
	}
	// HEADs before the last sync run started (4 s): the arriving upload at 1, the missing
	// one at 1, 2 and 4.
	if want := map[string]int64{opHeadBucket: 4, opList: 4, opHeadObject: 4}; !reflect.DeepEqual(s.Model, want) {
		t.Errorf("Model = %v, want %v", s.Model, want)
	}
	if s.ClassAModel != 4 || s.ClassBModel != 8 || s.ClassAMeasured != 3 || s.ClassBMeasured != 9 {
		t.Errorf("class totals: model A %d B %d, measured A %d B %d", s.ClassAModel, s.ClassBModel, s.ClassAMeasured, s.ClassBMeasured)
	}
}

func TestGCWindow(t *testing.T) {
	for _, tc := range []struct{ last, now, want float64 }{
		{100, 150, 220},   // the next one is ahead
		{100, 219.6, 340}, // less than half a second ahead: the one after
		{100, 500, 580},
	} {
		if got := nextGC(tc.last, tc.now, 120); got != tc.want {
			t.Errorf("nextGC(%v, %v) = %v, want %v", tc.last, tc.now, got, tc.want)
		}
	}
	if got := windowEnd(1000, 240, 120); got != 1240 {
		t.Errorf("windowEnd(span 240) = %v", got)
	}
	if got := windowEnd(1000, 241, 120); got != 1360 {
		t.Errorf("windowEnd(span 241) = %v", got)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_memstats_alloc_bytes_total Total bytes allocated.
# TYPE go_memstats_alloc_bytes_total counter
go_memstats_alloc_bytes_total 1.5e+06
go_memstats_mallocs_total 4242
go_memstats_last_gc_time_seconds 1.7000000005e+09
go_memstats_alloc_bytes 99
`
	got, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if want := (metricsSample{alloc: 1.5e6, mallocs: 4242, lastGC: 1.7000000005e9}); got != want {
		t.Errorf("parseMetrics = %+v, want %+v", got, want)
	}
}

func TestTakeoverSummarize(t *testing.T) {
	s := TakeoverScenario{BoundSec: 2, MaxSec: 99}
	s.summarize([]float64{1, 3, 2})
	if s.MedianSec != 2 || s.MaxSec != 3 || s.MaxVsBound != 1.5 {
		t.Errorf("summarize: median %v, max %v, max/bound %v", s.MedianSec, s.MaxSec, s.MaxVsBound)
	}
}

func TestRequestDelta(t *testing.T) {
	d, total := requestDelta(map[string]int64{opHeadObject: 2000, opList: 5},
		map[string]int64{opHeadObject: 2003, opList: 5, opHeadBucket: 4})
	if want := map[string]int64{opHeadObject: 3, opHeadBucket: 4}; !reflect.DeepEqual(d, want) || total != 7 {
		t.Errorf("requestDelta = %v, %d", d, total)
	}
	if got := perTick(10, 30, 2); got != 10.0/15 {
		t.Errorf("perTick = %v", got)
	}
}

func TestProcParsing(t *testing.T) {
	c := parseCPULine("cpu  100 0 50 800 50 10 20 5 0 0")
	if want := (cpuTimes{busy: 1.85, irq: 0.3, steal: 0.05, total: 10.35}); !near(c.busy, want.busy) || !near(c.irq, want.irq) || !near(c.steal, want.steal) || !near(c.total, want.total) {
		t.Errorf("parseCPULine = %+v, want %+v", c, want)
	}
	if z := parseCPULine(""); z != (cpuTimes{}) {
		t.Errorf("parseCPULine(\"\") = %+v", z)
	}
	if got := busyFraction(cpuTimes{busy: 1, total: 4}, cpuTimes{busy: 2, total: 8}); got != 0.25 {
		t.Errorf("busyFraction = %v", got)
	}
	if got := busyFraction(cpuTimes{total: 4}, cpuTimes{total: 4}); got != 0 {
		t.Errorf("busyFraction with no time passed = %v", got)
	}
	// A command name with ") " in it; utime 200, stime 100, cutime 50, cstime 25 ticks.
	stat := "1234 (bg) worker) S 1 2 3 4 5 6 7 8 9 10 200 100 50 25 20 0"
	if got := parseProcStat(stat, false); got != 3*time.Second {
		t.Errorf("parseProcStat = %v, want 3s", got)
	}
	if got := parseProcStat(stat, true); got != 3750*time.Millisecond {
		t.Errorf("parseProcStat with children = %v, want 3.75s", got)
	}
	if got := parseProcStat("1234 (short) S 1 2", false); got != 0 {
		t.Errorf("parseProcStat of a short line = %v", got)
	}
}

func TestShownTotal(t *testing.T) {
	out := "File: bg-bench\nType: cpu\nShowing nodes accounting for 1.23s, 45.6% of 2.70s total\n      flat  flat%\n"
	if got, err := shownTotal(out); err != nil || !near(got, 1.23) {
		t.Errorf("shownTotal = %v, %v", got, err)
	}
	if got, err := shownTotal("Showing nodes accounting for 250ms, 100% of 250ms total"); err != nil || !near(got, 0.25) {
		t.Errorf("shownTotal(ms) = %v, %v", got, err)
	}
	if got, err := shownTotal("no samples"); err != nil || got != 0 {
		t.Errorf("shownTotal without the line = %v, %v", got, err)
	}
	if _, err := shownTotal("Showing nodes accounting for lots, 1%"); err == nil {
		t.Error("shownTotal accepted a bad duration")
	}
}

func TestClassifyS3(t *testing.T) {
	for _, tc := range []struct{ method, target, want string }{
		{"GET", "/b?list-type=2&prefix=u", opList},
		{"GET", "/b/u/001/0000001", opGetObject},
		{"GET", "/b", opOther},
		{"HEAD", "/b/u/001/0000001", opHeadObject},
		{"HEAD", "/b", opHeadBucket},
		{"HEAD", "/b/", opHeadBucket},
		{"PUT", "/b/key", opPutObject},
		{"PUT", "/b", opCreateBucket},
		{"POST", "/b?delete", opDelete},
		{"POST", "/b/key?uploads", opOther},
		{"DELETE", "/b/key", opDelete},
	} {
		if got := classifyS3(httptest.NewRequest(tc.method, tc.target, nil)); got != tc.want {
			t.Errorf("%s %s = %q, want %q", tc.method, tc.target, got, tc.want)
		}
	}
}

func TestParseInts(t *testing.T) {
	got, err := parseInts(" 1k, 10k,,250 ")
	if err != nil || !reflect.DeepEqual(got, []int{1000, 10000, 250}) {
		t.Errorf("parseInts = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "-1", "x", "1m"} {
		if _, err := parseInts(bad); err == nil {
			t.Errorf("parseInts(%q) accepted", bad)
		}
	}
}

func TestAppPlanFill(t *testing.T) {
	var p AppPlan
	p.fill([]string{
		"Limit (actual time=0.01..0.50 rows=1000 loops=1)",
		"  ->  Index Scan using uploads_pending_idx on uploads u (actual time=0.01..0.40 rows=1000 loops=1)",
		"        ->  Seq Scan on media_files m (actual time=0.01..0.40 rows=5 loops=1)",
		"  ->  Seq Scan on upload_checks c (actual time=0.01..0.02 rows=0 loops=1)",
		"Execution Time: 12.345 ms",
	})
	want := []string{"Index Scan using uploads_pending_idx on uploads u", "Seq Scan on media_files m"}
	if !reflect.DeepEqual(p.Scans, want) || p.ExecMs != 12.345 {
		t.Errorf("fill: scans %q, %v ms", p.Scans, p.ExecMs)
	}
	res := AppDBResult{Plans: []AppPlan{{Variant: "with", Query: "due page", Scans: want}}}
	if !res.planSeqScans("with", "due page") || res.planSeqScans("without", "due page") {
		t.Error("planSeqScans")
	}
	if got := scanSummary(&res, "with", "due page"); got != strings.Join(want, "; ") {
		t.Errorf("scanSummary = %q", got)
	}
	if got := scanSummary(&res, "default", "due page"); got != "–" {
		t.Errorf("scanSummary of a missing plan = %q", got)
	}
	if got := checkWord("ok: index in place"); got != "ok:" {
		t.Errorf("checkWord = %q", got)
	}
}

func TestCPUHeadSummarize(t *testing.T) {
	run := func(heads int64, cpu float64) SyncRun {
		return SyncRun{WorkerCPUSec: cpu, Requests: map[string]int64{opHeadObject: heads}}
	}
	res := CPUHeadResult{N: 10000, Concurrency: 32,
		Auto:    []SyncRun{run(10000, 2), run(10000, 2.5), run(10000, 4)}, // 5000, 4000, 2500 HEADs per CPU-s
		Control: []SyncRun{run(10000, 2), run(10000, 2.2), run(10000, 0)}} // 5000, 4545, 0
	res.summarize()
	if res.AutoHeadsPerCPUSec != 4000 || !near(res.ControlHeadsPerCPUSec, 10000/2.2) || !near(res.Ratio, 10000/2.2/4000) {
		t.Errorf("summarize: auto %v, control %v, ratio %v", res.AutoHeadsPerCPUSec, res.ControlHeadsPerCPUSec, res.Ratio)
	}
	if g := res.goal(); g.Met || !g.HasLimit { // 1.14 > 1.1
		t.Errorf("goal at ratio %.3f: met %v", res.Ratio, g.Met)
	}
	res.Control = res.Auto
	res.summarize()
	if g := res.goal(); !g.Met || res.Ratio != 1 {
		t.Errorf("goal at ratio %v: met %v", res.Ratio, g.Met)
	}
	res.Auto = []SyncRun{run(10, 0)}
	res.summarize()
	if g := res.goal(); g.Met || res.Ratio != 0 {
		t.Errorf("no auto rate: ratio %v, met %v", res.Ratio, g.Met)
	}
}

// TestEvaluate checks the summary's verdicts at and around each limit.
func TestEvaluate(t *testing.T) {
	goal := func(r *Results, item, measurePrefix string) Goal {
		t.Helper()
		r.evaluate()
		for _, g := range r.Goals {
			if g.Item == item && strings.HasPrefix(g.Measure, measurePrefix) {
				return g
			}
		}
		t.Fatalf("no goal %s %q in %+v", item, measurePrefix, r.Goals)
		return Goal{}
	}
	headline := func(runSec float64, statements int) *ThroughputResult {
		r := SyncRun{N: 10000, Concurrency: 32, RunSec: runSec, Statements: statements,
			StatementKinds: map[string]int{"UploadsDuePage": statements - 1, "lock:try": 1}, Stats: map[string]int64{"checked": 10000}}
		r.derive(20*time.Millisecond, 1)
		return &ThroughputResult{Runs: []SyncRun{r}}
	}
	for _, tc := range []struct {
		name          string
		r             *Results
		item, measure string
		met           bool
		ratio         float64
	}{
		{"throughput at 1.25× ideal", &Results{Throughput: headline(7.8125, 50)}, "1 throughput", "sync-uploads run", true, 1.25},
		{"throughput over", &Results{Throughput: headline(8, 50)}, "1 throughput", "sync-uploads run", false, 1.28},
		{"statements at the limit", &Results{Throughput: headline(7, 101)}, "3 database", "SQL statements", true, 1},
		{"statements over", &Results{Throughput: headline(7, 102)}, "3 database", "SQL statements", false, 1.01},
		{"memory under 1.5×", &Results{Memory: &MemoryResult{Runs: []SyncRun{{N: 1000, MaxRSSMB: 20}, {N: 100000, MaxRSSMB: 29}}, Ratio: 1.45}}, "2 memory", "peak RSS", true, 1.45},
		{"memory at 1.5×", &Results{Memory: &MemoryResult{Runs: []SyncRun{{N: 1000, MaxRSSMB: 20}, {N: 100000, MaxRSSMB: 30}}, Ratio: 1.5}}, "2 memory", "peak RSS", false, 1.5},
		{"bill", &Results{Bill: newBillResult(Workload{Objects: 1_000_000, UploadsPerHour: 1000, NeverArrive: 0.01, Replicas: 3, TickSec: 5, MaxBackoffSec: 300, TTLSec: 86400, OrphanScanSec: 3600})}, "4 R2 bill", "Class A", true, 720},
		{"idle standby at 2 statements", &Results{Idle: &IdleResult{Replicas: []IdleReplica{{Holder: true, StatementsPerTick: 9}, {StatementsPerTick: 2}, {StatementsPerTick: 1}}}}, "5 idle", "statements per tick, non-holder", true, 1},
		{"idle standby over", &Results{Idle: &IdleResult{Replicas: []IdleReplica{{Holder: true}, {StatementsPerTick: 2.5}}}}, "5 idle", "statements per tick, non-holder", false, 1.25},
		{"takeover within bound", &Results{Takeovers: []*TakeoverResult{{Scenarios: []TakeoverScenario{{Name: faultKill, MaxVsBound: 1}}}}}, "6 takeover", faultKill, true, 1},
		{"takeover with an overlap", &Results{Takeovers: []*TakeoverResult{{Scenarios: []TakeoverScenario{{Name: faultKill, MaxVsBound: 0.5, OverlapRuns: 1}}}}}, "6 takeover", faultKill, false, 0.5},
		{"takeover with late writes", &Results{Takeovers: []*TakeoverResult{{Scenarios: []TakeoverScenario{{Name: faultStop, MaxVsBound: 0.5, LateWrites: 1}}}}}, "6 takeover", faultStop, false, 0.5},
		{"outage at 5 per tick", &Results{Outage: &OutageResult{Runs: []OutageRun{{PerTick: 5}}}}, "outage", "S3 requests", true, 1},
		{"outage over", &Results{Outage: &OutageResult{Runs: []OutageRun{{PerTick: 6}}}}, "outage", "S3 requests", false, 1.2},
	} {
		g := goal(tc.r, tc.item, tc.measure)
		if g.Met != tc.met || !g.HasLimit || !near(g.Ratio, tc.ratio) {
			t.Errorf("%s: met %v ratio %v (has limit %v), want met %v ratio %v", tc.name, g.Met, g.Ratio, g.HasLimit, tc.met, tc.ratio)
		}
	}
}
