-- scan-orphans must never take an object for an orphan when an upload row names it. Some
-- S3-compatible stores (versitygw's posix backend, MinIO) store a key with a leading '/' or
-- repeated '/' under a normalised name ('/a//b' becomes 'a/b') and list it that way, so the
-- listed key does not equal the row's object_key. This partial expression index finds rows
-- by that normalised name; it holds only such odd keys, so it costs ordinary inserts nothing.
-- The expression and the predicate must stay identical to the ones in
-- queries/uploads.sql (UploadKeysWithRows) for the planner to use the index.
CREATE INDEX uploads_normalized_key_idx
    ON uploads ((ltrim(regexp_replace(object_key, '/+', '/', 'g'), '/')))
    WHERE object_key LIKE '/%' OR object_key LIKE '%//%';
