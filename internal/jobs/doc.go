// Package jobs holds bg-worker's jobs, one file each, and the registry that lists them.
//
// Adding a job: write a file with a constructor `func newMyJob(d Deps) Job` and add one
// line to Registry. The scheduler (internal/scheduler) elects one replica per job with an
// advisory lock, claims each tick window in job_runs, and calls Job.Run with a Run that
// carries the run's identity, logger and fencing. A job writes only through Run.Fenced,
// so a run whose lock was lost cannot commit, and calls Run.CheckLock before any side
// effect outside the database.
package jobs
