-- name: UploadDueSummary :one
-- Start of a sync-uploads run: the database clock (the run's "as of" time), how many
-- uploads under the prefix are PENDING, how many of them are due, and the highest due id
-- (the run checks ids up to it, so rows inserted while it runs wait for the next tick).
SELECT now()::timestamptz AS as_of,
       count(*) AS pending,
       count(*) FILTER (WHERE next_check_at <= now()) AS due,
       coalesce(max(id) FILTER (WHERE next_check_at <= now()), 0)::bigint AS max_due_id
FROM uploads
WHERE status = 'PENDING' AND starts_with(object_key, @prefix::text);

-- name: UploadListDue :many
-- One keyset page of PENDING uploads under the prefix that were due at @as_of, by id
-- (uploads_pending_id_idx).
SELECT id, object_key, created_at, check_count
FROM uploads
WHERE status = 'PENDING'
  AND id > @after_id AND id <= @max_id
  AND next_check_at <= @as_of
  AND starts_with(object_key, @prefix::text)
ORDER BY id
LIMIT @max_rows;

-- name: UploadApplyChecks :many
-- Writes one batch of sync-uploads results in one statement. Each input row carries the
-- new status its HEAD decided: UPLOADED (with size, ETag, content type), FAILED (with the
-- reason), or PENDING (still missing: check_count + 1 and next_check_at = @backoff_from
-- plus @tick_ms doubled per earlier check, at most @max_backoff_ms). Only rows still
-- PENDING change; the rows that did are returned with their new status. An empty ETag
-- or content type is stored as NULL (some stores give none).
UPDATE uploads AS u
SET status        = c.status,
    size_bytes    = CASE WHEN c.status = 'UPLOADED' THEN c.size_bytes ELSE u.size_bytes END,
    etag          = CASE WHEN c.status = 'UPLOADED' THEN nullif(c.etag, '') ELSE u.etag END,
    content_type  = CASE WHEN c.status = 'UPLOADED' THEN nullif(c.content_type, '') ELSE u.content_type END,
    verified_at   = CASE WHEN c.status = 'UPLOADED' THEN now() ELSE u.verified_at END,
    check_count   = u.check_count + 1,
    next_check_at = CASE WHEN c.status = 'PENDING'
                         THEN sqlc.arg(backoff_from)::timestamptz + least(sqlc.arg(max_backoff_ms)::float8,
                                            sqlc.arg(tick_ms)::float8 * power(2::float8, least(u.check_count, 40)::float8))
                                      * interval '1 millisecond'
                         ELSE u.next_check_at END,
    last_error    = CASE WHEN c.status = 'FAILED' THEN nullif(c.last_error, '') ELSE NULL END,
    updated_at    = now()
FROM (SELECT unnest(sqlc.arg(ids)::bigint[])         AS id,
             unnest(sqlc.arg(statuses)::text[])       AS status,
             unnest(sqlc.arg(sizes)::bigint[])        AS size_bytes,
             unnest(sqlc.arg(etags)::text[])          AS etag,
             unnest(sqlc.arg(content_types)::text[])  AS content_type,
             unnest(sqlc.arg(errors)::text[])         AS last_error) AS c
WHERE u.id = c.id AND u.status = 'PENDING'
RETURNING u.id, u.status;

-- name: UploadKeysWithRows :many
-- Of these listed object keys, the ones an upload row claims: exactly (object_key's unique
-- index), or after the normalisation some stores apply to keys with a leading or repeated
-- '/' (uploads_normalized_key_idx; the expression and predicate must match that index).
SELECT u.object_key
FROM uploads u
WHERE u.object_key = ANY(sqlc.arg(keys)::text[])
UNION
SELECT ltrim(regexp_replace(u.object_key, '/+', '/', 'g'), '/')::text
FROM uploads u
WHERE (u.object_key LIKE '/%' OR u.object_key LIKE '%//%')
  AND ltrim(regexp_replace(u.object_key, '/+', '/', 'g'), '/') = ANY(sqlc.arg(keys)::text[]);
