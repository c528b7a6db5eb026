-- name: UploadListDue :many
-- One keyset page of PENDING uploads due for a check.
SELECT id, object_key, created_at, check_count
FROM uploads
WHERE status = 'PENDING' AND id > @after_id AND next_check_at <= now()
ORDER BY id
LIMIT @max_rows;
