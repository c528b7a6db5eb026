package appshapes_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/appshapes"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestShapesComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range append([]appshapes.Shape{appshapes.Default}, appshapes.All...) {
		if seen[s.Name] {
			t.Errorf("shape name %q twice", s.Name)
		}
		seen[s.Name] = true
		for field, v := range map[string]string{"About": s.About, "Table": s.Table, "KeyColumn": s.KeyColumn,
			"StatusColumn": s.StatusColumn, "Insert": s.Insert, "InsertMany": s.InsertMany, "Read": s.Read,
			"Pending": s.Pending, "Uploaded": s.Uploaded, "Failed": s.Failed} {
			if v == "" {
				t.Errorf("%s: %s is empty", s.Name, field)
			}
		}
		if s.Name != appshapes.Default.Name && (s.Setup == "" || s.Env["UPLOADS_TABLE"] == "" || s.Env["UPLOADS_KEY_COLUMN"] == "") {
			t.Errorf("%s: an application shape needs Setup, UPLOADS_TABLE and UPLOADS_KEY_COLUMN", s.Name)
		}
		if got, ok := appshapes.Lookup(s.Name); s.Name != appshapes.Default.Name && (!ok || got.Table != s.Table) {
			t.Errorf("Lookup(%q) = %v, %v", s.Name, got.Table, ok)
		}
	}
	if _, ok := appshapes.Lookup(appshapes.Default.Name); ok {
		t.Error("Default is in All: the tests would run it as an application table")
	}
	if len(appshapes.Default.EnvList()) != 0 || !slices.IsSorted(appshapes.All[1].EnvList()) {
		t.Errorf("EnvList: %v, %v", appshapes.Default.EnvList(), appshapes.All[1].EnvList())
	}
}

// Each shape's SQL against its own DDL: the bulk insert writes the same rows as the
// one-row insert (PENDING, the same creation time, Prisma's UTC wall clock included), and
// the demo's queries read them back in the shape's own status values.
func TestShapesSQL(t *testing.T) {
	t.Parallel()
	for _, s := range append([]appshapes.Shape{appshapes.Default}, appshapes.All...) {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			var url string
			if s.Setup == "" {
				url = testenv.DatabaseURL(t) // migrated: migrate is what creates the default table
			} else {
				url = testenv.EmptyDatabaseURL(t)
			}
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if s.Setup != "" {
				if _, err := conn.Exec(ctx, s.Setup); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			age := 25 * time.Hour
			if _, err := conn.Exec(ctx, s.Insert, "one/old.txt", age.String()); err != nil {
				t.Fatalf("insert: %v", err)
			}
			keys := []string{"many/old.txt", "many/ü ?#.txt", "many/new.txt"}
			now := time.Now()
			if _, err := conn.Exec(ctx, s.InsertMany, keys, []time.Time{now.Add(-age), now, now}); err != nil {
				t.Fatalf("insert many: %v", err)
			}

			created := "created_at"
			if c, ok := s.Env["UPLOADS_CREATED_AT_COLUMN"]; ok {
				created = pgx.Identifier{c}.Sanitize()
			}
			var apart float64
			if err := conn.QueryRow(ctx, `SELECT abs(extract(epoch FROM (SELECT `+created+` FROM `+s.Table+` WHERE `+s.KeyColumn+` = $1)
				- (SELECT `+created+` FROM `+s.Table+` WHERE `+s.KeyColumn+` = $2)))`, "one/old.txt", "many/old.txt").Scan(&apart); err != nil {
				t.Fatal(err)
			}
			if apart > 60 {
				t.Errorf("Insert and InsertMany wrote creation times %.0fs apart for the same age", apart)
			}

			rows, err := conn.Query(ctx, s.StatusOfSQL(), append(keys, "absent"))
			if err != nil {
				t.Fatal(err)
			}
			type kv struct{ k, v string }
			got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (kv, error) {
				var x kv
				return x, r.Scan(&x.k, &x.v)
			})
			if err != nil || len(got) != len(keys) {
				t.Fatalf("StatusOfSQL: %v, %v", got, err)
			}
			for _, x := range got {
				if x.v != s.Pending {
					t.Errorf("%q: status %q, want %q", x.k, x.v, s.Pending)
				}
			}
			var status string
			var n int64
			if err := conn.QueryRow(ctx, s.CountSQL()).Scan(&status, &n); err != nil || status != s.Pending || n != 4 {
				t.Errorf("CountSQL: %q %d %v, want %q 4", status, n, err, s.Pending)
			}
			var st, size, etag, ct, ver, untouched *string
			if err := conn.QueryRow(ctx, s.Read, keys[1]).Scan(&st, &size, &etag, &ct, &ver, &untouched); err != nil {
				t.Fatal(err)
			}
			if testenv.Str(st) != s.Pending || (s.Untouched != "" && testenv.Str(untouched) != s.Untouched) {
				t.Errorf("Read: status %s untouched %s", testenv.Str(st), testenv.Str(untouched))
			}
		})
	}
}
