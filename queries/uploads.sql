-- Queries over the application's uploads table. They never name it: they read the views
-- that `migrate` renders from the UPLOADS_* mapping into the worker's schema (see
-- internal/uploadmap), whose columns are the same for every mapping.

-- name: UploadDueSummary :one
-- Start of a sync-uploads run: the database clock (the run's "as of" time), how many
-- uploads under the prefix are PENDING in the application's table, how many of them are
-- due, and the highest due seq (the run checks up to it, so rows registered while it runs
-- wait for the next tick).
SELECT now()::timestamptz AS as_of,
       (SELECT count(*) FROM uploads_pending p WHERE starts_with(p.object_key, sqlc.arg(prefix)::text))::bigint AS pending,
       count(*) AS due,
       coalesce(max(d.seq), 0)::bigint AS max_due_seq
FROM uploads_due d
WHERE d.next_check_at <= now() AND starts_with(d.object_key, sqlc.arg(prefix)::text);

-- name: UploadListDue :many
-- One keyset page of PENDING uploads under the prefix that were due at @as_of, by the
-- worker's seq (upload_checks_open_seq_idx), each joined to its application row by id.
SELECT seq, upload_id, object_key, created_at, check_count
FROM uploads_due
WHERE seq > @after_seq AND seq <= @max_seq
  AND next_check_at <= @as_of
  AND starts_with(object_key, @prefix::text)
ORDER BY seq
LIMIT @max_rows;

-- name: UploadKeysWithRows :many
-- Of these listed object keys, the ones an upload row claims: exactly (the application's
-- unique index on its key column), or after the normalisation some stores apply to keys
-- with a leading or repeated '/' (the default table's uploads_normalized_key_idx; the
-- expression and predicate must match that index).
SELECT k.object_key::text AS object_key
FROM upload_keys k
WHERE k.object_key = ANY(sqlc.arg(keys)::text[])
UNION
SELECT ltrim(regexp_replace(k.object_key, '/+', '/', 'g'), '/')::text
FROM upload_keys k
WHERE (k.object_key LIKE '/%' OR k.object_key LIKE '%//%')
  AND ltrim(regexp_replace(k.object_key, '/+', '/', 'g'), '/') = ANY(sqlc.arg(keys)::text[]);
