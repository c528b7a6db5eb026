package uploadmap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/config"
)

// Querier is the part of pgx Resolve needs (a conn, pool or transaction).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Column is a mapped column as the catalog describes it.
type Column struct {
	Var  string // the UPLOADS_* variable that names it
	Name string // exact catalog name
	// Type is the type's name usable in a cast (regtype: schema-qualified when not on
	// the search path), without a type modifier; TypeMod is format_type's full spelling
	// (character varying(255)), used when a written value must fit.
	Type, TypeMod string
	// Base is the name of the base type (a domain's underlying type) in pg_catalog terms.
	Base string
	Enum bool
}

// Resolved is a mapping checked against the catalog: everything Render needs.
type Resolved struct {
	Mapping config.UploadsMapping
	// Columns by role; optional roles that are unmapped are absent.
	ID, Key, Status                    Column
	CreatedAt, Size, ETag, ContentType *Column
	VerifiedAt, UpdatedAt              *Column
}

// Table is the quoted, qualified table name.
func (r *Resolved) Table() string {
	return pgx.Identifier{r.Mapping.TableSchema, r.Mapping.Table}.Sanitize()
}

var (
	idTypes     = []string{"bigint", "integer", "smallint", "uuid", "text", "character varying"}
	textTypes   = []string{"text", "character varying"}
	timeTypes   = []string{"timestamp with time zone", "timestamp without time zone"}
	sizeTypes   = []string{"bigint", "integer", "numeric"}
	statusTypes = []string{"text", "character varying"} // or an enum
)

type catalogColumn struct {
	name, typ, typmod, base string
	enum                    bool
	enumOID                 uint32
	generated               bool
	maxLen                  int // varchar(n): n; else 0
}

// Resolve checks m against the catalog. Problems with the mapping come back as
// errors.Join of *config.Error (one per variable, naming what the database has
// instead); a failed query comes back as a plain error.
func Resolve(ctx context.Context, q Querier, m config.UploadsMapping) (*Resolved, error) {
	var relOID uint32
	var relkind string
	err := q.QueryRow(ctx, `SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, m.TableSchema, m.Table).Scan(&relOID, &relkind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &config.Error{Var: "UPLOADS_TABLE", Msg: fmt.Sprintf("no table %s in this database%s",
			m.QualifiedTable(), tablesHint(ctx, q, m.TableSchema))}
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", m.QualifiedTable(), err)
	}
	if relkind != "r" && relkind != "p" {
		return nil, &config.Error{Var: "UPLOADS_TABLE", Msg: fmt.Sprintf("%s is a %s, not a table", m.QualifiedTable(), relkindName(relkind))}
	}

	rows, err := q.Query(ctx, `SELECT a.attname::text, a.atttypid::regtype::text, format_type(a.atttypid, a.atttypmod),
			coalesce(nullif(t.typbasetype, 0), t.oid)::regtype::text,
			bt.typtype = 'e', bt.oid::int8, a.attgenerated <> '',
			CASE WHEN bt.oid = 'character varying'::regtype AND a.atttypmod > 4 THEN a.atttypmod - 4 ELSE 0 END
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
		JOIN pg_catalog.pg_type bt ON bt.oid = coalesce(nullif(t.typbasetype, 0), t.oid)
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, relOID)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", m.QualifiedTable(), err)
	}
	cols := map[string]catalogColumn{}
	var names []string
	for rows.Next() {
		var c catalogColumn
		var enumOID int64
		if err := rows.Scan(&c.name, &c.typ, &c.typmod, &c.base, &c.enum, &enumOID, &c.generated, &c.maxLen); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read columns of %s: %w", m.QualifiedTable(), err)
		}
		c.enumOID = uint32(enumOID)
		cols[c.name] = c
		names = append(names, c.name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", m.QualifiedTable(), err)
	}

	r := &Resolved{Mapping: m}
	var errs []error
	bad := func(v, format string, args ...any) {
		errs = append(errs, &config.Error{Var: v, Msg: fmt.Sprintf(format, args...)})
	}
	// column looks one role up; allowed lists base type names; written columns must not
	// be generated.
	column := func(v, name string, allowed []string, enumOK, written bool) (Column, bool) {
		c, ok := cols[name]
		if !ok {
			bad(v, "no column %q in %s (it has: %s)", name, m.QualifiedTable(), strings.Join(quoteAll(names), ", "))
			return Column{}, false
		}
		if !(enumOK && c.enum) && !slices.Contains(allowed, c.base) {
			want := strings.Join(allowed, ", ")
			if enumOK {
				want += " or an enum"
			}
			bad(v, "column %q of %s is %s; supported: %s", name, m.QualifiedTable(), c.typmod, want)
			return Column{}, false
		}
		if written && c.generated {
			bad(v, "column %q of %s is generated; the worker cannot write it", name, m.QualifiedTable())
			return Column{}, false
		}
		return Column{Var: v, Name: name, Type: c.typ, TypeMod: c.typmod, Base: c.base, Enum: c.enum}, true
	}
	optional := func(v, name string, allowed []string) *Column {
		if name == "" {
			return nil
		}
		if _, exists := cols[name]; !exists && !m.IsExplicit(v) {
			return nil // a default column this table does not have: not mapped
		}
		c, ok := column(v, name, allowed, false, v != "UPLOADS_CREATED_AT_COLUMN")
		if !ok {
			return nil
		}
		return &c
	}
	r.ID, _ = column("UPLOADS_ID_COLUMN", m.IDColumn, idTypes, false, false)
	r.Key, _ = column("UPLOADS_KEY_COLUMN", m.KeyColumn, textTypes, false, false)
	var statusOK bool
	r.Status, statusOK = column("UPLOADS_STATUS_COLUMN", m.StatusColumn, statusTypes, true, true)
	r.CreatedAt = optional("UPLOADS_CREATED_AT_COLUMN", m.CreatedAtColumn, timeTypes)
	r.Size = optional("UPLOADS_SIZE_COLUMN", m.SizeColumn, sizeTypes)
	r.ETag = optional("UPLOADS_ETAG_COLUMN", m.ETagColumn, textTypes)
	r.ContentType = optional("UPLOADS_CONTENT_TYPE_COLUMN", m.ContentTypeColumn, textTypes)
	r.VerifiedAt = optional("UPLOADS_VERIFIED_AT_COLUMN", m.VerifiedAtColumn, timeTypes)
	r.UpdatedAt = optional("UPLOADS_UPDATED_AT_COLUMN", m.UpdatedAtColumn, timeTypes)

	if statusOK {
		sc := cols[m.StatusColumn]
		values := []struct{ v, val string }{
			{"UPLOADS_STATUS_PENDING", m.StatusPending},
			{"UPLOADS_STATUS_UPLOADED", m.StatusUploaded},
			{"UPLOADS_STATUS_FAILED", m.StatusFailed},
		}
		if sc.enum {
			labels, err := enumLabels(ctx, q, sc.enumOID)
			if err != nil {
				return nil, err
			}
			for _, s := range values {
				if !slices.Contains(labels, s.val) {
					bad(s.v, "%q is not a value of %s (it has: %s)", s.val, sc.typ, strings.Join(quoteAll(labels), ", "))
				}
			}
		} else if sc.maxLen > 0 {
			for _, s := range values {
				if n := len([]rune(s.val)); n > sc.maxLen {
					bad(s.v, "%q is %d characters; column %q is %s", s.val, n, m.StatusColumn, sc.typmod)
				}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

func enumLabels(ctx context.Context, q Querier, oid uint32) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT enumlabel::text FROM pg_catalog.pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder`, oid)
	if err != nil {
		return nil, fmt.Errorf("read enum labels: %w", err)
	}
	labels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read enum labels: %w", err)
	}
	return labels, nil
}

// tablesHint names a few tables of schema, so a misspelt UPLOADS_TABLE shows the
// right spelling ("Upload" vs upload).
func tablesHint(ctx context.Context, q Querier, schema string) string {
	rows, err := q.Query(ctx, `SELECT c.relname::text FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname LIMIT 21`, schema)
	if err != nil {
		return ""
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return ""
	}
	switch {
	case len(names) == 0:
		return fmt.Sprintf(" (schema %q has no tables)", schema)
	case len(names) > 20:
		return fmt.Sprintf(" (tables in %q include: %s, …)", schema, strings.Join(quoteAll(names[:20]), ", "))
	}
	return fmt.Sprintf(" (tables in %q: %s)", schema, strings.Join(quoteAll(names), ", "))
}

func relkindName(k string) string {
	switch k {
	case "v":
		return "view"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	case "S":
		return "sequence"
	case "i", "I":
		return "index"
	}
	return "relation of kind " + k
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
