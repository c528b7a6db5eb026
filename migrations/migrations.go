// Package migrations holds the worker's schema as plain SQL files (also sqlc's schema
// source) and applies them in the worker's own schema (DATABASE_SCHEMA). Apply is safe to
// run from many replicas at once: it serialises on a session advisory lock and applies
// each file in its own transaction.
package migrations

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/uploadmap"
)

//go:embed *.sql
var files embed.FS

// LockNamespace is the first key of every advisory lock bg-worker takes
// (pg_locks.classid). It spells "bgwr".
const LockNamespace int32 = 0x62677772

// lockKey is the second key of the migration lock; job keys are never 0.
const lockKey int32 = 0

// Migration is one SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// All returns the embedded migrations in version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		prefix, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		v, err := strconv.Atoi(prefix)
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Latest is the highest embedded version.
func Latest() int {
	all, err := All()
	if err != nil || len(all) == 0 {
		return 0
	}
	return all[len(all)-1].Version
}

// Querier is the part of pgx that Current needs (a conn, pool or tx).
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Current returns the highest applied version in the session's schema (its search_path),
// 0 when none is.
func Current(ctx context.Context, q Querier) (int, error) {
	var v int
	err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // no table / no schema yet
			return 0, nil
		}
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// Options says where Apply puts the worker's objects and which uploads table they map.
type Options struct {
	// Schema is the worker's own schema (DATABASE_SCHEMA); created when missing.
	Schema string
	// Uploads is the application's uploads table. With the default mapping, Apply creates
	// public.uploads when it does not exist (app/default_uploads.sql).
	Uploads config.UploadsMapping
}

// Result says what Apply did.
type Result struct {
	Applied       []string // numbered migrations applied, by file name
	CreatedSchema bool
	CreatedTable  bool // the default public.uploads
	// MappingInstalled is true when the mapping's objects were (re)created.
	MappingInstalled bool
	Mapping          *uploadmap.Resolved
}

//go:embed app/default_uploads.sql
var defaultUploadsSQL string

// Apply brings the database to the current schema: the worker's schema and every
// numbered migration in it, the default uploads table when the default mapping is used
// and the table is missing, and the uploads mapping's objects (uploadmap) when the
// mapping differs from the recorded one. It touches nothing outside the worker's schema
// but that default table. A mapping that does not match the catalog is reported as
// errors.Join of *config.Error before anything is created (the default table aside).
//
// Concurrent callers wait on an advisory lock, so exactly one applies each step and the
// others find it done. On a current database Apply only reads, so a role without CREATE
// can run it. The session's search_path is left set to the schema.
func Apply(ctx context.Context, conn *pgx.Conn, opts Options) (Result, error) {
	var res Result
	if opts.Schema == "" {
		opts.Schema = config.DefaultSchema
	}
	all, err := All()
	if err != nil {
		return res, err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, LockNamespace, lockKey); err != nil {
		return res, fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		// A fresh context: the caller's may be cancelled, and the lock must not outlive us.
		// If the connection is broken the server has dropped the lock already.
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, LockNamespace, lockKey)
	}()
	schema := pgx.Identifier{opts.Schema}.Sanitize()
	// The rendering's type names depend on the search path: the worker's sessions use
	// the same one (store.ParseConfig).
	if _, err := conn.Exec(ctx, "SET search_path = "+schema); err != nil {
		return res, fmt.Errorf("set search_path: %w", err)
	}

	if opts.Uploads.IsDefault() {
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('public.uploads') IS NOT NULL`).Scan(&exists); err != nil {
			return res, fmt.Errorf("look up public.uploads: %w", err)
		}
		if !exists {
			if _, err := conn.Exec(ctx, defaultUploadsSQL); err != nil {
				return res, fmt.Errorf("create the default table public.uploads (with no UPLOADS_* set; migrate's role needs CREATE on schema public, or set UPLOADS_TABLE to map the application's table): %w", err)
			}
			res.CreatedTable = true
		}
	}
	mapping, err := uploadmap.Resolve(ctx, conn, opts.Uploads)
	if err != nil {
		return res, err
	}
	res.Mapping = mapping

	var schemaExists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)`, opts.Schema).Scan(&schemaExists); err != nil {
		return res, fmt.Errorf("look up schema %s: %w", opts.Schema, err)
	}
	if !schemaExists {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			return res, fmt.Errorf("create schema %s: %w", opts.Schema, err)
		}
		res.CreatedSchema = true
	}

	current, err := appliedVersions(ctx, conn)
	if err != nil {
		return res, err
	}
	for _, m := range all {
		if current[m.Version] {
			continue
		}
		if current == nil {
			if _, err := conn.Exec(ctx, `CREATE TABLE schema_migrations (
				version    integer     PRIMARY KEY,
				name       text        NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now()
			)`); err != nil {
				return res, fmt.Errorf("create schema_migrations: %w", err)
			}
			current = map[int]bool{}
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("apply %s: %w", m.Name, err)
		}
		res.Applied = append(res.Applied, m.Name)
	}

	res.MappingInstalled, err = installMapping(ctx, conn, mapping)
	return res, err
}

// appliedVersions reads schema_migrations; nil when the table does not exist yet.
func appliedVersions(ctx context.Context, conn *pgx.Conn) (map[int]bool, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up schema_migrations: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	done := map[int]bool{}
	for _, v := range versions {
		done[v] = true
	}
	return done, nil
}

// installMapping (re)creates the mapping's objects when the recorded fingerprint differs.
// When the table or its id column changed, the worker's per-upload state is about other
// rows and is dropped.
func installMapping(ctx context.Context, conn *pgx.Conn, r *uploadmap.Resolved) (bool, error) {
	old, err := InstalledMapping(ctx, conn)
	if err != nil {
		return false, err
	}
	want := r.Fingerprint()
	if old.Fingerprint == want {
		return false, nil
	}
	mapping, err := json.Marshal(r.Mapping)
	if err != nil {
		return false, err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, uploadmap.DropSQL); err != nil {
			return fmt.Errorf("drop the previous mapping's objects: %w", err)
		}
		if _, err := tx.Exec(ctx, r.Render()); err != nil {
			return fmt.Errorf("create the mapping's objects: %w", err)
		}
		if old.Fingerprint != "" && (old.Mapping.QualifiedTable() != r.Mapping.QualifiedTable() || old.Mapping.IDColumn != r.Mapping.IDColumn) {
			if _, err := tx.Exec(ctx, `DELETE FROM upload_checks`); err != nil {
				return fmt.Errorf("clear upload_checks: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO upload_mapping (table_name, id_column, mapping, fingerprint)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (singleton) DO UPDATE SET table_name = excluded.table_name, id_column = excluded.id_column,
				mapping = excluded.mapping, fingerprint = excluded.fingerprint, installed_at = now()`,
			r.Mapping.QualifiedTable(), r.Mapping.IDColumn, mapping, want)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("install uploads mapping %s: %w", r.Mapping.QualifiedTable(), err)
	}
	return true, nil
}

// Installed is the uploads mapping migrate installed.
type Installed struct {
	Fingerprint string // "" when none is installed (or nothing is migrated yet)
	Mapping     config.UploadsMapping
}

// InstalledMapping reads what migrate recorded in upload_mapping.
func InstalledMapping(ctx context.Context, q Querier) (Installed, error) {
	var in Installed
	var raw []byte
	err := q.QueryRow(ctx, `SELECT fingerprint, mapping FROM upload_mapping`).Scan(&in.Fingerprint, &raw)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows), errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000"):
		return Installed{}, nil
	case err != nil:
		return Installed{}, fmt.Errorf("read upload_mapping: %w", err)
	}
	if err := json.Unmarshal(raw, &in.Mapping); err != nil {
		return Installed{}, fmt.Errorf("read upload_mapping: %w", err)
	}
	return in, nil
}

// DefaultOptions is the default schema and the default uploads table.
func DefaultOptions() Options {
	return Options{Schema: config.DefaultSchema, Uploads: config.DefaultUploads()}
}
