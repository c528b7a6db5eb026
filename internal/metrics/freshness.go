package metrics

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bg-worker/bg-worker/internal/schedule"
)

// Defaults of the database-backed collector: a scrape waits at most DefaultDBTimeout for
// the database, and one replica sends at most one query set per DefaultDBCacheTTL however
// often (and however many at once) it is scraped.
const (
	DefaultDBTimeout  = 2 * time.Second
	DefaultDBCacheTTL = 2 * time.Second
)

// Query sets of the database-backed collector, the values of the "query" label of
// bgworker_db_metrics_up and bgworker_db_metrics_errors_total.
const (
	QueryJobs    = "jobs"
	QueryUploads = "uploads"
)

// JobState is one job as the database records it, fleet-wide.
type JobState struct {
	Job      string
	Interval time.Duration // worker_jobs.interval_ms
	// LastSuccess is when the newest succeeded run of the job finished (any replica, any
	// trigger); zero when the kept history has none.
	LastSuccess time.Time
	// Running counts the job's runs marked running.
	Running int
	// Paused: `bg-worker pause` holds the job (paused_until in the future); its leader
	// starts no new run, so its last success ages on purpose.
	Paused bool
	// Leaders are the worker ids holding the job's advisory lock (at most one; "" when
	// the holder's session does not show its application_name).
	Leaders []string
}

// JobsState is the jobs query set: the database clock and every registered job.
type JobsState struct {
	Now  time.Time // database clock when it was read
	Jobs []JobState
}

// UploadsState is the application's uploads table under R2_PREFIX.
type UploadsState struct {
	Pending, Due int64
}

// DBSource reads what the database-backed collector reports. StoreSource is the real
// one.
type DBSource interface {
	Jobs(ctx context.Context) (JobsState, error)
	Uploads(ctx context.Context) (UploadsState, error)
}

// Windows gives a job's tick windows (internal/schedule.Schedule satisfies it): Window
// returns the window containing t and the next one's start. A job without one has
// schedule.Every windows of its recorded interval.
type Windows interface {
	Window(t time.Time) (start, next time.Time)
}

// DBCollector reports, on every replica alike, what the database says about the fleet:
// each job's last success, next tick window, leader and runs in progress, and the
// uploads backlog. A scrape of any replica (leader or standby) answers the same.
//
// It queries at scrape time with a timeout, at most once per cache TTL (concurrent
// scrapes wait for the query set in flight and share its answer), so scrapes never pile
// up on the database. When a query set fails its series are left out of that scrape,
// bgworker_db_metrics_up{query} is 0 and bgworker_db_metrics_errors_total{query} counts
// the failure; /metrics itself still answers 200.
type DBCollector struct {
	src     atomic.Pointer[DBSource]
	timeout time.Duration
	ttl     time.Duration

	mu    sync.Mutex // held while a query set runs
	cache dbSnapshot
	log   *slog.Logger
	// schedules are the jobs' windows as this binary configures them (calendar schedules);
	// a job without one has windows of its recorded interval.
	schedules map[string]Windows
	// failing is the query sets whose last run failed (for logging changes only).
	failing map[string]bool

	interval, lastSuccess, nextTick, leader, running, paused *prometheus.Desc
	pending, due, up                                         *prometheus.Desc
	errors                                                   *prometheus.CounterVec
}

type dbSnapshot struct {
	at         time.Time // local clock (monotonic) when the query set ran; zero: never
	jobs       JobsState
	jobsErr    error
	uploads    UploadsState
	uploadsErr error
}

// NewDBCollector returns a collector without a source (it reports
// bgworker_db_metrics_up 0 until Attach). Zero durations take the defaults.
func NewDBCollector(timeout, ttl time.Duration) *DBCollector {
	if timeout <= 0 {
		timeout = DefaultDBTimeout
	}
	if ttl <= 0 {
		ttl = DefaultDBCacheTTL
	}
	job := []string{"job"}
	c := &DBCollector{
		timeout: timeout, ttl: ttl,
		interval: prometheus.NewDesc("bgworker_job_interval_seconds",
			"The job's tick interval as recorded in the database (from the database, on every replica).", job, nil),
		lastSuccess: prometheus.NewDesc("bgworker_last_success_timestamp_seconds",
			"When the job's newest succeeded run finished, Unix time (from the database, on every replica; absent while the run history has none).", job, nil),
		nextTick: prometheus.NewDesc("bgworker_next_tick_timestamp_seconds",
			"Start of the job's next tick window (its interval's next multiple, or its calendar schedule's next instant) on the database clock, Unix time (from the database, on every replica).", job, nil),
		leader: prometheus.NewDesc("bgworker_leader",
			"1 for the replica (worker_id) that holds the job's lock (from the database, on every replica; absent while nobody leads the job).", []string{"job", "worker_id"}, nil),
		paused: prometheus.NewDesc("bgworker_job_paused",
			"1 while the job is paused fleet-wide (bg-worker pause), else 0 (from the database, on every replica).", job, nil),
		running: prometheus.NewDesc("bgworker_runs_in_progress",
			"Runs of the job marked running in job_runs (from the database, on every replica).", job, nil),
		pending: prometheus.NewDesc("bgworker_uploads_pending",
			"PENDING uploads under R2_PREFIX in the application's uploads table (from the database, on every replica).", nil, nil),
		due: prometheus.NewDesc("bgworker_uploads_due",
			"PENDING uploads under R2_PREFIX whose next check is due now (from the database, on every replica).", nil, nil),
		up: prometheus.NewDesc("bgworker_db_metrics_up",
			"1 when the last database query set behind the bgworker_* gauges read from the database succeeded, by query set (jobs, uploads).", []string{"query"}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgworker_db_metrics_errors_total",
			Help: "Failed database query sets behind the gauges read from the database, by query set (jobs, uploads).",
		}, []string{"query"}),
	}
	// Both series exist from the start, so increase() sees the first failure.
	c.errors.WithLabelValues(QueryJobs)
	c.errors.WithLabelValues(QueryUploads)
	return c
}

// Attach sets the database source (once the store is connected and the uploads mapping
// checked); nil detaches. The cached answer is dropped. A query set that fails after one
// that succeeded (and the first failure) is logged on log, when not nil, once per change.
func (c *DBCollector) Attach(src DBSource, log *slog.Logger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = log
	if src == nil {
		c.src.Store(nil)
	} else {
		c.src.Store(&src)
	}
	c.cache = dbSnapshot{}
}

// SetSchedule gives job's windows for bgworker_next_tick_timestamp_seconds (a calendar
// schedule's next instant); without it the next tick is the next multiple of the job's
// recorded interval on the database clock.
func (c *DBCollector) SetSchedule(job string, w Windows) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.schedules == nil {
		c.schedules = map[string]Windows{}
	}
	c.schedules[job] = w
}

func (c *DBCollector) schedule(job string) Windows {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.schedules[job]
}

// Describe implements prometheus.Collector.
func (c *DBCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.interval, c.lastSuccess, c.nextTick, c.leader, c.running, c.paused, c.pending, c.due, c.up} {
		ch <- d
	}
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *DBCollector) Collect(ch chan<- prometheus.Metric) {
	s, attached := c.snapshot()
	upJobs, upUploads := 0.0, 0.0
	if attached && s.jobsErr == nil {
		upJobs = 1
		// The database clock now, from its reading at query time plus the (monotonic)
		// time since: the next window stays right while the answer is cached.
		now := s.jobs.Now.Add(time.Since(s.at))
		for _, j := range s.jobs.Jobs {
			ch <- prometheus.MustNewConstMetric(c.interval, prometheus.GaugeValue, j.Interval.Seconds(), j.Job)
			if !j.LastSuccess.IsZero() {
				ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, unixSeconds(j.LastSuccess), j.Job)
			}
			w := c.schedule(j.Job)
			if w == nil && j.Interval >= time.Millisecond {
				w = schedule.Every(j.Interval)
			}
			if w != nil {
				if _, next := w.Window(now); !next.IsZero() {
					ch <- prometheus.MustNewConstMetric(c.nextTick, prometheus.GaugeValue, unixSeconds(next), j.Job)
				}
			}
			seen := map[string]bool{}
			for _, w := range j.Leaders {
				if !seen[w] {
					seen[w] = true
					ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, 1, j.Job, w)
				}
			}
			ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(j.Running), j.Job)
			paused := 0.0
			if j.Paused {
				paused = 1
			}
			ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, j.Job)
		}
	}
	if attached && s.uploadsErr == nil {
		upUploads = 1
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.uploads.Pending))
		ch <- prometheus.MustNewConstMetric(c.due, prometheus.GaugeValue, float64(s.uploads.Due))
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, upJobs, QueryJobs)
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, upUploads, QueryUploads)
	c.errors.Collect(ch)
}

// snapshot returns the cached answer, or runs a query set when it is older than the TTL.
// Only one query set runs at a time: concurrent scrapes wait for it (at most the
// timeout) and share its answer, failed or not.
func (c *DBCollector) snapshot() (dbSnapshot, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.src.Load()
	if p == nil {
		return dbSnapshot{}, false
	}
	if !c.cache.at.IsZero() && time.Since(c.cache.at) < c.ttl {
		return c.cache, true
	}
	src := *p
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s := dbSnapshot{}
	s.jobs, s.jobsErr = src.Jobs(ctx)
	s.uploads, s.uploadsErr = src.Uploads(ctx)
	s.at = time.Now()
	c.record(QueryJobs, s.jobsErr)
	c.record(QueryUploads, s.uploadsErr)
	c.cache = s
	return s, true
}

// record counts a failed query set and logs changes between failing and working.
func (c *DBCollector) record(query string, err error) {
	if c.failing == nil {
		c.failing = map[string]bool{}
	}
	was := c.failing[query]
	c.failing[query] = err != nil
	if err != nil {
		c.errors.WithLabelValues(query).Inc()
	}
	if c.log == nil {
		return
	}
	switch {
	case err != nil && !was:
		c.log.Warn("Metrics from the database unavailable; their series are left out of /metrics", "query", query, "error", err)
	case err == nil && was:
		c.log.Info("Metrics from the database available again", "query", query)
	}
}

// Errors returns the last query set's errors (nil when it succeeded or none ran yet).
func (c *DBCollector) Errors() (jobs, uploads error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cache.jobsErr, c.cache.uploadsErr
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }
