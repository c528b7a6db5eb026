package testenv

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/appshapes"
)

// Application databases: uploads tables as real frameworks create them, each in a fresh
// database with the two roles README's "Least privilege" describes.

// AppShape is an uploads table as an application framework creates it, and the
// UPLOADS_* variables that map it. The shapes live in internal/appshapes so that bg-demo
// can use them without importing this package (and "testing" with it).
type AppShape = appshapes.Shape

// AppShapes are the shapes the tests run against.
var AppShapes = appshapes.All

// AppDB is an application's database with the worker's two least-privileged roles.
type AppDB struct {
	Admin                    *pgx.Conn // the database owner (superuser): the application's side
	AdminURL                 string
	MigrateURL               string // MigrateRole: CREATE on the database, SELECT on the table
	ReplicaURL               string // ReplicaRole: what GrantReplica adds, nothing else
	MigrateRole, ReplicaRole string
	Shape                    AppShape
}

func withUser(t testing.TB, raw, user string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

// NewAppDB creates the shape's table in a fresh database, and two roles, neither a
// superuser nor the owner of anything of the application's, with the grants README's
// "Least privilege" gives before the first migrate. The roles are dropped in t.Cleanup.
func NewAppDB(t testing.TB, ctx context.Context, s AppShape) *AppDB {
	t.Helper()
	adminURL := EmptyDatabaseURL(t)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	d := &AppDB{Admin: admin, AdminURL: adminURL, Shape: s}
	d.Exec(t, ctx, s.Setup)
	suffix := strings.ReplaceAll(fmt.Sprintf("%s_%s", s.Name, randomHex(4)), "-", "_")
	d.MigrateRole, d.ReplicaRole = "bgw_migrate_"+suffix, "bgw_replica_"+suffix
	for _, r := range []string{d.MigrateRole, d.ReplicaRole} {
		d.Exec(t, ctx, "CREATE ROLE "+pgx.Identifier{r}.Sanitize()+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
		role := r
		t.Cleanup(func() {
			// The database is dropped after this cleanup; the role's objects in it go first.
			_, _ = admin.Exec(context.Background(), "DROP OWNED BY "+pgx.Identifier{role}.Sanitize())
			_, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize())
		})
	}
	var dbname string
	if err := admin.QueryRow(ctx, `SELECT current_database()`).Scan(&dbname); err != nil {
		t.Fatal(err)
	}
	mig, repl := pgx.Identifier{d.MigrateRole}.Sanitize(), pgx.Identifier{d.ReplicaRole}.Sanitize()
	d.Exec(t, ctx, fmt.Sprintf("GRANT CREATE, CONNECT ON DATABASE %s TO %s", pgx.Identifier{dbname}.Sanitize(), mig))
	schema := strings.Split(s.Table, ".")[0]
	d.Exec(t, ctx, fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s, %s", schema, mig, repl))
	d.Exec(t, ctx, fmt.Sprintf("GRANT SELECT ON %s TO %s", s.Table, mig))
	d.Exec(t, ctx, fmt.Sprintf("ALTER DEFAULT PRIVILEGES FOR ROLE %s GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %s", mig, repl))
	d.MigrateURL = withUser(t, adminURL, d.MigrateRole)
	d.ReplicaURL = withUser(t, adminURL, d.ReplicaRole)
	return d
}

// Exec runs SQL as the database owner.
func (d *AppDB) Exec(t testing.TB, ctx context.Context, sql string, args ...any) {
	t.Helper()
	if _, err := d.Admin.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// GrantReplica gives the replica role the rest of README's grants after the first
// migrate: USAGE on the worker's schema and tableGrant (the mapping's GrantSQL).
func (d *AppDB) GrantReplica(t testing.TB, ctx context.Context, tableGrant string) {
	t.Helper()
	d.Exec(t, ctx, "GRANT USAGE ON SCHEMA bg_worker TO "+pgx.Identifier{d.ReplicaRole}.Sanitize())
	d.Exec(t, ctx, tableGrant)
}

// Insert inserts a PENDING row for key, created age ago, and returns its id as text.
func (d *AppDB) Insert(t testing.TB, ctx context.Context, key string, age time.Duration) string {
	t.Helper()
	var id string
	if err := d.Admin.QueryRow(ctx, d.Shape.Insert, key, age.String()).Scan(&id); err != nil {
		t.Fatalf("insert %q: %v", key, err)
	}
	return id
}

// AppRow is one row as the shape's Read query returns it (NULL: nil).
type AppRow struct{ Status, Size, ETag, ContentType, VerifiedAt, Untouched *string }

// Read reads the row of key.
func (d *AppDB) Read(t testing.TB, ctx context.Context, key string) AppRow {
	t.Helper()
	var r AppRow
	if err := d.Admin.QueryRow(ctx, d.Shape.Read, key).Scan(&r.Status, &r.Size, &r.ETag, &r.ContentType, &r.VerifiedAt, &r.Untouched); err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return r
}

// Str shows a nullable column.
func Str(p *string) string {
	if p == nil {
		return "NULL"
	}
	return *p
}

// Relations lists every relation outside the worker's schema, with its kind and owner.
func (d *AppDB) Relations(t testing.TB, ctx context.Context) []string {
	t.Helper()
	rows, err := d.Admin.Query(ctx, appshapes.RelationsSQL(true))
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
