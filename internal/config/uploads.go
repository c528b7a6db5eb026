package config

import (
	"fmt"
	"strings"
)

// Default names of the worker's schema and of the application's uploads table.
const (
	DefaultSchema       = "bg_worker"
	DefaultUploadsTable = "uploads"
	DefaultTableSchema  = "public"
)

// UploadsMapping names the application's uploads table and the columns bg-worker reads
// and writes (the UPLOADS_* variables). Names are exact catalog names: case-sensitive,
// unquoted. An empty optional column is neither read nor written.
type UploadsMapping struct {
	TableSchema string // UPLOADS_TABLE's schema part; "public" when unqualified
	Table       string // UPLOADS_TABLE, default "uploads"

	IDColumn     string // UPLOADS_ID_COLUMN, default "id": bigint, integer, uuid, text or varchar
	KeyColumn    string // UPLOADS_KEY_COLUMN, default "object_key": text or varchar
	StatusColumn string // UPLOADS_STATUS_COLUMN, default "status": text, varchar or an enum

	StatusPending  string // UPLOADS_STATUS_PENDING, default "PENDING"
	StatusUploaded string // UPLOADS_STATUS_UPLOADED, default "UPLOADED"
	StatusFailed   string // UPLOADS_STATUS_FAILED, default "FAILED"

	// Optional columns. For the default table they default to its columns (a default
	// the table lacks is left unmapped, so an existing public.uploads of another shape
	// needs no ceremony); for any other table they are unmapped unless set.
	CreatedAtColumn   string // UPLOADS_CREATED_AT_COLUMN (read: a row's age for SYNC_PENDING_TTL)
	SizeColumn        string // UPLOADS_SIZE_COLUMN (written on UPLOADED)
	ETagColumn        string // UPLOADS_ETAG_COLUMN (written on UPLOADED)
	ContentTypeColumn string // UPLOADS_CONTENT_TYPE_COLUMN (written on UPLOADED)
	VerifiedAtColumn  string // UPLOADS_VERIFIED_AT_COLUMN (written on UPLOADED)
	UpdatedAtColumn   string // UPLOADS_UPDATED_AT_COLUMN (written on every status change)

	// Explicit lists the UPLOADS_* variables that were set: a column named explicitly
	// must exist, a default one may be absent.
	Explicit []string `json:",omitempty"`
}

// IsDefault reports the zero-config mapping: no UPLOADS_* variable set, so the table is
// public.uploads of the documented shape, which migrate creates when it does not exist.
func (m UploadsMapping) IsDefault() bool { return len(m.Explicit) == 0 }

// IsExplicit reports whether variable v was set.
func (m UploadsMapping) IsExplicit(v string) bool {
	for _, e := range m.Explicit {
		if e == v {
			return true
		}
	}
	return false
}

// UploadsVars lists every UPLOADS_* variable, in the order errors report them.
var UploadsVars = []string{
	"UPLOADS_TABLE", "UPLOADS_ID_COLUMN", "UPLOADS_KEY_COLUMN", "UPLOADS_STATUS_COLUMN",
	"UPLOADS_STATUS_PENDING", "UPLOADS_STATUS_UPLOADED", "UPLOADS_STATUS_FAILED",
	"UPLOADS_CREATED_AT_COLUMN", "UPLOADS_SIZE_COLUMN", "UPLOADS_ETAG_COLUMN",
	"UPLOADS_CONTENT_TYPE_COLUMN", "UPLOADS_VERIFIED_AT_COLUMN", "UPLOADS_UPDATED_AT_COLUMN",
}

// DefaultUploads is the mapping of the default table, public.uploads.
func DefaultUploads() UploadsMapping {
	return UploadsMapping{
		TableSchema: DefaultTableSchema, Table: DefaultUploadsTable,
		IDColumn: "id", KeyColumn: "object_key", StatusColumn: "status",
		StatusPending: "PENDING", StatusUploaded: "UPLOADED", StatusFailed: "FAILED",
		CreatedAtColumn: "created_at", SizeColumn: "size_bytes", ETagColumn: "etag",
		ContentTypeColumn: "content_type", VerifiedAtColumn: "verified_at", UpdatedAtColumn: "updated_at",
	}
}

// QualifiedTable is the table as UPLOADS_TABLE would name it: schema.table.
func (m UploadsMapping) QualifiedTable() string { return m.TableSchema + "." + m.Table }

// Column is one mapped column: the variable that names it and its name ("" = unmapped).
type Column struct {
	Var, Name string
}

// Columns returns every mapped role in UploadsVars order (table and status values
// excluded), unmapped optional ones with an empty Name.
func (m UploadsMapping) Columns() []Column {
	return []Column{
		{"UPLOADS_ID_COLUMN", m.IDColumn},
		{"UPLOADS_KEY_COLUMN", m.KeyColumn},
		{"UPLOADS_STATUS_COLUMN", m.StatusColumn},
		{"UPLOADS_CREATED_AT_COLUMN", m.CreatedAtColumn},
		{"UPLOADS_SIZE_COLUMN", m.SizeColumn},
		{"UPLOADS_ETAG_COLUMN", m.ETagColumn},
		{"UPLOADS_CONTENT_TYPE_COLUMN", m.ContentTypeColumn},
		{"UPLOADS_VERIFIED_AT_COLUMN", m.VerifiedAtColumn},
		{"UPLOADS_UPDATED_AT_COLUMN", m.UpdatedAtColumn},
	}
}

// loadUploads reads the UPLOADS_* variables and DATABASE_SCHEMA. Only the syntax is
// checked here; whether the names exist is a question for the database (internal/uploadmap).
func loadUploads(env LookupEnv, c *Config, bad func(name, format string, args ...any)) {
	c.Uploads = DefaultUploads()
	if v, ok := env.value("DATABASE_SCHEMA"); ok {
		c.DatabaseSchema = v
		switch {
		case len(c.DatabaseSchema) > 63:
			bad("DATABASE_SCHEMA", "%d bytes; PostgreSQL names are at most 63", len(c.DatabaseSchema))
		case strings.ContainsRune(c.DatabaseSchema, 0):
			bad("DATABASE_SCHEMA", "must not contain a NUL byte")
		case c.DatabaseSchema == "public" || c.DatabaseSchema == "information_schema" || strings.HasPrefix(c.DatabaseSchema, "pg_"):
			bad("DATABASE_SCHEMA", "%q is not a schema of the worker's own (use a dedicated one such as %s)", c.DatabaseSchema, DefaultSchema)
		}
	}

	for _, name := range UploadsVars {
		if _, ok := env.value(name); ok {
			c.Uploads.Explicit = append(c.Uploads.Explicit, name)
		}
	}
	if c.Uploads.IsDefault() {
		return
	}
	m := &c.Uploads
	if v, ok := env.value("UPLOADS_TABLE"); ok {
		schema, table, qualified := strings.Cut(v, ".")
		if !qualified {
			schema, table = DefaultTableSchema, v
		}
		switch {
		case schema == "" || table == "":
			bad("UPLOADS_TABLE", "%q must be table or schema.table (exact names, no quotes)", v)
		case strings.ContainsAny(v, "\"\x00"):
			bad("UPLOADS_TABLE", "%q: give the exact catalog name without quotes", v)
		default:
			m.TableSchema, m.Table = schema, table
		}
	}
	// Another table than the default one: its optional columns are unmapped unless named.
	if m.TableSchema != DefaultTableSchema || m.Table != DefaultUploadsTable {
		m.CreatedAtColumn, m.SizeColumn, m.ETagColumn = "", "", ""
		m.ContentTypeColumn, m.VerifiedAtColumn, m.UpdatedAtColumn = "", "", ""
	}
	name := func(v string, dst *string) {
		raw, ok := env.value(v)
		if !ok {
			return
		}
		switch {
		case strings.ContainsAny(raw, "\"\x00"):
			bad(v, "%q: give the exact catalog name without quotes", raw)
		case len(raw) > 63:
			bad(v, "%d bytes; PostgreSQL names are at most 63", len(raw))
		default:
			*dst = raw
		}
	}
	name("UPLOADS_ID_COLUMN", &m.IDColumn)
	name("UPLOADS_KEY_COLUMN", &m.KeyColumn)
	name("UPLOADS_STATUS_COLUMN", &m.StatusColumn)
	name("UPLOADS_CREATED_AT_COLUMN", &m.CreatedAtColumn)
	name("UPLOADS_SIZE_COLUMN", &m.SizeColumn)
	name("UPLOADS_ETAG_COLUMN", &m.ETagColumn)
	name("UPLOADS_CONTENT_TYPE_COLUMN", &m.ContentTypeColumn)
	name("UPLOADS_VERIFIED_AT_COLUMN", &m.VerifiedAtColumn)
	name("UPLOADS_UPDATED_AT_COLUMN", &m.UpdatedAtColumn)

	value := func(v string, dst *string) {
		raw, ok := env(v)
		if !ok || strings.TrimSpace(raw) == "" {
			return
		}
		if strings.ContainsRune(raw, 0) {
			bad(v, "%q is not a status value", raw)
			return
		}
		*dst = raw // exact spelling: enum labels and stored text are case-sensitive
	}
	value("UPLOADS_STATUS_PENDING", &m.StatusPending)
	value("UPLOADS_STATUS_UPLOADED", &m.StatusUploaded)
	value("UPLOADS_STATUS_FAILED", &m.StatusFailed)
	if m.StatusPending == m.StatusUploaded || m.StatusPending == m.StatusFailed || m.StatusUploaded == m.StatusFailed {
		bad("UPLOADS_STATUS_PENDING", "the three status values must differ (PENDING %q, UPLOADED %q, FAILED %q)",
			m.StatusPending, m.StatusUploaded, m.StatusFailed)
	}

	// One column cannot play two roles (the worker would overwrite what it reads).
	seen := map[string]string{}
	for _, col := range m.Columns() {
		if col.Name == "" {
			continue
		}
		if prev, dup := seen[col.Name]; dup {
			bad(col.Var, "column %q is already mapped by %s", col.Name, prev)
			continue
		}
		seen[col.Name] = col.Var
	}
}

// Schema is DATABASE_SCHEMA or its default.
func (c *Config) Schema() string {
	if c.DatabaseSchema == "" {
		return DefaultSchema
	}
	return c.DatabaseSchema
}

// String names the mapping for logs: table and columns, no values of rows.
func (m UploadsMapping) String() string {
	return fmt.Sprintf("%s (id %s, key %s, status %s)", m.QualifiedTable(), m.IDColumn, m.KeyColumn, m.StatusColumn)
}
