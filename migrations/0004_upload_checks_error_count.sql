-- Transient errors (timeouts, 5xx, throttling) back off per upload too, separately from
-- the missing-object backoff (check_count), and never change an upload's status.
ALTER TABLE upload_checks ADD COLUMN error_count integer NOT NULL DEFAULT 0;
