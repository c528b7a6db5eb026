package uploadmap

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bg-worker/bg-worker/internal/config"
)

// Outcomes of one check, as upload_checks_apply takes them. They are the worker's own
// words; the function maps them to the application's status values.
const (
	OutcomeUploaded = "UPLOADED" // the object exists
	OutcomeFailed   = "FAILED"   // missing past SYNC_PENDING_TTL
	OutcomePending  = "PENDING"  // missing (or its key rejected), checked again after a backoff
	// OutcomeRetry is a transient error (timeout, 5xx, throttling): the upload's status
	// stays, its next check backs off by its own error count.
	OutcomeRetry = "RETRY"
)

// DefaultResolved is the default mapping resolved against the default table that
// migrate creates (migrations/app/default_uploads.sql). Rendering it gives the file sqlc
// reads as the mapping objects' schema.
func DefaultResolved() *Resolved {
	col := func(v, name, typ string) Column {
		return Column{Var: v, Name: name, Type: typ, TypeMod: typ, Base: typ}
	}
	opt := func(v, name, typ string) *Column { c := col(v, name, typ); return &c }
	m := config.DefaultUploads()
	return &Resolved{
		Mapping:     m,
		ID:          col("UPLOADS_ID_COLUMN", m.IDColumn, "bigint"),
		Key:         col("UPLOADS_KEY_COLUMN", m.KeyColumn, "text"),
		Status:      col("UPLOADS_STATUS_COLUMN", m.StatusColumn, "text"),
		CreatedAt:   opt("UPLOADS_CREATED_AT_COLUMN", m.CreatedAtColumn, "timestamp with time zone"),
		Size:        opt("UPLOADS_SIZE_COLUMN", m.SizeColumn, "bigint"),
		ETag:        opt("UPLOADS_ETAG_COLUMN", m.ETagColumn, "text"),
		ContentType: opt("UPLOADS_CONTENT_TYPE_COLUMN", m.ContentTypeColumn, "text"),
		VerifiedAt:  opt("UPLOADS_VERIFIED_AT_COLUMN", m.VerifiedAtColumn, "timestamp with time zone"),
		UpdatedAt:   opt("UPLOADS_UPDATED_AT_COLUMN", m.UpdatedAtColumn, "timestamp with time zone"),
	}
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal quotes s as an SQL string constant (standard_conforming_strings is on, as
// pgx requires).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// col is u."name".
func col(alias string, c Column) string { return alias + "." + ident(c.Name) }

// value is a status value as a constant of the status column's type.
func (r *Resolved) value(v string) string { return literal(v) + "::" + r.Status.Type }

// asText reads a text-like column as text (a no-op for text, a relabel for varchar).
func asText(expr string, c Column) string {
	if c.Base == "text" {
		return expr
	}
	return expr + "::text"
}

// asTimestamptz reads a time column; timestamp without time zone is taken as UTC, as
// ORMs that use it (Prisma, Django without USE_TZ… ) store UTC.
func asTimestamptz(expr string, c Column) string {
	if c.Base == "timestamp without time zone" {
		return "(" + expr + " AT TIME ZONE 'UTC')"
	}
	return expr
}

// now is the current time for a time column of c's type.
func now(c Column) string {
	if c.Base == "timestamp without time zone" {
		return "(now() AT TIME ZONE 'UTC')"
	}
	return "now()"
}

// Render returns the SQL that creates the mapping's objects in the current schema (the
// caller sets search_path to the worker's schema). The output is deterministic: its
// hash is the mapping's fingerprint.
func (r *Resolved) Render() string {
	var b strings.Builder
	t := r.Table()
	id := func(alias string) string { return col(alias, r.ID) }
	pending := r.value(r.Mapping.StatusPending)
	idAsText := func(alias string) string {
		if r.ID.Base == "text" {
			return id(alias)
		}
		return id(alias) + "::text"
	}
	// The join from the worker's text id to the application's row, in the id's own type
	// so the application's primary key index applies.
	joinID := func(alias, textExpr string) string {
		if r.ID.Base == "text" {
			return id(alias) + " = " + textExpr
		}
		return id(alias) + " = " + textExpr + "::" + r.ID.Type
	}
	created := "c.first_seen_at"
	if r.CreatedAt != nil {
		created = "coalesce(" + asTimestamptz(col("u", *r.CreatedAt), *r.CreatedAt) + ", c.first_seen_at)"
	}

	fmt.Fprintf(&b, "-- Rendered by internal/uploadmap from the uploads mapping: %s.\n", r.Mapping.QualifiedTable())
	b.WriteString("-- Recreated by `bg-worker migrate` whenever the mapping changes; do not edit.\n\n")

	fmt.Fprintf(&b, `-- The application's PENDING rows.
CREATE VIEW uploads_pending AS
SELECT %s AS upload_id,
       %s AS object_key
FROM %s AS u
WHERE %s = %s;

`, idAsText("u"), asText(col("u", r.Key), r.Key), t, col("u", r.Status), pending)

	fmt.Fprintf(&b, `-- The worker's check state of uploads still PENDING in the application's table.
CREATE VIEW uploads_due AS
SELECT c.seq,
       c.upload_id,
       %s AS object_key,
       %s::timestamptz AS created_at,
       c.check_count,
       c.next_check_at
FROM upload_checks AS c
JOIN %s AS u ON %s
WHERE c.resolved_at IS NULL
  AND %s = %s;

`, asText(col("u", r.Key), r.Key), created, t, joinID("u", "c.upload_id"), col("u", r.Status), pending)

	fmt.Fprintf(&b, `-- Every key a row of the application's table names (scan-orphans).
CREATE VIEW upload_keys AS
SELECT %s AS object_key
FROM %s AS u;

`, asText(col("u", r.Key), r.Key), t)

	fmt.Fprintf(&b, `-- Check state whose upload was deleted or resolved by the application.
CREATE VIEW upload_checks_stale AS
SELECT c.seq, c.upload_id
FROM upload_checks AS c
WHERE c.resolved_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM %s AS u WHERE %s AND %s = %s);

`, t, joinID("u", "c.upload_id"), col("u", r.Status), pending)

	// The application's columns written on a status change.
	var sets []string
	sets = append(sets, fmt.Sprintf("%s = CASE k.outcome WHEN %s THEN %s ELSE %s END",
		ident(r.Status.Name), literal(OutcomeUploaded), r.value(r.Mapping.StatusUploaded), r.value(r.Mapping.StatusFailed)))
	onUploaded := func(c *Column, expr string) {
		if c == nil {
			return
		}
		sets = append(sets, fmt.Sprintf("%s = CASE WHEN k.outcome = %s THEN %s ELSE %s END",
			ident(c.Name), literal(OutcomeUploaded), expr, col("u", *c)))
	}
	if r.Size != nil {
		onUploaded(r.Size, "k.size_bytes::"+r.Size.TypeMod)
	}
	if r.ETag != nil {
		onUploaded(r.ETag, "nullif(k.etag, '')::"+r.ETag.TypeMod)
	}
	if r.ContentType != nil {
		onUploaded(r.ContentType, "nullif(k.content_type, '')::"+r.ContentType.TypeMod)
	}
	if r.VerifiedAt != nil {
		onUploaded(r.VerifiedAt, now(*r.VerifiedAt))
	}
	if r.UpdatedAt != nil {
		sets = append(sets, fmt.Sprintf("%s = %s", ident(r.UpdatedAt.Name), now(*r.UpdatedAt)))
	}

	// The function, with named slots: every value below is quoted or an identifier.
	fn := strings.NewReplacer(
		"{{TABLE}}", t,
		"{{L_ID}}", id("l"),
		"{{U_ID}}", id("u"),
		"{{JOIN_L}}", joinID("l", "x.upload_id"),
		"{{L_STATUS}}", col("l", r.Status),
		"{{PENDING_VALUE}}", pending,
		"{{SETS}}", strings.Join(sets, ",\n        "),
		"{{UPLOADED}}", literal(OutcomeUploaded),
		"{{FAILED}}", literal(OutcomeFailed),
		"{{PENDING}}", literal(OutcomePending),
		"{{RETRY}}", literal(OutcomeRetry),
	).Replace(`-- Writes one batch of check outcomes (ids and the other arrays are parallel; outcome is
-- UPLOADED, FAILED, PENDING or RETRY). UPLOADED and FAILED change the application's row if
-- it is still PENDING and not locked by anyone else (SKIP LOCKED: a row the application
-- holds is checked again next tick, the worker never waits for it). PENDING (missing, or
-- its key rejected) pushes the next check back by the check count, RETRY (a transient
-- error) by the error count; neither touches the application's row. Returns the worker's
-- state rows that changed.
CREATE FUNCTION upload_checks_apply(
    ids text[], outcomes text[], sizes bigint[], etags text[], content_types text[], errors text[],
    backoff_from timestamptz, tick_ms double precision, max_backoff_ms double precision)
RETURNS SETOF upload_checks
LANGUAGE sql VOLATILE
AS $fn$
WITH x AS (
    SELECT *
    FROM unnest(ids, outcomes, sizes, etags, content_types, errors)
         AS x(upload_id, outcome, size_bytes, etag, content_type, last_error)
),
k AS (
    SELECT {{L_ID}} AS id, x.upload_id, x.outcome, x.size_bytes, x.etag, x.content_type
    FROM x
    JOIN {{TABLE}} AS l ON {{JOIN_L}}
    WHERE x.outcome IN ({{UPLOADED}}, {{FAILED}}) AND {{L_STATUS}} = {{PENDING_VALUE}}
    ORDER BY {{L_ID}}
    FOR UPDATE OF l SKIP LOCKED
),
app AS (
    UPDATE {{TABLE}} AS u
    SET {{SETS}}
    FROM k
    WHERE {{U_ID}} = k.id
    RETURNING k.upload_id, k.outcome
),
still AS (
    SELECT x.upload_id, x.outcome, x.last_error
    FROM x
    JOIN {{TABLE}} AS l ON {{JOIN_L}}
    WHERE x.outcome IN ({{PENDING}}, {{RETRY}}) AND {{L_STATUS}} = {{PENDING_VALUE}}
),
r AS (
    SELECT app.upload_id, app.outcome, x.last_error
    FROM app JOIN x ON x.upload_id = app.upload_id
    UNION ALL
    SELECT still.upload_id, still.outcome, still.last_error
    FROM still
)
UPDATE upload_checks AS c
SET check_count     = CASE WHEN r.outcome = {{RETRY}} THEN c.check_count ELSE c.check_count + 1 END,
    error_count     = CASE WHEN r.outcome = {{RETRY}} THEN c.error_count + 1 ELSE 0 END,
    last_checked_at = now(),
    next_check_at   = CASE r.outcome
                      WHEN {{PENDING}} THEN backoff_from + least(max_backoff_ms, tick_ms * power(2::float8, least(c.check_count, 40)::float8))
                                                           * interval '1 millisecond'
                      WHEN {{RETRY}} THEN backoff_from + least(max_backoff_ms, tick_ms * power(2::float8, least(c.error_count, 40)::float8))
                                                         * interval '1 millisecond'
                      ELSE c.next_check_at END,
    outcome         = CASE WHEN r.outcome IN ({{PENDING}}, {{RETRY}}) THEN NULL ELSE r.outcome END,
    resolved_at     = CASE WHEN r.outcome IN ({{PENDING}}, {{RETRY}}) THEN NULL ELSE now() END,
    last_error      = nullif(r.last_error, '')
FROM r
WHERE c.upload_id = r.upload_id AND c.resolved_at IS NULL
RETURNING c.*
$fn$;
`)
	b.WriteString(fn)
	return b.String()
}

// DropSQL removes what Render creates (before a re-render).
const DropSQL = `DROP FUNCTION IF EXISTS upload_checks_apply(text[], text[], bigint[], text[], text[], text[], timestamptz, double precision, double precision);
DROP VIEW IF EXISTS uploads_pending, uploads_due, upload_keys, upload_checks_stale;`

// Fingerprint identifies a rendering: equal fingerprints, equal objects.
func (r *Resolved) Fingerprint() string {
	sum := sha256.Sum256([]byte(r.Render()))
	return hex.EncodeToString(sum[:8])
}

// PendingIndexName is the name Advice suggests for the pending-rows index.
func (r *Resolved) PendingIndexName() string {
	name := r.Mapping.Table + "_bg_worker_pending_idx"
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// Advice is the index a due page wants on the application's table: its PENDING rows
// by id, so finding new and due uploads never reads the whole table.
func (r *Resolved) Advice() string {
	return fmt.Sprintf("CREATE INDEX CONCURRENTLY %s ON %s (%s) WHERE %s = %s;",
		ident(r.PendingIndexName()), r.Table(), ident(r.ID.Name), ident(r.Status.Name), r.value(r.Mapping.StatusPending))
}

// WrittenColumns names the application's columns the worker updates.
func (r *Resolved) WrittenColumns() []string {
	out := []string{r.Status.Name}
	for _, c := range []*Column{r.Size, r.ETag, r.ContentType, r.VerifiedAt, r.UpdatedAt} {
		if c != nil {
			out = append(out, c.Name)
		}
	}
	return out
}

// GrantSQL is what a replica role needs on the application's table.
func (r *Resolved) GrantSQL(role string) string {
	cols := r.WrittenColumns()
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = ident(c)
	}
	return fmt.Sprintf("GRANT SELECT, UPDATE (%s) ON %s TO %s;", strings.Join(q, ", "), r.Table(), ident(role))
}
