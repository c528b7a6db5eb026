// Package metrics defines bg-worker's Prometheus metrics on a registry of its own (no
// global registration). Labels are low-cardinality: job names, outcomes, reasons; never
// an upload key.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector.
type Metrics struct {
	Registry *prometheus.Registry

	RunsTotal      *prometheus.CounterVec   // job, status
	RunDuration    *prometheus.HistogramVec // job
	LockAttempts   *prometheus.CounterVec   // job, result
	Leader         *prometheus.GaugeVec     // job: 1 while this replica holds the lock
	TicksSkipped   *prometheus.CounterVec   // job
	BucketRequests *prometheus.CounterVec   // op, outcome
	UploadsChecked *prometheus.CounterVec   // result: uploaded, failed, pending, error
	FanoutInFlight prometheus.Gauge
	// DB reports what the database says about the whole fleet (every replica alike):
	// last success, next tick, leader and runs in progress per job, uploads backlog. It
	// reports bgworker_db_metrics_up 0 until DB.Attach gives it the store.
	DB *DBCollector
}

// Label values the counters are created with up front (at 0), so that a first failure
// shows up in increase() and rate() instead of appearing as a new series.
var (
	runStatuses     = []string{"succeeded", "failed", "cancelled", "abandoned"}
	bucketOps       = []string{"head", "head_bucket", "list", "delete"}
	bucketOutcomes  = []string{"ok", "not_found", "error"}
	uploadResults   = []string{"uploaded", "failed", "pending", "error"}
	lockAttemptKind = []string{"acquired", "held_elsewhere", "error", "cooldown"}
)

// New builds the collectors and registers them with a new registry (plus Go and process
// collectors).
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		RunsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgworker_runs_total", Help: "Job runs by outcome.",
		}, []string{"job", "status"}),
		RunDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bgworker_run_duration_seconds", Help: "Duration of job runs.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}, []string{"job"}),
		LockAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgworker_lock_attempts_total", Help: "Attempts to take a job's lock by result (acquired, held_elsewhere, error, cooldown).",
		}, []string{"job", "result"}),
		Leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgworker_lock_held", Help: "1 while this replica holds the job's lock (leads it).",
		}, []string{"job"}),
		TicksSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgworker_ticks_skipped_total", Help: "Tick windows skipped because the previous run still ran.",
		}, []string{"job"}),
		BucketRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgworker_bucket_requests_total", Help: "Bucket requests by operation and outcome.",
		}, []string{"op", "outcome"}),
		UploadsChecked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgworker_uploads_checked_total", Help: "Uploads checked by resulting status (uploaded, failed, pending, error).",
		}, []string{"result"}),
		FanoutInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bgworker_head_in_flight", Help: "HeadObject requests in flight.",
		}),
		DB: NewDBCollector(DefaultDBTimeout, DefaultDBCacheTTL),
	}
	for _, op := range bucketOps {
		for _, o := range bucketOutcomes {
			m.BucketRequests.WithLabelValues(op, o)
		}
	}
	for _, r := range uploadResults {
		m.UploadsChecked.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.RunsTotal, m.RunDuration, m.LockAttempts, m.Leader, m.TicksSkipped,
		m.BucketRequests, m.UploadsChecked, m.FanoutInFlight, m.DB,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// initJob makes sure a job's series exist (at 0 when new) once the scheduler reports on it
// (a standby included: its bgworker_lock_held is 0, not absent). For existing series it is
// a few map look-ups.
func (m *Metrics) initJob(job string) {
	for _, s := range runStatuses {
		m.RunsTotal.WithLabelValues(job, s)
	}
	for _, r := range lockAttemptKind {
		m.LockAttempts.WithLabelValues(job, r)
	}
	m.RunDuration.WithLabelValues(job)
	m.TicksSkipped.WithLabelValues(job)
	m.Leader.WithLabelValues(job)
}

// RunFinished implements scheduler.Observer.
func (m *Metrics) RunFinished(job, status string, d time.Duration) {
	m.initJob(job)
	m.RunsTotal.WithLabelValues(job, status).Inc()
	m.RunDuration.WithLabelValues(job).Observe(d.Seconds())
}

// LockAttempt implements scheduler.Observer.
func (m *Metrics) LockAttempt(job, result string) {
	m.initJob(job)
	m.LockAttempts.WithLabelValues(job, result).Inc()
}

// Leading implements scheduler.Observer.
func (m *Metrics) Leading(job string, leading bool) {
	m.initJob(job)
	v := 0.0
	if leading {
		v = 1
	}
	m.Leader.WithLabelValues(job).Set(v)
}

// TickSkipped implements scheduler.Observer.
func (m *Metrics) TickSkipped(job string) {
	m.initJob(job)
	m.TicksSkipped.WithLabelValues(job).Inc()
}

// BucketRequest counts one bucket request.
func (m *Metrics) BucketRequest(op, outcome string) {
	m.BucketRequests.WithLabelValues(op, outcome).Inc()
}
