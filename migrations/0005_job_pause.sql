-- Fleet-wide pause of a job (`bg-worker pause JOB`, or an UPDATE of these columns): while
-- paused_until is in the future (or 'infinity'), its leader claims no new window. NULL:
-- not paused. pause_cancels: the leader also cancels a run in progress (`--now`).
ALTER TABLE worker_jobs
    ADD COLUMN paused_until  timestamptz,
    ADD COLUMN paused_at     timestamptz,
    ADD COLUMN paused_by     text,
    ADD COLUMN paused_reason text,
    ADD COLUMN pause_cancels boolean NOT NULL DEFAULT false;
