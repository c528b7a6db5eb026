-- The worker's own state of each upload it checks; the application's table is never
-- altered. A row appears when sync-uploads first sees an upload PENDING (first_seen_at is
-- its age when no created_at column is mapped) and is resolved when the worker sets the
-- upload UPLOADED or FAILED (outcome, resolved_at; last_error says why it failed).
-- prune-runs deletes resolved rows after RUN_HISTORY_RETENTION and rows whose upload the
-- application deleted or resolved itself.
CREATE TABLE upload_checks (
    seq             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The application's id as text (bigint, uuid and text ids alike).
    upload_id       text        NOT NULL UNIQUE,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    check_count     integer     NOT NULL DEFAULT 0,
    next_check_at   timestamptz NOT NULL DEFAULT now(),
    last_checked_at timestamptz,
    last_error      text,
    outcome         text        CHECK (outcome IN ('UPLOADED', 'FAILED')),
    resolved_at     timestamptz
);

-- sync-uploads walks unresolved rows by seq (keyset pages), filtering on next_check_at.
CREATE INDEX upload_checks_open_seq_idx ON upload_checks (seq) INCLUDE (next_check_at) WHERE resolved_at IS NULL;
-- prune-runs deletes resolved rows by age.
CREATE INDEX upload_checks_resolved_at_idx ON upload_checks (resolved_at) WHERE resolved_at IS NOT NULL;

-- The uploads mapping the schema's rendered objects (uploads_pending, uploads_due,
-- upload_keys, upload_checks_stale, upload_checks_apply) were made from; replicas compare
-- its fingerprint with their own mapping's at start.
CREATE TABLE upload_mapping (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    table_name   text        NOT NULL,
    id_column    text        NOT NULL,
    mapping      jsonb       NOT NULL,
    fingerprint  text        NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);
