package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/store"
)

// sync-uploads tuning. A page bounds the rows read at once, a batch the rows written by
// one statement; a batch is also written when flushEvery passes, so a slow fan-out still
// commits its progress (and a run that loses its lock loses at most that much work).
const (
	syncPageSize   = 1000
	syncBatchSize  = 1000
	syncFlushEvery = time.Second
)

// errNoBucket is a bucket job's error when the R2 variables were not set.
var errNoBucket = errors.New("no bucket configured: set R2_ACCOUNT_ID (or R2_ENDPOINT), R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY and R2_BUCKET_NAME")

// syncUploads verifies PENDING uploads against the bucket with HeadObject.
//
// Each run: count the uploads due at the run's start; if any, check the bucket once (a
// missing bucket answers HEAD-object with the same bodiless 404 as a missing object, and
// wrong credentials must fail the run, not the uploads); read the due uploads in keyset pages; HEAD them with at
// most SYNC_CONCURRENCY requests in flight; stream the answers into batched, fenced
// writes. Only a definite answer changes a row: the object exists (UPLOADED with size,
// ETag, content type, verified_at) or it is missing (FAILED past SYNC_PENDING_TTL,
// otherwise still PENDING with check_count + 1 and the next check one tick after the
// run's tick window, doubling per check up to SYNC_MAX_BACKOFF). A transient or
// unclassified error leaves the row exactly as it was (next_check_at included, so the
// next run retries it) and is counted; the run fails only when every HEAD failed that
// way. Access denied or a vanished bucket in the middle of a run stops it.
//
// Only uploads whose key starts with R2_PREFIX are checked: keys outside it do not
// belong to this worker (a token scoped to the prefix could not HEAD them anyway).
type syncUploads struct {
	bucket      *bucket.Client
	metrics     *metrics.Metrics
	prefix      string
	concurrency int
	ttl         time.Duration
	backoff     store.Backoff

	table string // the application's table, for messages

	pageSize, batchSize int
	flushEvery          time.Duration
	// abortAfter consecutive transient HEAD failures (no definite answer in between)
	// mean the bucket stopped answering: the run stops instead of working through the
	// backlog one timeout at a time.
	abortAfter int64
	stallLimit time.Duration
}

// Run bounds (README, "Failure bounds"): a run stops starting HEADs after
// syncBudgetBase (at least syncBudgetTicks intervals) plus syncBudgetPerWave for every
// SYNC_CONCURRENCY due uploads; what was answered is written, the rest is due next tick.
const (
	syncBudgetBase    = 30 * time.Second
	syncBudgetTicks   = 5
	syncBudgetPerWave = time.Second
)

// budget is how long a run with due uploads may keep starting HEADs.
func (s *syncUploads) budget(due int64) time.Duration {
	waves := (due + int64(s.concurrency) - 1) / int64(s.concurrency)
	return max(syncBudgetBase, syncBudgetTicks*s.backoff.Tick) + time.Duration(waves)*syncBudgetPerWave
}

func newSyncUploads(d Deps) Job {
	s := newSyncUploadsJob(d)
	return Job{
		Name:        "sync-uploads",
		Interval:    s.backoff.Tick,
		UsesBucket:  true,
		Description: "verifies due PENDING uploads with HeadObject (UPLOADED / FAILED / backoff)",
		Run:         s.run,
	}
}

func newSyncUploadsJob(d Deps) *syncUploads {
	// The values come validated from config.Load (or config.Defaults): no defaults here.
	c := d.Config
	tick, conc, ttl := c.Interval, c.SyncConcurrency, c.SyncPendingTTL
	maxBackoff := max(c.SyncMaxBackoff, tick)
	return &syncUploads{
		bucket: d.Bucket, metrics: d.Metrics, prefix: c.R2Prefix,
		concurrency: conc, ttl: ttl, backoff: store.Backoff{Tick: tick, Max: maxBackoff},
		table:    c.Uploads.QualifiedTable(),
		pageSize: syncPageSize, batchSize: syncBatchSize, flushEvery: syncFlushEvery,
		abortAfter: int64(max(2*conc, 16)),
		stallLimit: syncStallLimit,
	}
}

// headResult is one answer: the object exists (found), it does not, its key is rejected
// (rejected: an answer about this upload), or a transient error (retry: no answer).
type headResult struct {
	u        store.DueUpload
	found    bool
	obj      bucket.Object
	rejected error
	retry    error
}

// syncCounts are a run's counters, shared by the fan-out and the writer.
type syncCounts struct {
	heads, exists, missing, rejected, errors, aborted atomic.Int64
	uploaded, failed, pending, retried, notWritten    atomic.Int64
	batches                                           atomic.Int64
	// consecutive transient failures since the last definite answer
	consecutive atomic.Int64
	// HEADs in flight, and when one last completed (unix ns): the stall watch
	inFlight, lastDone atomic.Int64

	firstErrOnce sync.Once
	firstErr     error
}

func (c *syncCounts) noteError(err error) {
	c.errors.Add(1)
	c.firstErrOnce.Do(func() { c.firstErr = err })
}

func (s *syncUploads) run(ctx context.Context, r Run) error {
	start := time.Now()
	log := r.Logger()
	if s.bucket == nil {
		log.Error("Cannot check uploads: " + errNoBucket.Error())
		return errNoBucket
	}
	// New PENDING rows of the application's table get the worker's state row (fenced: it
	// is a write like any other; skipped, with its transaction, when there is none), then
	// the summary counts what is due.
	var registered int64
	fresh, err := r.Store().UploadAnyUnregistered(ctx, s.prefix)
	if err != nil {
		return s.dbErr(log, err)
	}
	if fresh {
		if err := r.Fenced(ctx, func(tx *store.Store) error {
			var err error
			registered, err = tx.UploadRegister(ctx, s.prefix)
			return err
		}); err != nil {
			return s.dbErr(log, err)
		}
	}
	r.Stats().Set("registered", registered)
	sum, err := r.Store().UploadDueSummary(ctx, s.prefix)
	if err != nil {
		return s.dbErr(log, err)
	}
	args := []any{"due", sum.Due}
	if s.prefix != "" {
		args = append(args, "prefix", s.prefix)
	}
	// A tick with nothing due logs only its summary at info (an idle leader would
	// otherwise write three lines every tick).
	level := slog.LevelInfo
	if sum.Due == 0 {
		level = slog.LevelDebug
	}
	log.Log(ctx, level, "Starting sync job...")
	log.Log(ctx, level, fmt.Sprintf("Found %d PENDING uploads in DB", sum.Pending), args...)
	r.Stats().Set("pending_total", sum.Pending)
	r.Stats().Set("due", sum.Due)

	var c syncCounts
	var runErr error
	if sum.Due > 0 {
		// Only now the bucket: an idle tick costs no request (and no Class B charge).
		if err := s.bucket.CheckBucket(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			log.Error("Bucket check failed; no upload was checked or changed", "error", err)
			return err
		}
		runErr = s.check(ctx, r, sum, &c)
	}

	st := r.Stats()
	checked := c.exists.Load() + c.missing.Load() + c.rejected.Load()
	st.Set("checked", checked)
	st.Set("head_requests", c.heads.Load())
	st.Set("uploaded", c.uploaded.Load())
	st.Set("failed", c.failed.Load())
	st.Set("still_pending", c.pending.Load())
	st.Set("errors", c.errors.Load())
	st.Set("rejected", c.rejected.Load())
	st.Set("retry_later", c.retried.Load())
	st.Set("not_written", c.notWritten.Load())
	st.Set("batches", c.batches.Load())

	if runErr == nil && c.errors.Load() > 0 && checked == 0 {
		runErr = fmt.Errorf("all %d HEAD requests failed; first: %w", c.errors.Load(), c.firstErr)
	}
	summary := []any{
		"checked", checked, "uploaded", c.uploaded.Load(), "failed", c.failed.Load(),
		"still_pending", c.pending.Load(), "errors", c.errors.Load(),
		"duration", time.Since(start).Round(time.Millisecond),
	}
	if n := c.notWritten.Load(); n > 0 {
		summary = append(summary, "not_written", n)
	}
	if n := c.aborted.Load(); n > 0 {
		summary = append(summary, "aborted", n)
	}
	if n := c.rejected.Load(); n > 0 {
		summary = append(summary, "rejected", n)
	}
	if c.firstErr != nil && !errors.Is(runErr, c.firstErr) {
		summary = append(summary, "first_error", c.firstErr.Error())
	}
	if runErr != nil {
		runErr = s.dbErr(nil, runErr)
		log.Error("Sync job failed", append(summary, "error", runErr.Error())...)
		return runErr
	}
	log.Info("Sync job completed", summary...)
	return nil
}

// check runs the fan-out and the writer over the uploads due at sum.AsOf.
func (s *syncUploads) check(ctx context.Context, r Run, sum store.UploadDue, c *syncCounts) error {
	// fctx stops the reader and the fan-out; the writer keeps ctx so that answers already
	// in hand are still written when the fan-out stops for a bucket error.
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := s.watchStall(fctx, c, cancel)
	defer stopWatch()
	budget := s.budget(sum.Due)
	deadlineErr := fmt.Errorf("run budget %s exceeded (%d due, SYNC_CONCURRENCY %d): stopped starting HEADs; the rest are due next tick", budget, sum.Due, s.concurrency)
	fctx, cancelBudget := context.WithTimeoutCause(fctx, budget, deadlineErr)
	defer cancelBudget()
	g, gctx := errgroup.WithContext(fctx)
	g.SetLimit(s.concurrency)

	results := make(chan headResult, s.batchSize)
	writeDone := make(chan error, 1)
	// Backoffs count from the start of this run's tick window (database clock), so a
	// one-tick backoff makes the upload due at the next window's run.
	backoff := s.backoff
	backoff.From = r.TickAt()
	if backoff.From.IsZero() || backoff.From.After(sum.AsOf) {
		backoff.From = sum.AsOf
	}
	go func() { writeDone <- s.write(ctx, r, sum.AsOf, backoff, results, cancel, c) }()

	readErr := s.fanOut(gctx, r, sum, g, results, c)
	headErr := g.Wait()
	close(results)
	writeErr := <-writeDone

	switch {
	case writeErr != nil:
		return writeErr
	case headErr != nil:
		return headErr
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case errors.Is(context.Cause(fctx), deadlineErr):
		return deadlineErr
	case errors.Is(context.Cause(fctx), errBucketStalled):
		return context.Cause(fctx)
	case readErr != nil:
		return readErr
	}
	return nil
}

// fanOut reads due uploads page by page and starts one HEAD per upload; g bounds how many
// run at once, so fanOut blocks (and reads no further page) while the limit is reached.
func (s *syncUploads) fanOut(ctx context.Context, r Run, sum store.UploadDue, g *errgroup.Group, results chan<- headResult, c *syncCounts) error {
	log := r.Logger()
	debug := log.Enabled(ctx, slog.LevelDebug)
	var after int64
	for {
		page, err := r.Store().UploadListDue(ctx, s.prefix, sum.AsOf, after, sum.MaxSeq, s.pageSize)
		if err != nil {
			return err
		}
		for _, u := range page {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			g.Go(func() error { return s.head(ctx, log, debug, u, results, c) })
		}
		// A short page, or one that reached the highest due seq, was the last: no empty
		// page is read after it.
		if len(page) < s.pageSize || page[len(page)-1].Seq >= sum.MaxSeq {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}

// head checks one upload. Only a bucket-wide definite error (access denied, no bucket)
// is returned: it stops the whole fan-out.
func (s *syncUploads) head(ctx context.Context, log *slog.Logger, debug bool, u store.DueUpload, results chan<- headResult, c *syncCounts) error {
	if ctx.Err() != nil {
		c.aborted.Add(1)
		return nil
	}
	if s.metrics != nil {
		s.metrics.FanoutInFlight.Inc()
	}
	c.inFlight.Add(1)
	obj, err := s.bucket.Head(ctx, u.Key)
	c.inFlight.Add(-1)
	c.lastDone.Store(time.Now().UnixNano())
	if s.metrics != nil {
		s.metrics.FanoutInFlight.Dec()
	}
	c.heads.Add(1)
	switch {
	case err == nil:
		c.exists.Add(1)
		c.consecutive.Store(0)
		if debug {
			log.Debug("Upload EXISTS in R2", "upload_id", u.ID, "key", u.Key, "size", obj.Size, "etag", obj.ETag)
		}
		results <- headResult{u: u, found: true, obj: obj}
	case errors.Is(err, bucket.ErrNotFound):
		c.missing.Add(1)
		c.consecutive.Store(0)
		if debug {
			log.Debug("Upload MISSING in R2", "upload_id", u.ID, "key", u.Key, "check_count", u.CheckCount)
		}
		results <- headResult{u: u, found: false}
	case errors.Is(err, bucket.ErrKeyRejected):
		// An answer about this upload's key: it backs off like a missing object and,
		// past the TTL, fails with the reason. It never fails the run.
		c.rejected.Add(1)
		c.consecutive.Store(0)
		if debug {
			log.Debug("Upload key REJECTED by the bucket", "upload_id", u.ID, "key", u.Key, "error", err)
		}
		results <- headResult{u: u, rejected: err}
	case errors.Is(err, bucket.ErrAccessDenied), errors.Is(err, bucket.ErrNoSuchBucket):
		return err
	case ctx.Err() != nil:
		c.aborted.Add(1) // stopped, not an answer
	default:
		c.noteError(err)
		if s.metrics != nil {
			s.metrics.UploadsChecked.WithLabelValues("error").Inc()
		}
		if debug {
			log.Debug("Upload check ERROR, status unchanged", "upload_id", u.ID, "key", u.Key, "error", err, "transient", bucket.IsTransient(err))
		}
		results <- headResult{u: u, retry: err}
		if n := c.consecutive.Add(1); n >= s.abortAfter {
			return &bucketDownError{n: n, last: err}
		}
	}
	return nil
}

// syncStallLimit: HEADs in flight and none completing for this long (three attempt
// timeouts) means the bucket stopped answering: the run stops rather than wait out every
// request's retries.
const syncStallLimit = 30 * time.Second

var errBucketStalled = errors.New("bucket not answering")

// watchStall stops the fan-out (cancel) when HEADs are in flight and none has completed
// for syncStallLimit; the returned func stops the watch.
func (s *syncUploads) watchStall(ctx context.Context, c *syncCounts, cancel context.CancelCauseFunc) func() {
	c.lastDone.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				idle := now.Sub(time.Unix(0, c.lastDone.Load()))
				if c.inFlight.Load() > 0 && idle > s.stallLimit {
					cancel(fmt.Errorf("%w: %d HEAD requests in flight and none answered for %s; stopped this run (the rest are due next tick)",
						errBucketStalled, c.inFlight.Load(), idle.Round(time.Second)))
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// bucketDownError stops a run whose HEADs keep failing with no definite answer.
type bucketDownError struct {
	n    int64
	last error
}

func (e *bucketDownError) Error() string {
	return fmt.Sprintf("bucket not answering: %d HEAD requests in a row failed; stopped this run (the failed uploads back off, the rest are due next tick); last: %v", e.n, e.last)
}
func (e *bucketDownError) Unwrap() error { return e.last }

// tableLockedError is a statement on the application's table cancelled by lock_timeout.
type tableLockedError struct {
	table string
	err   error
}

func (e *tableLockedError) Error() string {
	return fmt.Sprintf("uploads table %s is locked by another session (waited lock_timeout %s); nothing changed, the next tick tries again: %v",
		e.table, store.AppLockTimeout, e.err)
}
func (e *tableLockedError) Unwrap() error { return e.err }

// dbErr explains a statement the application's table lock cancelled (once: an error
// already explained passes through).
func (s *syncUploads) dbErr(log *slog.Logger, err error) error {
	var tl *tableLockedError
	if !store.IsLockTimeout(err) || errors.As(err, &tl) {
		return err
	}
	err = &tableLockedError{table: s.table, err: err}
	if log != nil {
		log.Error("Sync job blocked by a lock on the uploads table", "table", s.table, "error", err.Error())
	}
	return err
}

// write turns answers into status changes and writes them in fenced batches. On a write
// error it stops the fan-out (abort) and drains the rest without writing.
func (s *syncUploads) write(ctx context.Context, r Run, asOf time.Time, backoff store.Backoff, results <-chan headResult, abort context.CancelCauseFunc, c *syncCounts) error {
	batch := make([]store.UploadCheck, 0, s.batchSize)
	// The flush timer is armed by a batch's first row, so a batch is written when it is
	// full or flushEvery after it started, never as a sliver cut by a free-running tick.
	tick := time.NewTimer(s.flushEvery)
	tick.Stop()
	defer tick.Stop()
	failedBefore := asOf.Add(-s.ttl)
	var werr error

	flush := func() {
		if len(batch) == 0 {
			return
		}
		n := int64(len(batch))
		if werr != nil {
			c.notWritten.Add(n)
			batch = batch[:0]
			return
		}
		// upload_checks_apply locks the application's rows in id order and skips rows
		// someone else holds: the worker never waits on the application's row locks.
		var applied map[string]string
		err := r.Fenced(ctx, func(tx *store.Store) error {
			var err error
			applied, err = tx.UploadMarkChecked(ctx, batch, backoff)
			return err
		})
		batch = batch[:0]
		if err != nil {
			werr = fmt.Errorf("write results: %w", err)
			c.notWritten.Add(n)
			abort(werr)
			return
		}
		c.batches.Add(1)
		var up, fa, pe, re int64
		for _, st := range applied {
			switch st {
			case store.UploadUploaded:
				up++
			case store.UploadFailed:
				fa++
			case store.UploadPending:
				pe++
			case store.UploadRetry:
				re++
			}
		}
		c.uploaded.Add(up)
		c.failed.Add(fa)
		c.pending.Add(pe)
		c.retried.Add(re)
		c.notWritten.Add(n - int64(len(applied))) // rows no longer PENDING, or held locked by the application
		if s.metrics != nil {
			s.metrics.UploadsChecked.WithLabelValues("uploaded").Add(float64(up))
			s.metrics.UploadsChecked.WithLabelValues("failed").Add(float64(fa))
			s.metrics.UploadsChecked.WithLabelValues("pending").Add(float64(pe))
		}
	}

	for {
		select {
		case res, ok := <-results:
			if !ok {
				flush()
				return werr
			}
			if len(batch) == 0 {
				tick.Reset(s.flushEvery)
			}
			batch = append(batch, s.decide(res, failedBefore))
			if len(batch) >= s.batchSize {
				tick.Stop()
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// decide maps an answer to the row's new state. Age is judged at the run's start on
// the database clock: the HEAD came later, so the object was missing for at least that
// long.
func (s *syncUploads) decide(res headResult, failedBefore time.Time) store.UploadCheck {
	u := res.u
	switch {
	case res.found:
		return store.UploadCheck{ID: u.ID, Status: store.UploadUploaded,
			Size: res.obj.Size, ETag: res.obj.ETag, ContentType: res.obj.ContentType}
	case res.retry != nil:
		return store.UploadCheck{ID: u.ID, Status: store.UploadRetry, Reason: truncate(res.retry.Error(), 1000)}
	case !u.CreatedAt.After(failedBefore):
		reason := fmt.Sprintf("object not found in bucket after SYNC_PENDING_TTL (%s); %d checks", s.ttl, u.CheckCount+1)
		if res.rejected != nil {
			reason = fmt.Sprintf("the bucket rejects this key; gave up after SYNC_PENDING_TTL (%s), %d checks: %v", s.ttl, u.CheckCount+1, res.rejected)
		}
		return store.UploadCheck{ID: u.ID, Status: store.UploadFailed, Reason: truncate(reason, 1000)}
	default:
		var reason string
		if res.rejected != nil {
			reason = truncate(res.rejected.Error(), 1000)
		}
		return store.UploadCheck{ID: u.ID, Status: store.UploadPending, Reason: reason}
	}
}

// truncate keeps error text stored per upload bounded (a key can be 1 KiB by itself).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
