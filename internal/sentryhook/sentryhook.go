// Package sentryhook reports runs to Sentry (optional: SENTRY_DSN). It is a
// scheduler.RunHook:
//
//   - a run that ends failed, cancelled or abandoned (a timeout is a failed run) is an
//     error event with the job, run id, worker id, tick and the error chain; a panic is a
//     fatal event with the job's stack (scheduler.PanicError.Stack). Events are grouped by
//     a fingerprint of job, status and error class (Class), never by a message carrying
//     ids or keys. A fingerprint sends its first failure at once and then at most one event
//     per RepeatEvery (default 30m) while it repeats, each carrying the number of failures
//     it stands for; a success after failures adds a "recovered" breadcrumb, seen on the
//     job's next event, and logs it.
//   - every job is a Sentry Crons monitor (slug: the job name): the leader sends an
//     in_progress check-in when a scheduled run starts and ok or error, with the same
//     check_in_id, when it ends, so Sentry's missed check-in alerts when no replica runs
//     the job. A job with a tick shorter than CheckInEvery (1m) checks in for the first
//     run of each minute only (tick_at's minute), so a 5 s job sends one pair a minute,
//     well inside Sentry's per-monitor check-in rate limit. Manual runs (`once`) send
//     events but no check-ins: they are not the schedule.
//   - nothing secret is sent: BeforeSend replaces the configured secrets (the DSN and its
//     keys, the database password, R2 keys) wherever they occur, hides URL user info and
//     password= values, and replaces every double- or back-quoted string with "[filtered]":
//     errors quote object keys, bucket names and request URLs, and object keys are treated
//     as personal data (a key often names a user or a file of theirs).
//   - nothing waits for Sentry: RunStarted and RunEnded only put a small record on a
//     bounded queue (QueueSize; dropped and counted when full), one goroutine turns them
//     into events for the SDK's bounded, asynchronous HTTPTransport (100 envelopes,
//     dropped when full), whose requests time out after HTTPTimeout. Flush (on shutdown) waits at most its timeout.
package sentryhook

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/getsentry/sentry-go"

	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
)

// Options configures a Hook.
type Options struct {
	DSN         string
	Environment string
	Release     string
	WorkerID    string
	// Secrets are replaced by "[redacted]" wherever they occur in an event (strings
	// shorter than 4 characters are ignored: they would mangle everything).
	Secrets []string
	// RepeatEvery is the shortest time between two events of one fingerprint (30m).
	RepeatEvery time.Duration
	// CheckInEvery is the shortest time between two check-in pairs of one job (1m).
	CheckInEvery time.Duration
	// HTTPTimeout bounds each request to Sentry (5s).
	HTTPTimeout time.Duration
	// QueueSize bounds the records waiting for the sender goroutine (256).
	QueueSize int
	Logger    *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Hook is a scheduler.RunHook that reports to Sentry; see the package documentation.
type Hook struct {
	opts   Options
	client *sentry.Client
	log    *slog.Logger
	scrub  *scrubber

	mu      sync.Mutex
	closed  bool
	jobs    map[string]*jobState
	prints  map[string]*printState
	queue   chan item     // never closed: a run ending during Close must not panic
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the sender goroutine has returned
	dropped atomic.Int64
	lastLog atomic.Int64 // unix nanos of the last "queue full" warning
}

type jobState struct {
	lastSlot time.Time             // the check-in slot of the last in_progress sent
	open     map[int64]openCheckIn // run id → its in_progress check-in
	failing  int                   // failed runs since the last success
	since    time.Time             // first of them
}

type openCheckIn struct {
	id      sentry.EventID
	started time.Time
}

type printState struct {
	last       time.Time // last event sent
	suppressed int       // failures since, not sent
}

// item is one unit of work for the sender goroutine.
type item struct {
	checkIn   *sentry.CheckIn
	monitor   *sentry.MonitorConfig
	event     *failure
	recovered *recovery
	flush     chan struct{}
}

type failure struct {
	info        scheduler.RunInfo
	status      string
	err         error
	class       string
	fingerprint []string
	repeats     int // failures this event stands for (1 + suppressed ones)
	at          time.Time
}

type recovery struct {
	job      string
	failures int
	since    time.Time
	at       time.Time
}

// New builds a Hook and starts its sender goroutine. The DSN must be valid (config
// checks it); the error never quotes it.
func New(o Options) (*Hook, error) {
	if o.RepeatEvery <= 0 {
		o.RepeatEvery = 30 * time.Minute
	}
	if o.CheckInEvery <= 0 {
		o.CheckInEvery = time.Minute
	}
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = 5 * time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Release == "" {
		o.Release = "bg-worker@devel" // never the SDK's guess (it may run git)
	}
	h := &Hook{opts: o, log: o.Logger, scrub: newScrubber(o.Secrets),
		jobs: map[string]*jobState{}, prints: map[string]*printState{},
		queue: make(chan item, o.QueueSize), stop: make(chan struct{}), done: make(chan struct{})}
	// The SDK's HTTPTransport: a bounded buffer (dropping when full, never blocking), one
	// sender with a request timeout, Sentry's rate limits honoured, and a Flush that waits
	// for everything handed to it (the newer telemetry buffer can lose an item in flight
	// at Flush, which a process about to exit cannot afford).
	tr := sentry.NewHTTPTransport()
	tr.BufferSize = 100
	tr.Timeout = o.HTTPTimeout
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:         o.DSN,
		Environment: o.Environment,
		Release:     o.Release,
		ServerName:  o.WorkerID,
		Transport:   tr,
		// Our own breadcrumbs only (the job scopes'); no PII from integrations.
		SendDefaultPII: false,
		MaxBreadcrumbs: 20,
		// No source lines around stack frames (ContextifyFrames reads the files).
		Integrations: func(in []sentry.Integration) []sentry.Integration {
			out := in[:0]
			for _, i := range in {
				if i.Name() != "ContextifyFrames" {
					out = append(out, i)
				}
			}
			return out
		},
		BeforeSend: func(e *sentry.Event, _ *sentry.EventHint) *sentry.Event { return h.scrub.event(e) },
		// Check-ins skip BeforeSend; they carry only slugs, ids and statuses.
	})
	if err != nil {
		return nil, errors.New("sentry: the DSN is not usable (see SENTRY_DSN)")
	}
	h.client = client
	go h.loop()
	return h, nil
}

var _ scheduler.RunHook = (*Hook)(nil)

// RunStarted sends the in_progress check-in of a scheduled run when the job's check-in
// slot is new. It never blocks.
func (h *Hook) RunStarted(info scheduler.RunInfo) {
	if info.Trigger != store.TriggerSchedule {
		return
	}
	now := h.opts.Now()
	slotOf := info.TickAt
	if slotOf.IsZero() {
		slotOf = now
	}
	slot := slotOf.Truncate(h.opts.CheckInEvery)
	h.mu.Lock()
	js := h.job(info.Job)
	if !slot.After(js.lastSlot) {
		h.mu.Unlock()
		return // this slot checked in already: rate limit
	}
	js.lastSlot = slot
	id := sentry.EventID(newCheckInID())
	js.open[info.RunID] = openCheckIn{id: id, started: now}
	h.mu.Unlock()
	h.enqueue(item{checkIn: &sentry.CheckIn{ID: id, MonitorSlug: Slug(info.Job), Status: sentry.CheckInStatusInProgress},
		monitor: MonitorConfig(info.Interval, info.Timeout, h.opts.CheckInEvery)})
}

// RunEnded closes the run's check-in (if it opened one) and reports a failure, within
// the fingerprint's rate. It never blocks.
func (h *Hook) RunEnded(info scheduler.RunInfo, status string, err error) {
	now := h.opts.Now()
	h.mu.Lock()
	js := h.job(info.Job)
	ci, hasCheckIn := js.open[info.RunID]
	delete(js.open, info.RunID)
	var rec *recovery
	var fail *failure
	if status == store.StatusSucceeded {
		if js.failing > 0 {
			rec = &recovery{job: info.Job, failures: js.failing, since: js.since, at: now}
			js.failing = 0
		}
	} else {
		if js.failing == 0 {
			js.since = now
		}
		js.failing++
		class := classOf(status, err, h.scrub.text)
		fp := []string{"bg-worker", info.Job, status, class}
		key := strings.Join(fp, "\x00")
		ps := h.prints[key]
		if ps == nil {
			ps = &printState{}
			h.prints[key] = ps
			h.trimPrints(now)
		}
		if ps.last.IsZero() || now.Sub(ps.last) >= h.opts.RepeatEvery {
			fail = &failure{info: info, status: status, err: err, class: class, fingerprint: fp,
				repeats: ps.suppressed + 1, at: now}
			ps.last, ps.suppressed = now, 0
		} else {
			ps.suppressed++
		}
	}
	h.mu.Unlock()
	if hasCheckIn {
		st := sentry.CheckInStatusOK
		if status != store.StatusSucceeded {
			st = sentry.CheckInStatusError
		}
		h.enqueue(item{checkIn: &sentry.CheckIn{ID: ci.id, MonitorSlug: Slug(info.Job), Status: st, Duration: now.Sub(ci.started)},
			monitor: MonitorConfig(info.Interval, info.Timeout, h.opts.CheckInEvery)})
	}
	if rec != nil {
		h.log.Info("Job recovered", "job", info.Job, "failed_runs", rec.failures, "failing_since", rec.since.Format(time.RFC3339))
		h.enqueue(item{recovered: rec})
	}
	if fail != nil {
		h.enqueue(item{event: fail})
	}
}

// job returns the job's state; h.mu held.
func (h *Hook) job(name string) *jobState {
	js := h.jobs[name]
	if js == nil {
		js = &jobState{open: map[int64]openCheckIn{}}
		h.jobs[name] = js
	}
	// A run whose end never came (given up by the leader) must not pin memory forever.
	if len(js.open) > 64 {
		for id := range js.open {
			delete(js.open, id)
			if len(js.open) <= 32 {
				break
			}
		}
	}
	return js
}

// maxPrints bounds the fingerprints remembered; the oldest quiet ones go first.
const maxPrints = 512

func (h *Hook) trimPrints(now time.Time) {
	if len(h.prints) <= maxPrints {
		return
	}
	type kv struct {
		k    string
		last time.Time
	}
	var all []kv
	for k, p := range h.prints {
		if now.Sub(p.last) >= h.opts.RepeatEvery && p.suppressed == 0 {
			delete(h.prints, k)
			continue
		}
		all = append(all, kv{k, p.last})
	}
	if len(all) <= maxPrints {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i].last.Before(all[j].last) })
	for _, e := range all[:len(all)-maxPrints] {
		delete(h.prints, e.k)
	}
}

func (h *Hook) enqueue(it item) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return
	}
	select {
	case h.queue <- it:
	default:
		n := h.dropped.Add(1)
		now := time.Now().UnixNano()
		if last := h.lastLog.Load(); now-last > int64(time.Minute) && h.lastLog.CompareAndSwap(last, now) {
			h.log.Warn("Sentry queue full: dropping reports (is Sentry reachable?)", "dropped_total", n)
		}
	}
}

// loop is the sender goroutine: everything that touches the SDK runs here.
func (h *Hook) loop() {
	defer close(h.done)
	scopes := map[string]*sentry.Scope{}
	scope := func(job string) *sentry.Scope {
		s := scopes[job]
		if s == nil {
			s = sentry.NewScope()
			scopes[job] = s
		}
		return s
	}
	handle := func(it item) {
		switch {
		case it.flush != nil:
			close(it.flush)
		case it.checkIn != nil:
			h.client.CaptureCheckIn(it.checkIn, it.monitor, nil)
		case it.recovered != nil:
			r := it.recovered
			scope(r.job).AddBreadcrumb(&sentry.Breadcrumb{
				Category: "bg-worker.run", Level: sentry.LevelInfo, Timestamp: r.at,
				Message: fmt.Sprintf("%s recovered after %d failed runs (failing since %s)", r.job, r.failures, r.since.UTC().Format(time.RFC3339)),
				Data:    map[string]any{"job": r.job, "failed_runs": r.failures},
			}, 20)
		case it.event != nil:
			h.send(it.event, scope(it.event.info.Job))
		}
	}
	for {
		select {
		case it := <-h.queue:
			handle(it)
		case <-h.stop:
			for { // hand what is queued to the SDK, then return
				select {
				case it := <-h.queue:
					handle(it)
				default:
					return
				}
			}
		}
	}
}

func (h *Hook) send(f *failure, scope *sentry.Scope) {
	e := buildEvent(f, h.opts.WorkerID, h.client.Options().MaxErrorDepth)
	h.client.CaptureEvent(e, &sentry.EventHint{OriginalException: f.err}, scope)
}

// Flush waits, at most timeout, until the records queued so far are handed to the SDK
// and the SDK has sent them. It reports whether everything went out.
func (h *Hook) Flush(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	done := make(chan struct{})
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if !closed {
		select {
		case h.queue <- item{flush: done}:
		case <-h.done: // closed meanwhile: the sender drained the queue
		case <-time.After(time.Until(deadline)):
			return false
		}
		select {
		case <-done:
		case <-h.done:
		case <-time.After(time.Until(deadline)):
			return false
		}
	}
	return h.client.Flush(max(time.Until(deadline), time.Millisecond))
}

// Close flushes (at most timeout) and stops the sender; later runs report nothing.
func (h *Hook) Close(timeout time.Duration) bool {
	ok := h.Flush(timeout)
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.stop)
	}
	h.mu.Unlock()
	select {
	case <-h.done:
	case <-time.After(100 * time.Millisecond):
	}
	return ok
}

// Slug is the monitor slug of a job: lower case letters, digits, '-' and '_', at most 50.
func Slug(job string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(job) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 50 {
		s = s[:50]
	}
	if s == "" {
		s = "job"
	}
	return s
}

// maxMinutes is Sentry's largest check-in margin and max runtime (28 days).
const maxMinutes = 40320

// MonitorConfig is a job's monitor: an interval schedule of the job's check-in period
// (its tick, at least checkInEvery) in whole minutes rounded up; a check-in margin of
// that period, at least 5 minutes but never more than the job's timeout (a run may
// legitimately start late by one skipped window or a takeover, and a long run delays
// the next check-in); a max runtime of the timeout plus one minute (the run is cancelled
// at its timeout and reports error then).
func MonitorConfig(interval, timeout, checkInEvery time.Duration) *sentry.MonitorConfig {
	period := max(interval, checkInEvery, time.Minute)
	if timeout <= 0 {
		timeout = jobs.DefaultTimeout(interval)
	}
	every := ceilMinutes(period)
	margin := ceilMinutes(min(timeout, max(period, 5*time.Minute)))
	return &sentry.MonitorConfig{
		Schedule:      sentry.IntervalSchedule(every, sentry.MonitorScheduleUnitMinute),
		CheckInMargin: min(max(margin, 1), maxMinutes),
		MaxRuntime:    min(ceilMinutes(timeout)+1, maxMinutes),
	}
}

func ceilMinutes(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Minutes())))
}
