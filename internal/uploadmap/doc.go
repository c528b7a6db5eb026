// Package uploadmap connects bg-worker to the application's uploads table as it is.
//
// The application owns its table: its name, its column names and types (bigint, uuid
// or text ids; a text, varchar or enum status with any spelling of the values; quoted
// mixed-case identifiers). The worker's verification queries are sqlc-generated, and
// sqlc needs fixed names and types at build time. The seam between the two is a small
// set of objects in the worker's own schema (DATABASE_SCHEMA) that `bg-worker migrate`
// renders from the mapping and (re)creates whenever the mapping changes:
//
//   - view uploads_pending (upload_id, object_key): the application's PENDING rows;
//   - view uploads_due (seq, upload_id, object_key, created_at, check_count,
//     next_check_at): the worker's per-upload state (table upload_checks) joined to the
//     rows that are still PENDING;
//   - view upload_keys (object_key): every key a row names (scan-orphans);
//   - view upload_checks_stale: state rows whose upload is gone or no longer PENDING;
//   - function upload_checks_apply(...) RETURNS SETOF upload_checks: writes one batch of
//     check outcomes, to the application's mapped columns and to upload_checks.
//
// Their column names and types never depend on the mapping (ids are text, keys text,
// times timestamptz), so the sqlc queries in queries/ compile against one rendering (the
// default mapping, committed as migrations/app/mapping_default.sql) and run unchanged
// against every other. Inside them every identifier is quoted and every value a quoted
// literal; comparisons with the application's columns are made in the column's own type
// (u."id" = c.upload_id::uuid, u."status" = 'done'::public."UploadStatus"), so the
// application's indexes apply: a due page is a primary-key lookup per row, and the
// pending scan uses the partial index that Advice recommends.
//
// The rendering is fingerprinted; migrate records the fingerprint, and replicas refuse
// to start (exit 2) when their mapping renders differently, so a fleet never runs two
// mappings at once. Resolve validates a mapping against the catalog and reports each
// problem as a *config.Error naming the variable and what the database has instead.
package uploadmap
