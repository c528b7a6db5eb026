-- name: JobRunClaim :one
-- Claims the current tick window of a job (database clock) for a scheduled run, only
-- while the session @lock_pid holds the job's advisory lock: checked in this statement,
-- so a claim sent before a partition and delivered after another replica took the lock
-- claims nothing. No row when the window is already claimed (by this replica or
-- another), the lock is not held, or the job is paused.
INSERT INTO job_runs (job, tick_at, trigger, worker_id, status, lock_pid)
SELECT @job,
       -- = to_timestamp(floor(epoch_ms / interval_ms) * interval_ms / 1000)
       date_bin(make_interval(secs => sqlc.arg(interval_ms)::bigint / 1000.0), clock_timestamp(), timestamptz '1970-01-01 00:00:00+00'),
       'schedule', @worker_id, @status, sqlc.arg(lock_pid)::int
WHERE EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = sqlc.arg(lock_pid)::int
      AND l.classid::bigint = sqlc.arg(lock_namespace)::bigint AND l.objid::bigint = sqlc.arg(lock_key)::bigint
      AND l.objsubid = 2
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()))
  -- A paused job claims nothing (bg-worker pause): no row per paused window.
  AND NOT EXISTS (SELECT 1 FROM worker_jobs j WHERE j.name = @job AND j.paused_until > clock_timestamp())
ON CONFLICT (job, tick_at) WHERE trigger = 'schedule' DO NOTHING
RETURNING id, tick_at, started_at;

-- name: JobRunClaimWindow :one
-- JobRunClaim for a window the caller computed (a calendar schedule's instant,
-- internal/schedule): claimed only while the database clock is inside
-- [@tick_at, @claim_until), with the same lock and pause checks.
INSERT INTO job_runs (job, tick_at, trigger, worker_id, status, lock_pid)
SELECT @job, sqlc.arg(tick_at)::timestamptz, 'schedule', @worker_id, @status, sqlc.arg(lock_pid)::int
WHERE clock_timestamp() >= sqlc.arg(tick_at)::timestamptz
  AND clock_timestamp() < sqlc.arg(claim_until)::timestamptz
  AND EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.pid = sqlc.arg(lock_pid)::int
      AND l.classid::bigint = sqlc.arg(lock_namespace)::bigint AND l.objid::bigint = sqlc.arg(lock_key)::bigint
      AND l.objsubid = 2
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()))
  AND NOT EXISTS (SELECT 1 FROM worker_jobs j WHERE j.name = @job AND j.paused_until > clock_timestamp())
ON CONFLICT (job, tick_at) WHERE trigger = 'schedule' DO NOTHING
RETURNING id, tick_at, started_at;

-- name: JobRunStartManual :one
INSERT INTO job_runs (job, tick_at, trigger, worker_id, status, lock_pid, request_id)
VALUES (@job, clock_timestamp(), 'manual', @worker_id, 'running', @lock_pid, @request_id)
RETURNING id, tick_at, started_at;

-- name: JobRunFinish :execrows
-- Only a run still marked running can finish: an abandoned run stays abandoned.
UPDATE job_runs
SET status = @status, error = @error, stats = @stats, finished_at = clock_timestamp()
WHERE id = @id AND status = 'running';

-- name: JobRunFinishSkipped :exec
UPDATE job_runs SET finished_at = clock_timestamp() WHERE id = @id;

-- name: JobRunListRunning :many
SELECT id, job, tick_at, trigger, worker_id, started_at, lock_pid
FROM job_runs
WHERE job = @job AND status = 'running'
ORDER BY id;

-- name: JobRunAbandon :execrows
UPDATE job_runs
SET status = 'abandoned', finished_at = clock_timestamp(), error = @error
WHERE id = @id AND status = 'running';

-- name: JobRunGet :one
SELECT * FROM job_runs WHERE id = @id;

-- name: JobRunGetByRequest :one
SELECT * FROM job_runs WHERE request_id = @request_id ORDER BY id DESC LIMIT 1;

-- name: JobRunListRecent :many
SELECT * FROM job_runs WHERE job = @job ORDER BY id DESC LIMIT @max_rows;

-- name: JobRunPrune :execrows
DELETE FROM job_runs
WHERE id IN (
    SELECT r.id FROM job_runs r
    WHERE r.started_at < @before AND r.status <> 'running'
    ORDER BY r.started_at
    LIMIT @max_rows
);

-- name: JobRunDBNow :one
SELECT clock_timestamp()::timestamptz AS now;
