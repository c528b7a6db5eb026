package deploy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section returns the README text from heading to the next heading of the same level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q section", heading)
	}
	rest := doc[i+len(heading)+2:]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

var (
	tableRow = regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\| ([^|]*) \\|")
	metricRe = regexp.MustCompile(`fqName: "([^"]+)"`)
)

// documentedDefault is how the README's table shows a variable's default.
func documentedDefault(name string, v reflect.Value) string {
	switch name {
	case "DATABASE_URL":
		return "required"
	case "WORKER_ID":
		return "`<hostname>-<pid>`"
	}
	switch x := v.Interface().(type) {
	case time.Duration:
		if strings.HasSuffix(name, "_MS") {
			return fmt.Sprintf("`%d`", x.Milliseconds())
		}
		s := x.String() // 24h0m0s → 24h, 5m0s → 5m
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return "`" + s + "`"
	case []string:
		if len(x) == 0 {
			return "all"
		}
	case map[string]time.Duration:
		if len(x) == 0 {
			return "–"
		}
	case string:
		if x == "" {
			return "–"
		}
		return "`" + x + "`"
	}
	return fmt.Sprintf("`%v`", v.Interface())
}

// fieldOf finds the Config field a variable sets: the one that changes when the variable
// is set to a valid value.
func fieldOf(t *testing.T, name string) (reflect.Value, bool) {
	t.Helper()
	def, err := config.Load(config.MapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"7h13m", "3ms", "250ms", "7", "true", "json", "debug", "http://zz.example", "postgres://zz@zz/zz", ":9999", "sync-uploads=7m", "https://zz@zz.example/1", "0 3 * * *", "zz"} {
		got, err := config.Load(config.MapEnv(map[string]string{name: v}))
		if err != nil {
			continue
		}
		dv, gv := reflect.ValueOf(def), reflect.ValueOf(got)
		var changed []int
		for i := range dv.NumField() {
			if dv.Type().Field(i).Name == "WorkerID" && name != "WORKER_ID" {
				continue // hostname-pid: the same in both loads anyway
			}
			if !reflect.DeepEqual(dv.Field(i).Interface(), gv.Field(i).Interface()) {
				changed = append(changed, i)
			}
		}
		if len(changed) == 1 {
			f := dv.Field(changed[0])
			if f.Kind() != reflect.Struct {
				return f, true
			}
			// A group of settings (the uploads mapping): the member now holding v.
			g := gv.Field(changed[0])
			for j := range g.NumField() {
				if g.Field(j).Kind() == reflect.String && g.Field(j).String() == v {
					return f.Field(j), true
				}
			}
		}
	}
	return reflect.Value{}, false
}

// TestReadmeConfiguration: the README's table names exactly the variables internal/config
// reads, with their real defaults.
func TestReadmeConfiguration(t *testing.T) {
	table := section(t, readme(t), "## Configuration")
	documented := map[string]string{}
	for _, m := range tableRow.FindAllStringSubmatch(table, -1) {
		documented[m[1]] = strings.TrimSpace(m[2])
	}
	for _, name := range configVars() {
		doc, ok := documented[name]
		if !ok {
			t.Errorf("README's configuration table lacks %s", name)
			continue
		}
		delete(documented, name)
		field, ok := fieldOf(t, name)
		if !ok {
			t.Errorf("%s: cannot tell which setting it is", name)
			continue
		}
		if want := documentedDefault(name, field); doc != want {
			t.Errorf("README says %s defaults to %s; internal/config: %s", name, doc, want)
		}
	}
	for name := range documented {
		t.Errorf("README documents %s, which internal/config does not read", name)
	}
}

// TestReadmeMetrics: every metric internal/metrics defines is in the README.
func TestReadmeMetrics(t *testing.T) {
	doc := section(t, readme(t), "## Health and metrics")
	m := metrics.New()
	v := reflect.ValueOf(m).Elem()
	n := 0
	for i := range v.NumField() {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Type().Field(i).Name == "Registry" {
			continue
		}
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			mm := metricRe.FindStringSubmatch(d.String())
			if mm == nil {
				t.Fatalf("cannot read a metric name from %s", d)
			}
			n++
			if !strings.Contains(doc, "`"+mm[1]+"`") {
				t.Errorf("README's metrics list lacks %s", mm[1])
			}
		}
	}
	if n < 5 {
		t.Fatalf("found only %d metrics in internal/metrics", n)
	}
}

// TestReadmeSQL runs every statement of the README's SQL blocks on a migrated database.
func TestReadmeSQL(t *testing.T) {
	doc := readme(t)
	blocks := regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) == 0 {
		t.Fatal("README has no SQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	n := 0
	for _, b := range blocks {
		var lines []string
		for _, l := range strings.Split(b[1], "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "--") {
				lines = append(lines, l)
			}
		}
		for _, stmt := range strings.Split(strings.Join(lines, "\n"), ";") {
			if stmt = strings.TrimSpace(stmt); stmt == "" {
				continue
			}
			n++
			rows, err := conn.Query(ctx, stmt)
			if err == nil {
				rows.Close()
				err = rows.Err()
			}
			if err != nil {
				t.Errorf("README SQL fails: %v\n%s", err, stmt)
			}
		}
	}
	if n < 5 {
		t.Errorf("only %d SQL statements found in the README", n)
	}
}
