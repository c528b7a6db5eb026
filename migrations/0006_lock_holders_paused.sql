-- worker_lock_holders shows a paused job's pause (appended columns). Like 0002, this file
-- is left out of sqlc's schema (pg_locks).
CREATE OR REPLACE VIEW worker_lock_holders AS
SELECT j.name              AS job,
       a.application_name  AS worker_id,
       l.pid               AS pid,
       a.client_addr       AS client_addr,
       CASE WHEN j.holder_pid = l.pid THEN j.holder_since ELSE a.backend_start END AS held_since,
       r.started_at        AS running_since,
       r.tick_at           AS tick_at,
       -- set while the job is paused (bg-worker pause): its leader starts no new run
       CASE WHEN j.paused_until > now() THEN j.paused_until END AS paused_until,
       CASE WHEN j.paused_until > now() THEN j.paused_by END    AS paused_by,
       CASE WHEN j.paused_until > now() THEN j.paused_reason END AS paused_reason
FROM worker_jobs j
JOIN pg_locks l
  ON l.locktype = 'advisory'
 AND l.granted
 AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
 AND l.classid::bigint = j.lock_namespace::bigint
 AND l.objid::bigint = j.lock_key::bigint
 AND l.objsubid = 2
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
LEFT JOIN LATERAL (
    SELECT jr.started_at, jr.tick_at
    FROM job_runs jr
    WHERE jr.job = j.name AND jr.status = 'running' AND jr.lock_pid = l.pid
    ORDER BY jr.id DESC
    LIMIT 1
) r ON true;
