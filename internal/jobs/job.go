package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/schedule"
	"github.com/bg-worker/bg-worker/internal/store"
)

// Job is one unit of scheduled work. Exactly one replica runs it per tick window.
type Job struct {
	// Name is the job's identity: its log prefix, its advisory-lock key, its rows in
	// worker_jobs and job_runs.
	Name string
	// Interval is the tick; windows are aligned to it on the database clock. For a job
	// with a Schedule it is the schedule's typical period (timeouts, health, metrics).
	Interval time.Duration
	// Schedule, when set, gives the windows instead of Interval: e.g. a cron expression
	// in a time zone (internal/schedule). Windows are its instants on the database clock.
	Schedule schedule.Schedule
	// UsesBucket says the job needs the R2 variables.
	UsesBucket bool
	// ExternalEffects says the job acts outside the database (deleting objects). Such a
	// job's new leader, finding the previous run still marked running, waits out the old
	// holder's client bound (LOCK_TIMEOUT/2) before it runs, so two replicas never act
	// at the same instant. A job whose only effects are fenced database writes needs no
	// wait: the old holder may still be finishing read-only work (HEADs), but once its
	// run is marked abandoned nothing it writes can commit, so the new leader starts at
	// once (internal/lock/doc.go, "Takeover").
	ExternalEffects bool
	// Description is one line for `bg-worker jobs`.
	Description string
	// Timeout is the longest a run may take (0: DefaultTimeout of Interval; JOB_TIMEOUTS
	// overrides it). A run past it is cancelled and recorded failed with a "timeout:"
	// error; one that ignores the cancellation is abandoned like a run at shutdown: its
	// lock is released after the client bound and its writes are fenced.
	Timeout time.Duration
	// Run does the work of one tick. It must return when ctx is cancelled (lock lost,
	// shutdown grace over) and must not leave goroutines behind.
	Run func(ctx context.Context, r Run) error
}

// Run is what a running job gets from the scheduler: its identity, a logger, the
// database, and the fencing that keeps a run that lost its lock from committing.
type Run interface {
	ID() int64
	TickAt() time.Time
	Trigger() string
	Logger() *slog.Logger
	// Store is for reads; its writes are not fenced.
	Store() *store.Store
	// Fenced runs fn in a transaction that first checks this run still owns its job
	// (lock held, run still marked running). If not, fn does not run and the error wraps
	// lock.ErrLockLost. Every write a job makes goes through here.
	Fenced(ctx context.Context, fn func(tx *store.Store) error) error
	// CheckLock returns an error wrapping lock.ErrLockLost when the run no longer owns
	// its job. Jobs call it before side effects outside the database (deleting objects).
	CheckLock(ctx context.Context) error
	// Stats collects the run's counters, stored in job_runs.stats.
	Stats() *Stats
}

// DefaultTimeout is a job's longest run unless it says otherwise: ten intervals, at least
// ten minutes (long enough for a large sync-uploads backlog at its own run budget).
func DefaultTimeout(interval time.Duration) time.Duration {
	return max(10*interval, 10*time.Minute)
}

// Windows is the job's schedule: Schedule, or windows of Interval.
func (j Job) Windows() schedule.Schedule {
	if j.Schedule != nil {
		return j.Schedule
	}
	return schedule.Every(j.Interval)
}

// EffectiveTimeout is j.Timeout or its default.
func (j Job) EffectiveTimeout() time.Duration {
	if j.Timeout > 0 {
		return j.Timeout
	}
	return DefaultTimeout(j.Interval)
}

// Stats is a set of named counters, safe for concurrent use.
type Stats struct {
	mu sync.Mutex
	m  map[string]int64
}

// Add adds n to counter name.
func (s *Stats) Add(name string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]int64{}
	}
	s.m[name] += n
}

// Set sets counter name.
func (s *Stats) Set(name string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]int64{}
	}
	s.m[name] = n
}

// Get returns counter name.
func (s *Stats) Get(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[name]
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out
}

// Select returns the registered jobs named in names (all when names is empty), or an
// error naming WORKER_JOBS and the unknown names.
func Select(all []Job, names []string) ([]Job, error) {
	if len(names) == 0 {
		return all, nil
	}
	byName := map[string]Job{}
	var known []string
	for _, j := range all {
		byName[j.Name] = j
		known = append(known, j.Name)
	}
	sort.Strings(known)
	var out []Job
	var unknown []string
	seen := map[string]bool{}
	for _, n := range names {
		j, ok := byName[n]
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		if !seen[n] {
			out = append(out, j)
			seen[n] = true
		}
	}
	if len(unknown) > 0 {
		return nil, &config.Error{Var: "WORKER_JOBS", Msg: fmt.Sprintf("unknown job %s (registered: %s)",
			strings.Join(quote(unknown), ", "), strings.Join(known, ", "))}
	}
	return out, nil
}

// Find returns the job named name.
func Find(all []Job, name string) (Job, bool) {
	for _, j := range all {
		if j.Name == name {
			return j, true
		}
	}
	return Job{}, false
}

func quote(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
