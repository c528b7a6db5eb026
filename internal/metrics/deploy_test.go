package metrics_test

// The Grafana dashboard (deploy/grafana) and the Prometheus rules (deploy/prometheus)
// against the registry: every metric they name exists, the dashboard shows every
// bgworker_* metric, runbook links point at README sections, and (with promtool) every
// dashboard expression parses and every alert's unit tests fail when its rule is broken.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

func repoRoot(t *testing.T) string { return testenv.RepoRoot(t) }

func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// --- the dashboard -------------------------------------------------------------------------

type dashPanel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *dashDS     `json:"datasource"`
	Targets    []dashQuery `json:"targets"`
	Panels     []dashPanel `json:"panels"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
}

type dashDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashQuery struct {
	RefID      string  `json:"refId"`
	Expr       string  `json:"expr"`
	Datasource *dashDS `json:"datasource"`
}

type dashboard struct {
	Title      string      `json:"title"`
	UID        string      `json:"uid"`
	Panels     []dashPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(readFile(t, "deploy/grafana/bg-worker.json")))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deploy/grafana/bg-worker.json: %v", err)
	}
	return d
}

func (d dashboard) allPanels() []dashPanel {
	var out []dashPanel
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// exprs returns the dashboard's PromQL by panel title, and its variables' metric queries.
func (d dashboard) exprs() map[string][]string {
	out := map[string][]string{}
	for _, p := range d.allPanels() {
		for _, q := range p.Targets {
			out[p.Title] = append(out[p.Title], q.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out["variable "+v.Name] = append(out["variable "+v.Name], v.Definition)
		}
	}
	return out
}

// grafanaVars are Grafana's variables as they might appear in an expression, replaced by
// plain PromQL (for parsing with promtool).
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", `=~"$job"`, `=~".*"`)

// TestDashboardShape: the panels the dashboard promises, unique ids, every query on the
// data source variable (so an import asks for a Prometheus and nothing is hard-wired).
func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard without uid or title")
	}
	ids := map[int]string{}
	titles := map[string]bool{}
	for _, p := range d.allPanels() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		titles[p.Title] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" || q.RefID == "" {
				t.Errorf("panel %q: a query without expr or refId", p.Title)
			}
			if q.Datasource != nil && q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: query datasource %+v, want ${datasource}", p.Title, q.Datasource)
			}
		}
	}
	for _, want := range []string{"Runs by outcome", "Run duration quantiles", "Leader per job", "Skipped ticks",
		"Uploads checked by result", "Bucket requests", "Bucket error ratio", "HEADs in flight", "Last success age", "Uploads backlog"} {
		if !titles[want] {
			t.Errorf("dashboard lacks the panel %q", want)
		}
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && strings.Contains(string(v.Query), "prometheus") {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("dashboard lacks the Prometheus data source variable")
	}
}

// --- the rules --------------------------------------------------------------------------

type alertRule struct {
	Name      string
	Expr      string
	exprLines [2]int // [first, end) lines of alerts.yml holding the expression
}

// parseAlerts reads alerts.yml's alerting rules: `- alert: NAME` and its `expr:`, a
// single line or a `|` block. The format is the repository's own; anything else fails.
func parseAlerts(t *testing.T, text string) []alertRule {
	t.Helper()
	lines := strings.Split(text, "\n")
	alertRe := regexp.MustCompile(`^\s*- alert:\s*(\S+)\s*$`)
	exprRe := regexp.MustCompile(`^(\s*)expr:\s*(.*)$`)
	var out []alertRule
	for i := 0; i < len(lines); i++ {
		if m := alertRe.FindStringSubmatch(lines[i]); m != nil {
			out = append(out, alertRule{Name: m[1]})
			continue
		}
		m := exprRe.FindStringSubmatch(lines[i])
		if m == nil || len(out) == 0 {
			continue
		}
		r := &out[len(out)-1]
		if r.Expr != "" {
			t.Fatalf("alerts.yml:%d: second expr for %s", i+1, r.Name)
		}
		if v := strings.TrimSpace(m[2]); v != "|" && v != "|-" && v != ">" && v != ">-" {
			r.Expr, r.exprLines = strings.Trim(v, `'"`), [2]int{i, i + 1}
			continue
		}
		indent := len(m[1])
		j := i + 1
		var block []string
		for ; j < len(lines); j++ {
			l := lines[j]
			if strings.TrimSpace(l) != "" && len(l)-len(strings.TrimLeft(l, " ")) <= indent {
				break
			}
			block = append(block, strings.TrimSpace(l))
		}
		r.Expr, r.exprLines = strings.TrimSpace(strings.Join(block, "\n")), [2]int{i, j}
		i = j - 1
	}
	for _, r := range out {
		if r.Expr == "" {
			t.Fatalf("alerts.yml: alert %s has no expr", r.Name)
		}
	}
	if len(out) == 0 {
		t.Fatal("alerts.yml: no alerting rule found")
	}
	return out
}

// --- metric names in PromQL ----------------------------------------------------------------

var (
	promStrings   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promLabelList = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promGrafana   = regexp.MustCompile(`\$\{?\w+\}?`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords  = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true, "atan2": true}
	labelValuesRe = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
)

// metricNames returns the metric names a PromQL expression selects: identifiers that are
// not keywords, function calls, label names or inside strings.
func metricNames(expr string) []string {
	if m := labelValuesRe.FindStringSubmatch(expr); m != nil { // a Grafana variable query
		return []string{m[1]}
	}
	s := promStrings.ReplaceAllString(expr, " ")
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRanges.ReplaceAllString(s, " ")
	s = promLabelList.ReplaceAllString(s, " ")
	s = promGrafana.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if promKeywords[strings.ToLower(id)] {
			continue
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // a number's exponent or a duration unit (1e3, 5m)
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function call
		}
		out = append(out, id)
	}
	return out
}

func TestMetricNamesInPromQL(t *testing.T) {
	got := metricNames(`histogram_quantile(0.9, sum by (job, le) (rate(bgworker_run_duration_seconds_bucket{job=~"$job", x="go_nope"}[$__rate_interval]))) / on (job) group_left (worker_id) max by (job) (bgworker_leader) > 1e3 unless up offset 5m and bool vector(1)`)
	want := []string{"bgworker_run_duration_seconds_bucket", "bgworker_leader", "up"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("metricNames = %v, want %v", got, want)
	}
	if got := metricNames(`label_values(bgworker_job_interval_seconds, job)`); len(got) != 1 || got[0] != "bgworker_job_interval_seconds" {
		t.Errorf("metricNames(label_values) = %v", got)
	}
}

// sampleNames are the series names a registry exposes: a family's name, plus _bucket,
// _sum and _count for histograms and _sum and _count for summaries.
func sampleNames(fams map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for name, mf := range fams {
		out[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = true, true
		}
	}
	return out
}

// TestDeployMetricsExist: every metric the dashboard, the alert rules and the alerts' unit
// test inputs name exists in the registry (populated, with a real database behind the
// database-backed gauges); the dashboard shows every bgworker_* metric.
func TestDeployMetricsExist(t *testing.T) {
	m := populated(t)
	fams := families(t, m.Registry)
	have := sampleNames(fams)

	used := map[string][]string{} // metric → where
	for title, exprs := range loadDashboard(t).exprs() {
		for _, e := range exprs {
			for _, n := range metricNames(e) {
				used[n] = append(used[n], "dashboard panel "+title)
			}
		}
	}
	dashboardUses := map[string]bool{}
	for n := range used {
		dashboardUses[n] = true
	}
	rules := parseAlerts(t, readFile(t, "deploy/prometheus/alerts.yml"))
	for _, r := range rules {
		for _, n := range metricNames(r.Expr) {
			used[n] = append(used[n], "alert "+r.Name)
		}
	}
	seriesRe := regexp.MustCompile(`(?m)^\s*- series:\s*'([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, m := range seriesRe.FindAllStringSubmatch(readFile(t, "deploy/prometheus/alerts_test.yml"), -1) {
		used[m[1]] = append(used[m[1]], "alerts_test.yml input series")
	}
	if len(used) < 10 {
		t.Fatalf("found only %d metric names in the dashboard and rules: %v", len(used), used)
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !have[n] {
			t.Errorf("%s (used by %s) is not a metric of the registry", n, strings.Join(used[n], ", "))
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "bgworker_") && !dashboardUses[name] && !dashboardUses[name+"_bucket"] {
			t.Errorf("the dashboard shows no panel of %s", name)
		}
	}
}

// TestRunbookLinks: each alert's runbook_url points at a section of the README.
func TestRunbookLinks(t *testing.T) {
	readme := readFile(t, "README.md")
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} (.+)$`).FindAllStringSubmatch(readme, -1) {
		anchors[githubAnchor(m[1])] = true
	}
	alerts := readFile(t, "deploy/prometheus/alerts.yml")
	links := regexp.MustCompile(`runbook_url:\s*\S+README\.md#(\S+)`).FindAllStringSubmatch(alerts, -1)
	if n := len(parseAlerts(t, alerts)); len(links) != n {
		t.Errorf("%d runbook_url links for %d alerts", len(links), n)
	}
	for _, l := range links {
		if !anchors[l[1]] {
			t.Errorf("runbook_url #%s names no README section", l[1])
		}
	}
	for _, want := range []string{"for:", "severity:", "summary:", "description:"} {
		if n := strings.Count(alerts, want); n < len(links) {
			t.Errorf("%d alerts but %d %q", len(links), n, want)
		}
	}
}

// githubAnchor is the id GitHub gives a heading.
func githubAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ' || r == '-':
			b.WriteRune('-')
		case r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// --- with promtool ----------------------------------------------------------------------

// promtool returns the promtool to use: $PROMTOOL (make test-alerts sets it; then it must
// work), else one on PATH, else the test is skipped (make test runs it through
// test-alerts).
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("PROMTOOL=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	t.Skip("no promtool (set PROMTOOL; make test-alerts builds and sets it)")
	return ""
}

// TestDashboardExpressionsParse hands every dashboard expression to promtool as a
// recording rule (Grafana's variables replaced): promtool check rules parses each.
func TestDashboardExpressionsParse(t *testing.T) {
	pt := promtool(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for title, exprs := range loadDashboard(t).exprs() {
		for _, e := range exprs {
			if strings.HasPrefix(e, "label_values(") {
				continue
			}
			n++
			q, _ := json.Marshal(grafanaVars.Replace(e)) // a JSON string is a YAML string
			b.WriteString("      - record: dashboard:panel_" + strings.Repeat("x", n) + "\n")
			b.WriteString("        expr: " + string(q) + "\n")
			_ = title
		}
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pt, "check", "rules", f).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules on the dashboard's %d expressions: %v\n%s\n%s", n, err, out, b.String())
	}
}

// TestAlertTestsCatchBrokenRules: promtool test rules passes on alerts.yml, and fails for
// every alert whose rule is broken either way: never firing, or firing always.
func TestAlertTestsCatchBrokenRules(t *testing.T) {
	pt := promtool(t)
	root := repoRoot(t)
	src := readFile(t, "deploy/prometheus/alerts.yml")
	tests := readFile(t, "deploy/prometheus/alerts_test.yml")
	run := func(rules string) ([]byte, error) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "alerts_test.yml"), []byte(tests), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pt, "test", "rules", "alerts_test.yml")
		cmd.Dir = dir
		return cmd.CombinedOutput()
	}
	if out, err := exec.Command(pt, "check", "rules", filepath.Join(root, "deploy/prometheus/alerts.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if out, err := run(src); err != nil {
		t.Fatalf("promtool test rules on the unchanged rules: %v\n%s", err, out)
	}
	lines := strings.Split(src, "\n")
	for _, r := range parseAlerts(t, src) {
		if !strings.Contains(tests, "alertname: "+r.Name+"\n") {
			t.Errorf("alerts_test.yml does not test %s", r.Name)
			continue
		}
		for _, broken := range []struct{ how, expr string }{
			{"never fires", "vector(1) > 2"},
			{"always fires", "vector(1)"},
		} {
			mut := append(append(append([]string{}, lines[:r.exprLines[0]]...),
				strings.Repeat(" ", 8)+"expr: "+broken.expr), lines[r.exprLines[1]:]...)
			out, err := run(strings.Join(mut, "\n"))
			if err == nil {
				t.Errorf("%s %s: promtool test rules still passes; its unit tests miss it", r.Name, broken.how)
			} else if !strings.Contains(string(out), r.Name) {
				t.Errorf("%s %s: promtool test rules fails without naming it:\n%s", r.Name, broken.how, out)
			}
		}
	}
}
