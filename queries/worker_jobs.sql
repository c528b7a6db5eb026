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
SELECT name, lock_namespace, lock_key, interval_ms, registered_at, updated_at
FROM worker_jobs
ORDER BY name;
