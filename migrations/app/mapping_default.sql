-- Rendered by internal/uploadmap from the uploads mapping: public.uploads.
-- Recreated by `bg-worker migrate` whenever the mapping changes; do not edit.

-- The application's PENDING rows.
CREATE VIEW uploads_pending AS
SELECT u."id"::text AS upload_id,
       u."object_key" AS object_key
FROM "public"."uploads" AS u
WHERE u."status" = 'PENDING'::text;

-- The worker's check state of uploads still PENDING in the application's table.
CREATE VIEW uploads_due AS
SELECT c.seq,
       c.upload_id,
       u."object_key" AS object_key,
       coalesce(u."created_at", c.first_seen_at)::timestamptz AS created_at,
       c.check_count,
       c.next_check_at
FROM upload_checks AS c
JOIN "public"."uploads" AS u ON u."id" = c.upload_id::bigint
WHERE c.resolved_at IS NULL
  AND u."status" = 'PENDING'::text;

-- Every key a row of the application's table names (scan-orphans).
CREATE VIEW upload_keys AS
SELECT u."object_key" AS object_key
FROM "public"."uploads" AS u;

-- Check state whose upload was deleted or resolved by the application.
CREATE VIEW upload_checks_stale AS
SELECT c.seq, c.upload_id
FROM upload_checks AS c
WHERE c.resolved_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM "public"."uploads" AS u WHERE u."id" = c.upload_id::bigint AND u."status" = 'PENDING'::text);

-- Writes one batch of check outcomes (ids and the other arrays are parallel; outcome is
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
    SELECT l."id" AS id, x.upload_id, x.outcome, x.size_bytes, x.etag, x.content_type
    FROM x
    JOIN "public"."uploads" AS l ON l."id" = x.upload_id::bigint
    WHERE x.outcome IN ('UPLOADED', 'FAILED') AND l."status" = 'PENDING'::text
    ORDER BY l."id"
    FOR UPDATE OF l SKIP LOCKED
),
app AS (
    UPDATE "public"."uploads" AS u
    SET "status" = CASE k.outcome WHEN 'UPLOADED' THEN 'UPLOADED'::text ELSE 'FAILED'::text END,
        "size_bytes" = CASE WHEN k.outcome = 'UPLOADED' THEN k.size_bytes::bigint ELSE u."size_bytes" END,
        "etag" = CASE WHEN k.outcome = 'UPLOADED' THEN nullif(k.etag, '')::text ELSE u."etag" END,
        "content_type" = CASE WHEN k.outcome = 'UPLOADED' THEN nullif(k.content_type, '')::text ELSE u."content_type" END,
        "verified_at" = CASE WHEN k.outcome = 'UPLOADED' THEN now() ELSE u."verified_at" END,
        "updated_at" = now()
    FROM k
    WHERE u."id" = k.id
    RETURNING k.upload_id, k.outcome
),
still AS (
    SELECT x.upload_id, x.outcome, x.last_error
    FROM x
    JOIN "public"."uploads" AS l ON l."id" = x.upload_id::bigint
    WHERE x.outcome IN ('PENDING', 'RETRY') AND l."status" = 'PENDING'::text
),
r AS (
    SELECT app.upload_id, app.outcome, x.last_error
    FROM app JOIN x ON x.upload_id = app.upload_id
    UNION ALL
    SELECT still.upload_id, still.outcome, still.last_error
    FROM still
)
UPDATE upload_checks AS c
SET check_count     = CASE WHEN r.outcome = 'RETRY' THEN c.check_count ELSE c.check_count + 1 END,
    error_count     = CASE WHEN r.outcome = 'RETRY' THEN c.error_count + 1 ELSE 0 END,
    last_checked_at = now(),
    next_check_at   = CASE r.outcome
                      WHEN 'PENDING' THEN backoff_from + least(max_backoff_ms, tick_ms * power(2::float8, least(c.check_count, 40)::float8))
                                                           * interval '1 millisecond'
                      WHEN 'RETRY' THEN backoff_from + least(max_backoff_ms, tick_ms * power(2::float8, least(c.error_count, 40)::float8))
                                                         * interval '1 millisecond'
                      ELSE c.next_check_at END,
    outcome         = CASE WHEN r.outcome IN ('PENDING', 'RETRY') THEN NULL ELSE r.outcome END,
    resolved_at     = CASE WHEN r.outcome IN ('PENDING', 'RETRY') THEN NULL ELSE now() END,
    last_error      = nullif(r.last_error, '')
FROM r
WHERE c.upload_id = r.upload_id AND c.resolved_at IS NULL
RETURNING c.*
$fn$;
