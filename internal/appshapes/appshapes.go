// Package appshapes describes uploads tables as real application frameworks create them,
// with the UPLOADS_* variables that map each one and the SQL an application would use to
// write and read its rows.
//
// Both the tests (through internal/testenv, which adds databases and roles around them)
// and bg-demo's --app-table flag use these shapes. It is a package of its own, with no
// dependency on "testing", so that the demo binary can carry the shapes without carrying
// the test helpers.
package appshapes

import (
	"fmt"
	"slices"
	"strings"
)

// Shape is an uploads table as an application framework creates it, and the UPLOADS_*
// variables that map it.
type Shape struct {
	Name  string
	About string            // one line for people: which framework, what is unusual
	Setup string            // the application's own DDL, run as the database owner before migrate
	Env   map[string]string // the mapping
	Table string            // qualified, quoted

	// KeyColumn and StatusColumn are quoted identifiers, for the queries below.
	KeyColumn, StatusColumn string

	// Insert inserts one PENDING row for key created age ago and returns its id as text.
	Insert string // $1 key, $2 age
	// InsertMany inserts PENDING rows, one per key, created at the matching time, as one
	// statement: an application's bulk import, and the demo's seed.
	InsertMany string // $1 keys (text[]), $2 created at (timestamptz[])
	// Read returns (status::text, size::text, etag, content_type, verified::text,
	// untouched::text) for key $1; columns a shape does not map read as NULL.
	Read                      string
	Pending, Uploaded, Failed string
	Untouched                 string // a column the worker never sets, as Read's last column has it ("" when Read's last column is NULL)
}

// CountSQL returns (status as text, row count) per status, ordered by status text.
func (s Shape) CountSQL() string {
	return fmt.Sprintf(`SELECT %s::text, count(*) FROM %s GROUP BY 1 ORDER BY 1`, s.StatusColumn, s.Table)
}

// StatusOfSQL returns (key as text, status as text) of the rows whose key is in $1 (text[]).
func (s Shape) StatusOfSQL() string {
	return fmt.Sprintf(`SELECT %[1]s::text, %[2]s::text FROM %[3]s WHERE %[1]s = ANY($1::text[])`, s.KeyColumn, s.StatusColumn, s.Table)
}

// RelationsSQL lists every relation (table, view, index, sequence, ...) outside the
// worker's schema (bg_worker) and the system schemas, one text per relation, sorted:
// schema.name:kind, then :owner when withOwner. Taken before migrate and after the
// replicas ran, it shows that the worker added nothing on the application's side.
func RelationsSQL(withOwner bool) string {
	owner := ""
	if withOwner {
		owner = " || ':' || pg_get_userbyid(c.relowner)"
	}
	return `SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text` + owner + `
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'bg_worker') AND n.nspname NOT LIKE 'pg_toast%'
		ORDER BY 1`
}

// EnvList is the mapping as NAME=value entries, sorted by name, for a process environment.
func (s Shape) EnvList() []string {
	out := make([]string, 0, len(s.Env))
	for k, v := range s.Env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// Default is the table `bg-worker migrate` creates when no UPLOADS_* variable is set
// (public.uploads). It is not in All: its Setup is empty because migrate is what creates
// it, and it has no column the worker never sets, so Untouched is empty.
var Default = Shape{
	Name:         "default",
	About:        "public.uploads as bg-worker migrate creates it (no UPLOADS_* variables)",
	Table:        `public.uploads`,
	KeyColumn:    `object_key`,
	StatusColumn: `status`,
	Insert:       `INSERT INTO public.uploads (object_key, created_at) VALUES ($1, now() - $2::interval) RETURNING id::text`,
	InsertMany: `INSERT INTO public.uploads (object_key, created_at, updated_at)
			SELECT k, c, c FROM unnest($1::text[], $2::timestamptz[]) AS t(k, c)`,
	Read: `SELECT status, size_bytes::text, etag, content_type, verified_at::text, NULL::text
			FROM public.uploads WHERE object_key = $1`,
	Pending: "PENDING", Uploaded: "UPLOADED", Failed: "FAILED",
}

// All are the application shapes the tests run against and bg-demo --app-table offers.
var All = []Shape{
	{
		// Prisma: quoted PascalCase table, camelCase columns, a text (cuid) id, a
		// PostgreSQL enum status, timestamp(3) without time zone (UTC by Prisma's
		// convention), @updatedAt without a default, and a NOT NULL relation column.
		Name:  "prisma",
		About: `Prisma's "Upload": quoted camelCase columns, a text (cuid) id, an enum status, timestamp(3) without time zone`,
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
		Table:        `public."Upload"`,
		KeyColumn:    `"objectKey"`,
		StatusColumn: `"status"`,
		Insert: `INSERT INTO public."Upload" ("id", "objectKey", "userId", "createdAt", "updatedAt")
			VALUES ('c' || md5($1), $1, 'user-1', (now() AT TIME ZONE 'UTC') - $2::interval, now() AT TIME ZONE 'UTC') RETURNING "id"`,
		InsertMany: `INSERT INTO public."Upload" ("id", "objectKey", "userId", "createdAt", "updatedAt")
			SELECT 'c' || md5(k), k, 'user-1', c AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
			FROM unnest($1::text[], $2::timestamptz[]) AS t(k, c)`,
		Read: `SELECT "status"::text, "sizeBytes"::text, NULL::text, NULL::text, NULL::text, "userId"
			FROM public."Upload" WHERE "objectKey" = $1`,
		Pending: "PENDING", Uploaded: "UPLOADED", Failed: "FAILED", Untouched: "user-1",
	},
	{
		// Rails/Django style in a schema of its own: snake_case, a uuid id, a varchar
		// status with lowercase values and a CHECK, its own column names for everything.
		Name:  "snake-uuid",
		About: "Rails/Django-style media.media_files: snake_case, a uuid id, a varchar state pending/ready/error",
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
		Table:        `media.media_files`,
		KeyColumn:    `storage_key`,
		StatusColumn: `state`,
		Insert:       `INSERT INTO media.media_files (storage_key, inserted_at) VALUES ($1, now() - $2::interval) RETURNING id::text`,
		InsertMany: `INSERT INTO media.media_files (storage_key, inserted_at)
			SELECT k, c FROM unnest($1::text[], $2::timestamptz[]) AS t(k, c)`,
		Read: `SELECT state::text, byte_size::text, etag::text, mime, checked_at::text, album_id::text
			FROM media.media_files WHERE storage_key = $1`,
		Pending: "pending", Uploaded: "ready", Failed: "error", Untouched: "7",
	},
	{
		// An application that already has public.uploads of another shape: bigint id,
		// its own status words, and NOT NULL columns the worker never sets.
		Name:  "existing-uploads",
		About: "an application's own public.uploads of another shape: a path key, text status queued/stored/lost, NOT NULL columns the worker never sets",
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
		Table:        `public.uploads`,
		KeyColumn:    `path`,
		StatusColumn: `status`,
		Insert:       `INSERT INTO public.uploads (path, owner_id, bucket, created) VALUES ($1, 42, 'media', now() - $2::interval) RETURNING id::text`,
		InsertMany: `INSERT INTO public.uploads (path, owner_id, bucket, created)
			SELECT k, 42, 'media', c FROM unnest($1::text[], $2::timestamptz[]) AS t(k, c)`,
		Read: `SELECT status, NULL::text, NULL::text, NULL::text, NULL::text, owner_id::text || '/' || bucket
			FROM public.uploads WHERE path = $1`,
		Pending: "queued", Uploaded: "stored", Failed: "lost", Untouched: "42/media",
	},
}

// Names lists the names of All, in order.
func Names() []string {
	names := make([]string, len(All))
	for i, s := range All {
		names[i] = s.Name
	}
	return names
}

// Lookup finds a shape of All by name.
func Lookup(name string) (Shape, bool) {
	for _, s := range All {
		if strings.EqualFold(s.Name, name) {
			return s, true
		}
	}
	return Shape{}, false
}
