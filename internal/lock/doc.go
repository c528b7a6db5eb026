// Package lock elects one leader per job with PostgreSQL session advisory locks and
// fences the work a leader does.
//
// # What a Session guarantees
//
// A Session is one dedicated connection (never from the jobs' pool) that takes one lock,
// pg_try_advisory_lock(Namespace, ID), without waiting. It never takes a lock it already
// holds (advisory locks stack: a second take would need a second unlock and failover would
// silently stop), it releases on the same session and checks the boolean
// pg_advisory_unlock returns, and when anything about the session is in doubt it closes
// the connection, which makes the server drop every lock the session held. Right after
// taking the lock it verifies in pg_locks that the lock sits on its own backend: a
// transaction-mode pooler (PgBouncer, Supavisor) fails that check with ErrPooler.
//
// # Timing bounds (LOCK_HEARTBEAT = H, default 1s; LOCK_TIMEOUT = T, default 10s)
//
//   - Client side: while it holds the lock, the session checks every H that its backend
//     still holds the lock (one statement). If no check has succeeded for T/2 (the
//     ClientBound), the Lease ends with ErrLockLost, the connection is closed, and the
//     scheduler cancels the job's context. So a holder stops acting at most T/2 after the
//     last moment it knew it held the lock; a terminated backend or a restarted server is
//     noticed within H (the next check fails at once).
//   - Server side: a holder's session carries idle_session_timeout = T (a paused process
//     sends nothing), tcp_user_timeout = T and TCP keepalives of about T (a partitioned
//     one acknowledges nothing), so PostgreSQL ends a silent holder's session, and frees
//     its lock, about T after the holder's last statement. A dead process's socket is
//     closed by its kernel and the lock is freed at once.
//   - Because T/2 < T, a live holder always gives up before the server would let anyone
//     else take the lock. A paused holder cannot give up while paused; that is what
//     fencing is for.
//
// # Takeover
//
// Standbys try the lock once per tick. A new holder that finds the previous run still
// marked running marks it abandoned (internal/scheduler); what it waits first depends on
// the job's class (jobs.Job.ExternalEffects):
//
//	job                                    waits before its first run      after a crash            after a pause or partition
//	fenced database writes only            nothing                         ≤ one interval           ≤ T + one interval
//	effects outside the database (delete)  until the old run ends, ≤ T/2   ≤ one interval + T/2     ≤ T + one interval + T/2
//
// Each bound is plus the scheduler's wake-up slack after a boundary (≤ 50 ms) and a few
// statements. A fenced job needs no wait: the abandon waits for the old run's in-flight
// fenced transaction (its FOR SHARE row lock) and every later fence check fails, so an
// old holder that is only paused may still finish read-only work (HEADs) for up to T/2,
// but nothing it writes lands. A job with external effects must not act while the old
// holder might, hence T/2. Measured in BENCHMARKS.md.
//
// # Fencing
//
// A Fence names a run and the backend pid of its lock session. Fence.Check, as the first
// statement of a transaction, succeeds only if the run is still marked running and that
// backend still holds the job's lock; it takes a FOR SHARE row lock on the run, so a new
// leader's "mark abandoned" waits until the transaction ends, and every later check
// fails. A paused process that wakes after a takeover therefore commits nothing. Side
// effects outside the database (deleting objects) call the same check before each batch.
//
// # Connection loss, pause, restart, shutdown
//
// Connection loss or a server restart ends the Lease within H (or T/2 when the network
// hangs); the session reconnects on the next TryAcquire. A pause longer than T loses the
// lock server-side, and the woken process's writes fail their fence. On shutdown the
// caller releases: the lock is free for a standby's next tick.
package lock
