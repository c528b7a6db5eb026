package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
	"github.com/bg-worker/bg-worker/migrations"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// Ten migrators start at the same moment on an empty database: all succeed, each
// migration is applied exactly once, and the schema ends current.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	url := testenv.EmptyDatabaseURL(t)
	ctx := context.Background()
	const n = 10
	var wg sync.WaitGroup
	start := make(chan struct{})
	applied := make([][]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var res migrations.Result
			res, errs[i] = store.Migrate(ctx, url, migrations.DefaultOptions())
			applied[i] = res.Applied
		}()
	}
	close(start)
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		total += len(applied[i])
	}
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if total != len(all) {
		t.Errorf("applied %d migrations in total across %d migrators, want %d (each exactly once)", total, n, len(all))
	}
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, latest, err := st.SchemaVersion(ctx)
	if err != nil || got != latest || latest == 0 {
		t.Errorf("SchemaVersion = %d, %d, %v", got, latest, err)
	}
	// A second round applies nothing.
	again, err := store.Migrate(ctx, url, migrations.DefaultOptions())
	if err != nil || len(again.Applied) != 0 || again.MappingInstalled || again.CreatedSchema || again.CreatedTable {
		t.Errorf("second migrate did something: %+v, %v", again, err)
	}
}

func TestSchemaVersionOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.EmptyDatabaseURL(t), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, latest, err := st.SchemaVersion(ctx)
	if err != nil || got != 0 || latest < 1 {
		t.Errorf("SchemaVersion = %d, %d, %v; want 0, ≥1, nil", got, latest, err)
	}
}

// holdLock takes advisory lock (0x62677772, key) on a connection of its own, held until
// the test ends.
func holdLock(t *testing.T, url string, key int32) store.LockRef {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	ref := store.LockRef{Namespace: migrations.LockNamespace, Key: key}
	if err := conn.QueryRow(context.Background(), `SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock($1, $2)) l`,
		ref.Namespace, ref.Key).Scan(&ref.PID); err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestClaimTickOncePerWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A long window, so all claims below fall in the same one.
	const interval = time.Hour
	// Claims count only while the claiming session holds the job's lock.
	held := holdLock(t, url, 7)
	other := holdLock(t, url, 8)
	if _, err := st.ClaimTick(ctx, "j", interval, "w1", store.StatusRunning, store.LockRef{Namespace: held.Namespace, Key: held.Key, PID: held.PID + 1}); !errors.Is(err, store.ErrTickClaimed) {
		t.Fatalf("claim by a session that holds nothing: %v, want ErrTickClaimed", err)
	}
	if _, err := st.ClaimTick(ctx, "j", interval, "w1", store.StatusRunning, store.LockRef{Namespace: held.Namespace, Key: other.Key, PID: held.PID}); !errors.Is(err, store.ErrTickClaimed) {
		t.Fatalf("claim under another job's lock: %v, want ErrTickClaimed", err)
	}
	first, err := st.ClaimTick(ctx, "j", interval, "w1", store.StatusRunning, held)
	if err != nil {
		t.Fatal(err)
	}
	if first.TickAt.UnixMilli()%interval.Milliseconds() != 0 {
		t.Errorf("tick_at %s is not a window start", first.TickAt)
	}
	for _, w := range []string{"w1", "w2"} {
		if _, err := st.ClaimTick(ctx, "j", interval, w, store.StatusRunning, held); !errors.Is(err, store.ErrTickClaimed) {
			t.Errorf("second claim by %s: %v, want ErrTickClaimed", w, err)
		}
	}
	// Manual runs are outside the window claim; another job has its own windows.
	if _, err := st.StartManualRun(ctx, "j", "w2", 0, "req"); err != nil {
		t.Errorf("manual run: %v", err)
	}
	if _, err := st.ClaimTick(ctx, "other", interval, "w2", store.StatusRunning, other); err != nil {
		t.Errorf("other job: %v", err)
	}
	// A finished run cannot be re-finished; an abandoned run stays abandoned.
	if ok, err := st.AbandonRun(ctx, first.RunID, "test"); !ok || err != nil {
		t.Fatalf("abandon: %v %v", ok, err)
	}
	if ok, err := st.FinishRun(ctx, first.RunID, store.StatusSucceeded, "", nil); ok || err != nil {
		t.Errorf("FinishRun on an abandoned run = %v, %v; want false, nil", ok, err)
	}
	r, err := st.GetRun(ctx, first.RunID)
	if err != nil || r.Status != store.StatusAbandoned {
		t.Errorf("run = %+v, %v", r, err)
	}
	if _, err := st.GetRun(ctx, 1<<40); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun(missing) = %v, want ErrNotFound", err)
	}
}

// Errors from a bad DATABASE_URL or a failed connect never carry the password, even where
// pgx's own error would: each case first proves that pgx, asked directly, puts the
// password in its error (its message, or the connection string its error value keeps),
// then that the store's error, and everything it wraps, does not.
func TestConnectErrorsHidePassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const pw = "hunter2-Secret"

	// The live test server, for errors that only its answer produces.
	live, err := pgx.ParseConfig(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	kv := func(k, v string) string {
		return k + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
	}
	liveKV := strings.Join([]string{kv("host", live.Host), kv("port", fmt.Sprint(live.Port)), kv("user", live.User),
		kv("password", live.Password), kv("dbname", live.Database), kv("sslmode", "disable")}, " ")

	cases := []struct {
		name, url string
		// connect: the error comes from connecting (store.Migrate connects at once);
		// otherwise from parsing (store.Open and store.ParseConfig).
		connect bool
	}{
		// pgx's best-effort redaction misses "password = value" (legal in keyword/value
		// form), so its parse error echoes the password verbatim.
		{name: "keyword/value with spaces around =", url: "host=127.0.0.1 port=notaport user=u password = " + pw},
		// pgx redacts its message here, but its *pgconn.ParseConfigError keeps the raw
		// string in ConnString, where anything that unwraps the error finds it.
		{name: "URL with a bad port", url: "postgres://u:" + pw + "@127.0.0.1:notaport/db"},
		{name: "URL with a bad sslmode", url: "postgres://u:" + pw + "@127.0.0.1:5432/db?sslmode=bogus"},
		// A URL pasted after keyword/value settings parses as an unknown run-time
		// parameter named after the URL; the server's refusal quotes that name, password
		// included, and pgx's connect error passes it on.
		{name: "server error quoting the connection string", url: liveKV + " postgres://u:" + pw + "@db.example/app?x=1", connect: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Precondition: unredacted, this error would carry the password.
			var raw error
			if tc.connect {
				conn, err := pgx.Connect(ctx, tc.url)
				if err == nil {
					_ = conn.Close(ctx)
				}
				raw = err
			} else {
				_, raw = pgx.ParseConfig(tc.url)
			}
			if raw == nil || len(passwordIn(raw, pw)) == 0 {
				t.Fatalf("pgx's own error %v does not carry the password: the case no longer exercises redaction", raw)
			}

			var errs []error
			if tc.connect {
				_, err := store.Migrate(ctx, tc.url, migrations.DefaultOptions())
				errs = append(errs, err)
			} else {
				_, err := store.ParseConfig(tc.url, "t")
				errs = append(errs, err)
				st, err := store.Open(ctx, tc.url, store.Options{})
				if err == nil {
					st.Close()
				}
				errs = append(errs, err)
			}
			for _, err := range errs {
				if err == nil {
					t.Errorf("no error; want one (pgx says %v)", raw)
					continue
				}
				if where := passwordIn(err, pw); len(where) > 0 {
					t.Errorf("password in the store's error (%s): %v", strings.Join(where, ", "), err)
				}
			}
		})
	}
}

// passwordIn says where in err's tree pw appears: a message, or the connection string a
// *pgconn.ParseConfigError keeps.
func passwordIn(err error, pw string) []string {
	var found []string
	var walk func(e error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if strings.Contains(e.Error(), pw) {
			found = append(found, fmt.Sprintf("message of %T", e))
		}
		if pe, ok := e.(*pgconn.ParseConfigError); ok && strings.Contains(pe.ConnString, pw) {
			found = append(found, "ParseConfigError.ConnString")
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		}
	}
	walk(err)
	return found
}

// The generated code is current (sqlc diff passes), and the check catches staleness: in
// a copy of the sqlc inputs with one query changed, sqlc diff fails.
func TestSQLCGeneratedCodeIsCurrent(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	sqlc := filepath.Join(root, ".bin", "sqlc")
	if _, err := os.Stat(sqlc); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("sqlc not built (%v): run `make tools`", err)
		}
		t.Skipf("sqlc not built (%v): run `make tools`", err)
	}
	diff := exec.Command(sqlc, "diff")
	diff.Dir = root
	if out, err := diff.CombinedOutput(); err != nil {
		t.Fatalf("generated code is stale; run `make generate`:\n%s", out)
	}

	tmp := t.TempDir()
	for _, p := range []string{"sqlc.yaml", "migrations", "queries", "internal/store/dbsqlc"} {
		cp := exec.Command("cp", "-r", filepath.Join(root, p), filepath.Join(tmp, p))
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tmp, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := cp.CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v %s", p, err, out)
		}
	}
	q := filepath.Join(tmp, "queries", "job_runs.sql")
	b, err := os.ReadFile(q)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, []byte("\n-- name: JobRunCount :one\nSELECT count(*) FROM job_runs;\n")...)
	if err := os.WriteFile(q, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stale := exec.Command(sqlc, "diff")
	stale.Dir = tmp
	if out, err := stale.CombinedOutput(); err == nil {
		t.Fatalf("sqlc diff passed on stale generated code:\n%s", out)
	}
}

func repoRoot(t *testing.T) string { return testenv.RepoRoot(t) }
