-- name: WorkerJobRegister :one
-- Records a job and its lock key; an existing row keeps its interval (returned so the
-- caller can warn when its own differs).
INSERT INTO worker_jobs (name, lock_namespace, lock_key, interval_ms)
VALUES (@name, @lock_namespace, @lock_key, @interval_ms)
ON CONFLICT (name) DO UPDATE SET updated_at = now()
RETURNING name, lock_namespace, lock_key, interval_ms;

-- name: WorkerJobSetInterval :exec
UPDATE worker_jobs SET interval_ms = @interval_ms, updated_at = now() WHERE name = @name;

-- name: WorkerJobSetHolder :exec
-- Recorded by a new leader right after it takes the lock.
UPDATE worker_jobs
SET holder_worker_id = @worker_id, holder_pid = @holder_pid, holder_since = now()
WHERE name = @name;

-- name: WorkerJobList :many
-- A pause until resumed is stored as 'infinity' and read as paused with no paused_until.
SELECT name, lock_namespace, lock_key, interval_ms, registered_at, updated_at,
       (paused_until IS NOT NULL AND paused_until > now())::boolean AS paused,
       -- 0 when not paused or paused until resumed
       coalesce((extract(epoch FROM CASE WHEN paused_until > now() AND paused_until <> 'infinity' THEN paused_until END) * 1000)::bigint, 0)::bigint AS paused_until_ms,
       paused_at, coalesce(paused_by, '')::text AS paused_by, coalesce(paused_reason, '')::text AS paused_reason
FROM worker_jobs
ORDER BY name;

-- name: WorkerJobPause :execrows
-- Pauses a job fleet-wide: for @for_ms milliseconds, or until resumed when @for_ms is 0.
UPDATE worker_jobs
SET paused_until  = CASE WHEN sqlc.arg(for_ms)::bigint > 0
                         THEN now() + sqlc.arg(for_ms)::bigint * interval '1 millisecond'
                         ELSE 'infinity'::timestamptz END,
    paused_at     = now(),
    paused_by     = sqlc.arg(paused_by)::text,
    paused_reason = nullif(sqlc.arg(reason)::text, ''),
    pause_cancels = sqlc.arg(cancel_running)::boolean,
    updated_at    = now()
WHERE name = @name;

-- name: WorkerJobResume :execrows
UPDATE worker_jobs
SET paused_until = NULL, pause_cancels = false, updated_at = now()
WHERE name = @name;

-- name: WorkerJobPauseState :one
-- The pause a leader reads when a claim came back empty.
SELECT (paused_until IS NOT NULL AND paused_until > clock_timestamp())::boolean AS paused,
       coalesce((extract(epoch FROM CASE WHEN paused_until <> 'infinity' THEN paused_until END) * 1000)::bigint, 0)::bigint AS paused_until_ms,
       coalesce(paused_by, '')::text AS paused_by, coalesce(paused_reason, '')::text AS paused_reason,
       pause_cancels
FROM worker_jobs
WHERE name = @name;
