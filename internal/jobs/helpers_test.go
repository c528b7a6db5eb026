package jobs_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/faultproxy"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/logging"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// harness is one test's world: a fresh migrated database, a fresh bucket on versitygw, a
// fault proxy in front of it (the job's client goes through the proxy; seeding does not),
// a statement counter on the store's pool and a captured debug log.
type harness struct {
	t       *testing.T
	ctx     context.Context
	url     string
	st      *store.Store
	db      *pgxpool.Pool // the test's own SQL (search_path bg_worker, public); not counted
	stmts   *stmtCounter
	info    testenv.BucketInfo
	s3      *s3.Client
	proxy   *faultproxy.Proxy
	logs    *logBuffer
	log     *slog.Logger
	metrics *metrics.Metrics
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	url := testenv.DatabaseURL(t)
	return newHarnessFor(t, url, url)
}

// newHarnessFor is newHarness on a database the caller prepared: the jobs (store and
// lock sessions) connect with workerURL, the test's own SQL with adminURL.
func newHarnessFor(t *testing.T, workerURL, adminURL string) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	h := &harness{t: t, ctx: ctx, url: workerURL, stmts: &stmtCounter{}, logs: &logBuffer{},
		metrics: metrics.New()}
	st, err := store.Open(ctx, h.url, store.Options{ApplicationName: "jobs-test", MaxConns: 8, Tracer: h.stmts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	h.st = st
	if h.db, err = pgxpool.New(ctx, adminURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.db.Close)
	h.info = testenv.Bucket(t)
	h.s3 = testenv.S3Client(t, h.info)
	h.proxy, err = faultproxy.Start(faultproxy.Config{Target: h.info.Endpoint, StallFor: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.proxy.Close() })
	h.log = slog.New(logging.NewTextHandler(h.logs, slog.LevelDebug))
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("JOBS_TEST_LOGS") != "" {
			t.Logf("job logs:\n%s", h.logs.String())
		}
	})
	return h
}

// bucketConfig reaches the test bucket through the proxy, with short timeouts and
// retries so fault tests stay quick.
func (h *harness) bucketConfig() bucket.Config {
	return bucket.Config{
		Endpoint:        h.proxy.URL(),
		Region:          h.info.Region,
		AccessKeyID:     h.info.AccessKeyID,
		SecretAccessKey: h.info.SecretAccessKey,
		Bucket:          h.info.Name,
		RequestTimeout:  2 * time.Second,
		MaxAttempts:     3,
		RetryBaseDelay:  5 * time.Millisecond,
		RetryMaxBackoff: 50 * time.Millisecond,
		Observer:        h.metrics.BucketRequest,
	}
}

func (h *harness) client(mod func(*bucket.Config)) *bucket.Client {
	h.t.Helper()
	cfg := h.bucketConfig()
	if mod != nil {
		mod(&cfg)
	}
	c, err := bucket.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// config is the defaults with a one-minute tick, so a second run finds nothing due.
func (h *harness) config() config.Config {
	c := config.Defaults()
	c.Interval = time.Minute
	c.R2BucketName = h.info.Name
	return c
}

func (h *harness) deps(cfg config.Config, c *bucket.Client) jobs.Deps {
	return jobs.Deps{Config: cfg, Logger: h.log, Bucket: c, Metrics: h.metrics}
}

func (h *harness) job(d jobs.Deps, name string) jobs.Job {
	h.t.Helper()
	j, ok := jobs.Find(jobs.Registry(d), name)
	if !ok {
		h.t.Fatalf("job %s not registered", name)
	}
	return j
}

// runResult is one run as the scheduler recorded it.
type runResult struct {
	Status string
	Err    error
	Row    store.JobRun
	Stats  map[string]int64
	Logs   string // this run's log lines
	Stmts  int64  // statements on the store's pool during the run (incl. recording its outcome)
	// StmtsBy counts them by first word (sqlc queries by name).
	StmtsBy map[string]int64
}

// lockHeartbeat is the heartbeat of the lock session a harness run holds: a terminated
// session's lease ends within it.
const lockHeartbeat = 200 * time.Millisecond

type runOpts struct {
	// before runs after the lock is taken and the run claimed, before the job starts.
	before func(pid int32)
	// during runs concurrently with the job, given the lock session's backend pid.
	during func(pid int32)
	// cancelOnLockLoss cancels the run when the lease ends, as the scheduler does. Off,
	// a lost lock is noticed only by the fenced writes.
	cancelOnLockLoss bool
}

// run executes one run of job for real, through the production path: scheduler.RunNow
// takes the job's advisory lock on a dedicated session (with a fast heartbeat), claims a
// manual run with that session's pid, runs the job with the real fencing and records its
// outcome. A hook on the run marks where the job starts (before, during, the log and
// statement counts) and where it ends.
func (h *harness) run(job jobs.Job, o runOpts) runResult {
	h.t.Helper()
	connCfg, err := store.ParseConfig(h.url, "jobs-test-lock")
	if err != nil {
		h.t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		logStart int
		stmts    int64
		stmtsBy  map[string]int64
		runErr   error
	)
	hook := harnessHook{
		started: func(info scheduler.RunInfo) {
			if o.during != nil {
				wg.Add(1)
				go func() { defer wg.Done(); o.during(info.LockPID) }()
			}
			if o.before != nil {
				o.before(info.LockPID)
			}
			logStart = h.logs.Len()
			h.stmts.Reset()
		},
		ended: func(_ scheduler.RunInfo, _ string, err error) {
			stmts, stmtsBy = h.stmts.Total(), h.stmts.By()
			runErr = err
		},
	}
	res, err := scheduler.RunNow(h.ctx, scheduler.RunNowOptions{
		Store: h.st, ConnConfig: connCfg, Logger: h.log, WorkerID: "jobs-test",
		Lock:                   lock.Options{Heartbeat: lockHeartbeat, Timeout: 2 * time.Second},
		Hooks:                  []scheduler.RunHook{hook},
		KeepRunningOnLeaseLoss: !o.cancelOnLockLoss,
	}, job)
	wg.Wait()
	if err != nil || !res.Here {
		h.t.Fatalf("run %s here: %+v, %v", job.Name, res, err)
	}

	row, err := h.st.GetRun(h.ctx, res.RunID)
	if err != nil {
		h.t.Fatal(err)
	}
	stats := map[string]int64{}
	if err := json.Unmarshal(row.Stats, &stats); err != nil {
		h.t.Fatalf("stats %s: %v", row.Stats, err)
	}
	return runResult{Status: res.Status, Err: runErr, Row: row, Stats: stats, Logs: h.logs.From(logStart), Stmts: stmts, StmtsBy: stmtsBy}
}

// harnessHook is a scheduler.RunHook of funcs.
type harnessHook struct {
	started func(scheduler.RunInfo)
	ended   func(scheduler.RunInfo, string, error)
}

func (k harnessHook) RunStarted(info scheduler.RunInfo) { k.started(info) }
func (k harnessHook) RunEnded(info scheduler.RunInfo, status string, err error) {
	k.ended(info, status, err)
}

// insertUploads inserts PENDING uploads with the given keys, created age ago, and
// returns their ids in order.
func (h *harness) insertUploads(age time.Duration, keys ...string) []int64 {
	h.t.Helper()
	rows, err := h.db.Query(h.ctx, `INSERT INTO uploads (object_key, created_at)
		SELECT k, now() - $2::interval FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n
		RETURNING id`, keys, age)
	if err != nil {
		h.t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		h.t.Fatal(err)
	}
	if len(ids) != len(keys) {
		h.t.Fatalf("inserted %d of %d uploads", len(ids), len(keys))
	}
	return ids
}

// put writes an object straight to versitygw (not through the proxy) and returns its ETag.
func (h *harness) put(key, body, contentType string) string {
	h.t.Helper()
	in := &s3.PutObjectInput{Bucket: aws.String(h.info.Name), Key: aws.String(key), Body: strings.NewReader(body)}
	if contentType != "" {
		in.ContentType = aws.String(contentType)
	}
	if _, err := h.s3.PutObject(h.ctx, in); err != nil {
		h.t.Fatalf("put %q: %v", key, err)
	}
	return md5hex(body)
}

// writeFile writes an object as a file in the bucket's directory (no ETag), modified at mtime.
func (h *harness) writeFile(key, body string, mtime time.Time) {
	h.t.Helper()
	if h.info.Dir == "" {
		needLocalS3(h.t)
	}
	p := filepath.Join(h.info.Dir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			h.t.Fatal(err)
		}
	}
}

// needLocalS3 stops a test that needs the local versitygw's bucket directory (objects
// written as files: no ETag, a chosen mtime) when TEST_S3_ENDPOINT points elsewhere: it
// skips on a developer's machine, and fails under CI=true, where a skipped guarantee test
// would pass unseen.
func needLocalS3(t testing.TB) {
	t.Helper()
	const why = "needs the local versitygw's bucket directory (objects written as files), but TEST_S3_ENDPOINT is set"
	if os.Getenv("CI") == "true" {
		t.Fatal(why + "; under CI=true a test must run, not skip: unset TEST_S3_ENDPOINT")
	}
	t.Skip(why + " (set CI=true to fail instead of skipping)")
}

// uploadRow is every column sync-uploads may change.
type uploadRow struct {
	ID          int64
	Key         string
	Status      string
	Size        pgtype.Int8
	ETag        pgtype.Text
	ContentType pgtype.Text
	VerifiedAt  pgtype.Timestamptz
	CheckCount  int32
	NextCheckAt time.Time
	LastError   pgtype.Text
	CreatedAt   time.Time
	UpdatedAt   time.Time
	ErrorCount  int32 // transient errors since the last answer
}

// appView is what the application sees of a row, and the worker's count of definite
// checks: what a transient error must never change.
func (r uploadRow) appView() uploadRow {
	r.NextCheckAt, r.LastError, r.ErrorCount = time.Time{}, pgtype.Text{}, 0
	return r
}

func (h *harness) uploads() map[int64]uploadRow {
	h.t.Helper()
	// The application's row and the worker's state of it. A state row that records no
	// check yet (a run only registered the upload) reads like none: zero values.
	rows, err := h.db.Query(h.ctx, `SELECT u.id, u.object_key, u.status, u.size_bytes, u.etag, u.content_type,
		u.verified_at, coalesce(c.check_count, 0),
		CASE WHEN c.check_count > 0 OR c.next_check_at > now() THEN c.next_check_at ELSE 'epoch' END,
		c.last_error, u.created_at, u.updated_at, coalesce(c.error_count, 0)
		FROM uploads u LEFT JOIN bg_worker.upload_checks c ON c.upload_id = u.id::text ORDER BY u.id`)
	if err != nil {
		h.t.Fatal(err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[uploadRow])
	if err != nil {
		h.t.Fatal(err)
	}
	out := make(map[int64]uploadRow, len(list))
	for _, r := range list {
		out[r.ID] = r
	}
	return out
}

// objects lists the bucket straight from versitygw.
func (h *harness) objects() map[string]bool {
	h.t.Helper()
	out := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(h.s3, &s3.ListObjectsV2Input{Bucket: aws.String(h.info.Name)})
	for p.HasMorePages() {
		page, err := p.NextPage(h.ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, o := range page.Contents {
			out[aws.ToString(o.Key)] = true
		}
	}
	return out
}

// setNextCheck gives the upload with this key the worker's state row (as a run would)
// with the next check at now() + in and checkCount checks behind it.
func (h *harness) setNextCheck(key string, in time.Duration, checkCount int) {
	h.t.Helper()
	h.exec(`INSERT INTO bg_worker.upload_checks (upload_id, next_check_at, check_count)
		SELECT id::text, now() + $2 * interval '1 millisecond', $3 FROM uploads WHERE object_key = $1
		ON CONFLICT (upload_id) DO UPDATE SET next_check_at = excluded.next_check_at, check_count = excluded.check_count`,
		key, in.Milliseconds(), checkCount)
}

// exec runs SQL on the test database.
func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.db.Exec(h.ctx, sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// terminate ends a backend (a lock session) and waits until it is gone.
func (h *harness) terminate(pid int32) time.Time {
	h.t.Helper()
	var ok bool
	var at time.Time
	err := h.db.QueryRow(h.ctx, `SELECT pg_terminate_backend($1, 5000), clock_timestamp()`, pid).Scan(&ok, &at)
	if err != nil || !ok {
		h.t.Errorf("terminate backend %d: %v %v", pid, ok, err)
	}
	return at
}

// uploadedSnapshot reads, in one statement, the ids of the UPLOADED uploads and the
// transactions in progress at that statement's snapshot (with the snapshot's xmax, the
// first transaction id not yet assigned). xids are compared as 64-bit numbers: a test
// cluster is far from its first wraparound. Safe off the test's goroutine (no Fatal).
func (h *harness) uploadedSnapshot() (uploaded, inProgress map[int64]bool, xmax int64, err error) {
	var ids, xip []int64
	err = h.db.QueryRow(h.ctx, `SELECT
		ARRAY(SELECT id FROM uploads WHERE status = 'UPLOADED'),
		ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x),
		pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&ids, &xip, &xmax)
	if err != nil {
		return nil, nil, 0, err
	}
	uploaded, inProgress = map[int64]bool{}, map[int64]bool{}
	for _, id := range ids {
		uploaded[id] = true
	}
	for _, x := range xip {
		inProgress[x] = true
	}
	return uploaded, inProgress, xmax, nil
}

func int8v(n int64) pgtype.Int8  { return pgtype.Int8{Int64: n, Valid: true} }
func textv(s string) pgtype.Text { return pgtype.Text{String: s, Valid: true} }

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// longKey is a 1024-byte key (S3's limit) of '/'-separated segments of at most 255
// bytes (a posix store's file-name limit).
func longKey(prefix string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for b.Len() < 1024 {
		if b.Len() > len(prefix) {
			b.WriteByte('/')
		}
		b.WriteString(strings.Repeat("k", min(250, 1024-b.Len())))
	}
	k := b.String()
	if strings.HasSuffix(k, "/") {
		k = k[:len(k)-1] + "z"
	}
	return k
}

// stmtCounter is a pgx tracer counting statements, by their first word.
type stmtCounter struct {
	total atomic.Int64
	mu    sync.Mutex
	by    map[string]int64
}

func (c *stmtCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.total.Add(1)
	sql := strings.TrimSpace(d.SQL)
	if strings.HasPrefix(sql, "-- name: ") { // sqlc: name the query
		sql = strings.TrimPrefix(sql, "-- name: ")
	}
	word, _, _ := strings.Cut(sql, " ")
	word, _, _ = strings.Cut(word, "\n")
	c.mu.Lock()
	if c.by == nil {
		c.by = map[string]int64{}
	}
	c.by[strings.ToLower(word)]++
	c.mu.Unlock()
	return ctx
}

func (c *stmtCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *stmtCounter) Reset() {
	c.total.Store(0)
	c.mu.Lock()
	c.by = map[string]int64{}
	c.mu.Unlock()
}

func (c *stmtCounter) Total() int64 { return c.total.Load() }

func (c *stmtCounter) By() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.by)
}

// logBuffer is a goroutine-safe log sink.
type logBuffer = testenv.LogBuffer
