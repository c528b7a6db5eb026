-- The worker's own per-upload state (upload_checks, in the worker's schema).

-- name: UploadCheckRegister :execrows
-- Starts tracking the application's PENDING uploads under the prefix that the worker has
-- not seen, and restarts tracking of ones it resolved that the application set PENDING
-- again (a retried upload). first_seen_at is an upload's age when no created_at column is
-- mapped.
INSERT INTO upload_checks (upload_id)
SELECT p.upload_id
FROM uploads_pending p
LEFT JOIN upload_checks c ON c.upload_id = p.upload_id
WHERE starts_with(p.object_key, @prefix::text)
  AND (c.upload_id IS NULL OR c.resolved_at IS NOT NULL)
ON CONFLICT (upload_id) DO UPDATE
SET first_seen_at = now(), check_count = 0, next_check_at = now(), last_checked_at = NULL,
    last_error = NULL, outcome = NULL, resolved_at = NULL;

-- name: UploadCheckApply :many
-- Writes one batch of outcomes through the mapping's function (application row and the
-- worker's state in one statement); returns the state rows that changed.
SELECT *
FROM upload_checks_apply(sqlc.arg(ids)::text[], sqlc.arg(outcomes)::text[], sqlc.arg(sizes)::bigint[],
                         sqlc.arg(etags)::text[], sqlc.arg(content_types)::text[], sqlc.arg(errors)::text[],
                         sqlc.arg(backoff_from)::timestamptz, sqlc.arg(tick_ms)::float8, sqlc.arg(max_backoff_ms)::float8);

-- name: UploadCheckGet :one
SELECT * FROM upload_checks WHERE upload_id = @upload_id;

-- name: UploadCheckPruneResolved :execrows
-- Deletes up to @max_rows state rows of uploads resolved before @before.
DELETE FROM upload_checks
WHERE seq IN (
    SELECT c.seq FROM upload_checks c
    WHERE c.resolved_at < @before
    ORDER BY c.resolved_at
    LIMIT @max_rows
);

-- name: UploadCheckPruneStale :execrows
-- Deletes up to @max_rows state rows whose upload the application deleted or resolved.
DELETE FROM upload_checks
WHERE seq IN (SELECT s.seq FROM upload_checks_stale s LIMIT @max_rows);

-- name: UploadCheckAnyUnregistered :one
-- Whether any PENDING upload under the prefix has no open state row (new, or set PENDING
-- again): an idle tick skips the fenced registration transaction when not.
SELECT EXISTS (
    SELECT 1
    FROM uploads_pending p
    LEFT JOIN upload_checks c ON c.upload_id = p.upload_id
    WHERE starts_with(p.object_key, @prefix::text)
      AND (c.upload_id IS NULL OR c.resolved_at IS NOT NULL)
)::boolean AS any;
