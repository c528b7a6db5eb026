package testenv

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Application databases: uploads tables as real frameworks create them, each in a fresh
// database with the two roles README's "Least privilege" describes.

// AppShape is an uploads table as an application framework creates it, and the
// UPLOADS_* variables that map it.
type AppShape struct {
	Name  string
	Setup string            // the application's own DDL, run as the database owner
	Env   map[string]string // the mapping
	Table string            // qualified, quoted
	// Insert inserts one PENDING row for key created age ago and returns its id as text.
	Insert string // $1 key, $2 age
	// Read returns (status::text, size::text, etag, content_type, verified::text,
	// untouched::text) for key $1; columns a shape does not map read as NULL.
	Read                      string
	Pending, Uploaded, Failed string
	Untouched                 string // a column the worker never sets, as read's last column has it
}

// AppShapes are the shapes the tests run against.
var AppShapes = []AppShape{
	{
		// Prisma: quoted PascalCase table, camelCase columns, a text (cuid) id, a
		// PostgreSQL enum status, timestamp(3) without time zone, @updatedAt without a
		// default, and a NOT NULL relation column.
		Name: "prisma",
		Setup: `CREATE TYPE "UploadStatus" AS ENUM ('PENDING', 'UPLOADED', 'FAILED', 'DELETED');
			CREATE TABLE "Upload" (
				"id" TEXT NOT NULL,
				"objectKey" TEXT NOT NULL,
				"status" "UploadStatus" NOT NULL DEFAULT 'PENDING',
				"sizeBytes" INTEGER,
				"userId" TEXT NOT NULL,
				"createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
				"updatedAt" TIMESTAMP(3) NOT NULL,
				CONSTRAINT "Upload_pkey" PRIMARY KEY ("id"));
			CREATE UNIQUE INDEX "Upload_objectKey_key" ON "Upload"("objectKey");`,
		Env: map[string]string{"UPLOADS_TABLE": "Upload", "UPLOADS_KEY_COLUMN": "objectKey",
			"UPLOADS_CREATED_AT_COLUMN": "createdAt", "UPLOADS_SIZE_COLUMN": "sizeBytes", "UPLOADS_UPDATED_AT_COLUMN": "updatedAt"},
		Table: `public."Upload"`,
		Insert: `INSERT INTO public."Upload" ("id", "objectKey", "userId", "createdAt", "updatedAt")
			VALUES ('c' || md5($1), $1, 'user-1', (now() AT TIME ZONE 'UTC') - $2::interval, now() AT TIME ZONE 'UTC') RETURNING "id"`,
		Read: `SELECT "status"::text, "sizeBytes"::text, NULL::text, NULL::text, NULL::text, "userId"
			FROM public."Upload" WHERE "objectKey" = $1`,
		Pending: "PENDING", Uploaded: "UPLOADED", Failed: "FAILED", Untouched: "user-1",
	},
	{
		// Rails/Django style in a schema of its own: snake_case, a uuid id, a varchar
		// status with lowercase values and a CHECK, its own column names for everything.
		Name: "snake-uuid",
		Setup: `CREATE SCHEMA media;
			CREATE TABLE media.media_files (
				id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
				storage_key varchar(1024) NOT NULL UNIQUE,
				state       varchar(16) NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'ready', 'error')),
				byte_size   bigint,
				etag        varchar(80),
				mime        text,
				checked_at  timestamptz,
				inserted_at timestamptz NOT NULL DEFAULT now(),
				album_id    bigint NOT NULL DEFAULT 7);`,
		Env: map[string]string{"UPLOADS_TABLE": "media.media_files", "UPLOADS_KEY_COLUMN": "storage_key",
			"UPLOADS_STATUS_COLUMN": "state", "UPLOADS_STATUS_PENDING": "pending", "UPLOADS_STATUS_UPLOADED": "ready",
			"UPLOADS_STATUS_FAILED": "error", "UPLOADS_CREATED_AT_COLUMN": "inserted_at", "UPLOADS_SIZE_COLUMN": "byte_size",
			"UPLOADS_ETAG_COLUMN": "etag", "UPLOADS_CONTENT_TYPE_COLUMN": "mime", "UPLOADS_VERIFIED_AT_COLUMN": "checked_at"},
		Table:  `media.media_files`,
		Insert: `INSERT INTO media.media_files (storage_key, inserted_at) VALUES ($1, now() - $2::interval) RETURNING id::text`,
		Read: `SELECT state::text, byte_size::text, etag::text, mime, checked_at::text, album_id::text
			FROM media.media_files WHERE storage_key = $1`,
		Pending: "pending", Uploaded: "ready", Failed: "error", Untouched: "7",
	},
	{
		// An application that already has public.uploads of another shape: bigint id,
		// its own status words, and NOT NULL columns the worker never sets.
		Name: "existing-uploads",
		Setup: `CREATE TABLE public.uploads (
				id         bigserial PRIMARY KEY,
				path       text NOT NULL UNIQUE,
				status     text NOT NULL DEFAULT 'queued',
				owner_id   bigint NOT NULL,
				bucket     text NOT NULL,
				created    timestamptz NOT NULL DEFAULT now());
			CREATE INDEX uploads_queued_idx ON public.uploads (id) WHERE status = 'queued';`,
		Env: map[string]string{"UPLOADS_TABLE": "uploads", "UPLOADS_KEY_COLUMN": "path",
			"UPLOADS_STATUS_PENDING": "queued", "UPLOADS_STATUS_UPLOADED": "stored", "UPLOADS_STATUS_FAILED": "lost",
			"UPLOADS_CREATED_AT_COLUMN": "created"},
		Table:  `public.uploads`,
		Insert: `INSERT INTO public.uploads (path, owner_id, bucket, created) VALUES ($1, 42, 'media', now() - $2::interval) RETURNING id::text`,
		Read: `SELECT status, NULL::text, NULL::text, NULL::text, NULL::text, owner_id::text || '/' || bucket
			FROM public.uploads WHERE path = $1`,
		Pending: "queued", Uploaded: "stored", Failed: "lost", Untouched: "42/media",
	},
}

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
	rows, err := d.Admin.Query(ctx, `SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || pg_get_userbyid(c.relowner)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'bg_worker') AND n.nspname NOT LIKE 'pg_toast%'
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
