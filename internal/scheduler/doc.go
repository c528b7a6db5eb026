// Package scheduler runs bg-worker's jobs: per job, one goroutine per replica that ticks
// on window boundaries of the job's interval (on the database clock), takes the job's
// advisory lock without waiting when it does not hold it (internal/lock), and, while it
// leads, claims each window in job_runs and runs the job once in it.
//
// Within one process a job never overlaps itself: a window that a still-running run
// overlaps is recorded as skipped. A job's panic or error fails only that run. A leader
// whose runs fail LEADER_MAX_FAILURES times in a row gives its lock up and stands back for
// two intervals so a healthy replica can take over. On shutdown no new runs start, a
// running job gets SHUTDOWN_TIMEOUT and is then cancelled, and locks are released.
package scheduler
