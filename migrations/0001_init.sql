-- The worker's own tables. Every name here is unqualified: migrate runs these files with
-- search_path set to the worker's schema (DATABASE_SCHEMA, default bg_worker), and the
-- worker's sessions use the same search_path.

-- Every job a replica registered, and the advisory-lock key that elects its leader:
-- pg_advisory_lock(lock_namespace, lock_key), which pg_locks shows as classid, objid, objsubid = 2.
CREATE TABLE worker_jobs (
    name           text        PRIMARY KEY,
    lock_namespace integer     NOT NULL,
    lock_key       integer     NOT NULL CHECK (lock_key >= 0),
    interval_ms    bigint      NOT NULL CHECK (interval_ms > 0),
    registered_at  timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- The last leader as it recorded itself when it took the lock; worker_lock_holders
    -- trusts these only while pg_locks agrees.
    holder_worker_id text,
    holder_pid       integer,
    holder_since     timestamptz,
    UNIQUE (lock_namespace, lock_key)
);

CREATE TABLE job_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text        NOT NULL,
    tick_at     timestamptz NOT NULL,
    trigger     text        NOT NULL DEFAULT 'schedule' CHECK (trigger IN ('schedule', 'manual')),
    worker_id   text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    status      text        NOT NULL
                CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'abandoned', 'skipped')),
    error       text,
    stats       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Backend pid of the lock session that held the job's lock for this run: the fencing
    -- check and worker_lock_holders join on it.
    lock_pid    integer,
    -- Set for manual runs requested through `bg-worker once`.
    request_id  text
);

-- At most one scheduled run per job and tick window.
CREATE UNIQUE INDEX job_runs_schedule_tick_uq ON job_runs (job, tick_at) WHERE trigger = 'schedule';
-- "Last runs of job X", newest first.
CREATE INDEX job_runs_job_id_idx ON job_runs (job, id DESC);
-- Runs still marked running (few at any time).
CREATE INDEX job_runs_running_idx ON job_runs (job) WHERE status = 'running';
-- Pruning by age.
CREATE INDEX job_runs_started_at_idx ON job_runs (started_at);
