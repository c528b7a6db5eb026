package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/devservers"
	"github.com/bg-worker/bg-worker/internal/faultproxy"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/migrations"
)

// Buckets the bench uses: throughput/memory/idle objects in one, the bill simulation in
// another (its orphan scan lists the whole bucket).
const (
	benchBucket = "bench"
	billBucket  = "bill"
)

// bench is the environment every measurement shares: one PostgreSQL (statement logging
// on, log_line_prefix naming the application_name = WORKER_ID), one versitygw, one
// latency proxy in front of it that classifies each request, and the bg-worker binaries.
type bench struct {
	opts options
	repo string
	work string // binaries and replica logs
	dir  *devservers.Dir

	pg    *devservers.Postgres
	s3    *devservers.Versitygw
	proxy *faultproxy.Proxy
	reqs  *classifier
	stmts *stmtLog

	dbURL string
	db    *pgxpool.Pool

	bin, binE2E string
	tree        string         // the commit the binaries were built from (treeState)
	objects     map[string]int // benchBucket objects written: u/ keys [0, n)

	alt *s3Target // started by withRegion
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bg-bench] %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// pgSettings: every statement is logged with its session's application_name (the
// worker id), without bind parameters (the batch UPDATE carries 6 arrays of 500).
var pgSettings = map[string]string{
	"log_statement":            "all",
	"log_line_prefix":          logPrefix + "%a|",
	"log_parameter_max_length": "0",
	"max_wal_size":             "4GB",
	"checkpoint_timeout":       "30min",
	"shared_buffers":           "256MB",
}

func (b *bench) start(ctx context.Context) (err error) {
	b.objects = map[string]int{}
	if b.opts.keep != "" {
		if err := os.MkdirAll(b.opts.keep, 0o755); err != nil {
			return err
		}
		b.work = b.opts.keep
	} else {
		if b.dir, err = devservers.TempDir("", "bg-bench-"); err != nil {
			return err
		}
		b.work = b.dir.Path
	}
	if err := os.MkdirAll(filepath.Join(b.work, "logs"), 0o755); err != nil {
		return err
	}
	b.logf("work directory %s", b.work)

	b.tree = treeState(ctx, b.repo)
	if b.bin, b.binE2E, err = buildBinaries(ctx, b.repo, b.work); err != nil {
		return err
	}
	b.logf("built %s and %s (-tags e2e)", b.bin, b.binE2E)

	b.pg, err = devservers.StartPostgres(ctx, devservers.PostgresOptions{Settings: pgSettings})
	if err != nil {
		return err
	}
	b.stmts = &stmtLog{path: b.pg.LogFile}
	if err := b.pg.CreateDatabase(ctx, "bench"); err != nil {
		return err
	}
	b.dbURL = b.pg.URL("bench")
	if _, err := store.Migrate(ctx, b.dbURL, migrations.DefaultOptions()); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if b.db, err = pgxpool.New(ctx, b.dbURL+"&application_name=bg-bench"); err != nil {
		return err
	}
	// The e2e probes write e2e_events unqualified, through a pool whose search_path is
	// the worker's schema only.
	if _, err := b.db.Exec(ctx, `CREATE TABLE IF NOT EXISTS bg_worker.e2e_events (
		id bigserial PRIMARY KEY, job text NOT NULL, run_id bigint NOT NULL, worker_id text NOT NULL,
		seq int NOT NULL, at timestamptz NOT NULL)`); err != nil {
		return err
	}
	b.logf("postgres on port %d (log %s)", b.pg.Port, b.pg.LogFile)

	b.s3, err = devservers.StartVersitygw(ctx, devservers.VersitygwOptions{Bin: b.opts.versitygw})
	if err != nil {
		return err
	}
	for _, name := range []string{benchBucket, billBucket} {
		if err := b.s3.CreateBucket(ctx, name); err != nil {
			return err
		}
	}
	b.reqs = newClassifier()
	b.proxy, err = faultproxy.Start(faultproxy.Config{Target: b.s3.Endpoint, Match: b.reqs.observe})
	if err != nil {
		return err
	}
	b.logf("versitygw %s behind latency proxy %s", b.s3.Endpoint, b.proxy.URL())
	return nil
}

func (b *bench) stop() {
	if b.alt != nil {
		if b.alt.proxy != nil {
			b.alt.proxy.Close()
		}
		_ = b.alt.s3.Stop()
	}
	if b.proxy != nil {
		b.proxy.Close()
	}
	if b.db != nil {
		b.db.Close()
	}
	if b.s3 != nil {
		_ = b.s3.Stop()
	}
	if b.pg != nil {
		if b.opts.keep != "" {
			_ = copyFile(b.pg.LogFile, filepath.Join(b.work, "logs", "postgres.log"))
		}
		_ = b.pg.Stop()
	}
	if b.dir != nil {
		_ = b.dir.Remove()
	}
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o644)
}

// findRepo walks up from the working directory to the bg-worker module root.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/bg-worker/bg-worker\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run bg-bench inside the bg-worker repository (go.mod not found)")
		}
		dir = parent
	}
}

// treeState names the tree the binaries are built from: the short commit, with "+"
// when a non-test file under the worker's sources differs from it (others' uncommitted
// edits; internal/faultproxy and internal/tcpproxy count too, though only the bench
// links them).
func treeState(ctx context.Context, repo string) string {
	rev := gitShort(ctx, repo, "HEAD")
	out, err := exec.CommandContext(ctx, "git", "-C", repo, "status", "--porcelain", "--untracked-files=no",
		"--", "internal", "cmd/bg-worker", "migrations", "queries", "go.mod", "go.sum").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if err == nil && strings.TrimSpace(l) != "" && !strings.HasSuffix(l, "_test.go") {
			return rev + "+" // a file the binaries are built from differs from the commit
		}
	}
	return rev
}

// buildBinaries builds the release binary and the e2e one (probe jobs e2e-fast/e2e-slow).
func buildBinaries(ctx context.Context, repo, dir string) (string, string, error) {
	bin := filepath.Join(dir, "bg-worker")
	e2e := filepath.Join(dir, "bg-worker-e2e")
	for _, args := range [][]string{
		{"build", "-o", bin, "./cmd/bg-worker"},
		{"build", "-tags", "e2e", "-o", e2e, "./cmd/bg-worker"},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return bin, e2e, nil
}

// workerEnv is the environment of a bg-worker process against this bench's servers.
func (b *bench) workerEnv(id, bucketName string, extra map[string]string) []string {
	m := map[string]string{
		"PATH":                 os.Getenv("PATH"),
		"DATABASE_URL":         b.dbURL,
		"WORKER_ID":            id,
		"R2_ENDPOINT":          b.proxy.URL(),
		"R2_REGION":            b.s3.Region,
		"R2_ACCESS_KEY_ID":     b.s3.AccessKey,
		"R2_SECRET_ACCESS_KEY": b.s3.SecretKey,
		"R2_BUCKET_NAME":       bucketName,
		"HTTP_ADDR":            "",
		"LOG_LEVEL":            "info",
	}
	for k, v := range extra {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env
}

// proc is a bg-worker replica (`run`) started by the bench.
type proc struct {
	id     string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func (b *bench) startReplica(bin, id, bucketName string, extra map[string]string) (*proc, error) {
	logPath := filepath.Join(b.work, "logs", id+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, "run")
	cmd.Env = b.workerEnv(id, bucketName, extra)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{id: id, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGCONT then SIGTERM and waits; SIGKILL after 15s.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *proc) kill() {
	if p.alive() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// onceResult is one `bg-worker once` process.
type onceResult struct {
	wall     time.Duration
	exit     int
	maxRSSKB int64
	cpu      time.Duration
	stdout   string
}

// measuredOnce is one `bg-worker once sync-uploads` with what the bench measures around
// it: the machine's CPU times, the CPU of this process (the proxy), versitygw and
// PostgreSQL, and the statements PostgreSQL logged per application from logFrom on.
type measuredOnce struct {
	onceResult
	machine0, machine1     cpuTimes
	proxyCPU, s3CPU, pgCPU time.Duration
	counts                 map[string]*stmtCounts
	logFrom                int64
}

// measureOnce runs `bg-worker once sync-uploads` as id against the bench bucket at the
// proxy's latency, with the request counters reset.
func (b *bench) measureOnce(ctx context.Context, id string, latency time.Duration, env map[string]string) (measuredOnce, error) {
	var m measuredOnce
	b.proxy.SetLatency(latency)
	b.resetRequests()
	m.logFrom = b.stmts.offset()
	m0, p0, s0, g0 := machineCPU(), selfCPU(), procCPU(b.s3.PID()), postgresCPU(b.pg.PID())
	res, err := b.runOnce(ctx, id, "sync-uploads", benchBucket, env)
	m1, p1, s1, g1 := machineCPU(), selfCPU(), procCPU(b.s3.PID()), postgresCPU(b.pg.PID())
	if err != nil {
		return m, err
	}
	m.onceResult = res
	m.machine0, m.machine1 = m0, m1
	m.proxyCPU, m.s3CPU, m.pgCPU = p1-p0, s1-s0, g1-g0
	time.Sleep(300 * time.Millisecond) // PostgreSQL's last log lines
	m.counts, err = b.stmts.count(m.logFrom, b.stmts.offset())
	return m, err
}

// runOnce runs `bg-worker once JOB` as production would and returns its rusage.
func (b *bench) runOnce(ctx context.Context, id, job, bucketName string, extra map[string]string) (onceResult, error) {
	logPath := filepath.Join(b.work, "logs", id+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return onceResult{}, err
	}
	defer f.Close()
	var out strings.Builder
	cmd := exec.CommandContext(ctx, b.bin, "once", job, "--timeout", "30m")
	cmd.Env = b.workerEnv(id, bucketName, extra)
	cmd.Stdout, cmd.Stderr = &out, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err = cmd.Run()
	r := onceResult{wall: time.Since(start), stdout: strings.TrimSpace(out.String())}
	if cmd.ProcessState == nil {
		return r, err
	}
	r.exit = cmd.ProcessState.ExitCode()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSSKB = ru.Maxrss
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if r.exit != 0 {
		return r, fmt.Errorf("bg-worker once %s (%s): exit %d: %s\n%s", job, id, r.exit, r.stdout, devservers.LogTail(logPath))
	}
	return r, nil
}

// classifier counts S3 requests by API operation as the proxy sees them (it is the
// proxy's Match hook: called once per request after the latency; it asks for a fault
// only while the outage item has the bucket cut).
type classifier struct {
	mu     sync.Mutex
	counts map[string]int64
}

// S3 operations and their R2 price class.
const (
	opList         = "ListObjectsV2"
	opHeadObject   = "HeadObject"
	opHeadBucket   = "HeadBucket"
	opGetObject    = "GetObject"
	opPutObject    = "PutObject"
	opCreateBucket = "CreateBucket"
	opDelete       = "DeleteObject(s)"
	opOther        = "other"
)

var classA = map[string]bool{opList: true, opPutObject: true, opCreateBucket: true}
var classB = map[string]bool{opHeadObject: true, opHeadBucket: true, opGetObject: true}

func newClassifier() *classifier { return &classifier{counts: map[string]int64{}} }

func (c *classifier) observe(r *http.Request) bool {
	op := classifyS3(r)
	c.mu.Lock()
	c.counts[op]++
	c.mu.Unlock()
	return outageCut.Load() // the outage item's cut: the proxy's fault for every request
}

func classifyS3(r *http.Request) string {
	path := strings.TrimPrefix(r.URL.EscapedPath(), "/") // path-style: bucket[/key]
	i := strings.IndexByte(path, '/')
	hasKey := i >= 0 && i < len(path)-1
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		if q.Get("list-type") == "2" {
			return opList
		}
		if hasKey {
			return opGetObject
		}
	case http.MethodHead:
		if hasKey {
			return opHeadObject
		}
		return opHeadBucket
	case http.MethodPut:
		if hasKey {
			return opPutObject
		}
		return opCreateBucket
	case http.MethodPost:
		if q.Has("delete") {
			return opDelete
		}
	case http.MethodDelete:
		return opDelete
	}
	return opOther
}

func (c *classifier) reset() {
	c.mu.Lock()
	c.counts = map[string]int64{}
	c.mu.Unlock()
}

func (c *classifier) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

func (b *bench) resetRequests() {
	b.proxy.ResetStats()
	b.reqs.reset()
}

// ensureObjects writes objects u/DDD/DDDDDDD for i < n with i%10 != 0 (90% present)
// straight into versitygw's bucket directory (served as objects, without ETag).
func (b *bench) ensureObjects(n int) error {
	have := b.objects[benchBucket]
	if n <= have {
		return nil
	}
	start := time.Now()
	root := b.s3.BucketDir(benchBucket)
	for i := have; i < n; i++ {
		if i%1000 == 0 || i == have {
			if err := os.MkdirAll(filepath.Join(root, "u", fmt.Sprintf("%03d", i/1000)), 0o755); err != nil {
				return err
			}
		}
		if i%10 == 0 {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, uploadKey(i)), []byte("bg-bench object\n"), 0o644); err != nil {
			return err
		}
	}
	b.objects[benchBucket] = n
	b.logf("wrote %d objects (keys %d..%d, 90%% present) in %s", (n-have)*9/10, have, n-1, time.Since(start).Round(time.Millisecond))
	return nil
}

func uploadKey(i int) string { return fmt.Sprintf("u/%03d/%07d", i/1000, i) }

// seedUploads replaces the default application table (public.uploads) with n PENDING
// uploads u/... and empties the worker's per-upload state (bg_worker.upload_checks,
// keyed by uploads.id::text: with the ids restarted, stale rows would belong to the new
// uploads). An upload without an upload_checks row is due at once; the first sync run
// that sees it creates its row. A bench that needs backoff state (a next check in the
// future, an error count) seeds it into bg_worker.upload_checks, not into uploads.
func (b *bench) seedUploads(ctx context.Context, n int) error {
	for _, q := range []string{`TRUNCATE public.uploads RESTART IDENTITY`, `TRUNCATE bg_worker.upload_checks`} {
		if _, err := b.db.Exec(ctx, q); err != nil {
			return fmt.Errorf("seed uploads: %s: %w", q, err)
		}
	}
	if n > 0 {
		_, err := b.db.Exec(ctx, `INSERT INTO public.uploads (object_key)
			SELECT 'u/' || lpad((i / 1000)::text, 3, '0') || '/' || lpad(i::text, 7, '0')
			FROM generate_series(0, $1::int - 1) AS i`, n)
		if err != nil {
			return fmt.Errorf("seed uploads: insert %d: %w", n, err)
		}
	}
	for _, q := range []string{`VACUUM ANALYZE public.uploads`, `VACUUM ANALYZE bg_worker.upload_checks`, `CHECKPOINT`} {
		if _, err := b.db.Exec(ctx, q); err != nil {
			return fmt.Errorf("seed uploads: %s: %w", q, err)
		}
	}
	return nil
}

// runRow is the job_runs row of a run.
type runRow struct {
	ID       int64
	Status   string
	Duration time.Duration
	Stats    map[string]int64
}

func (b *bench) lastRun(ctx context.Context, workerID, job string) (runRow, error) {
	var r runRow
	var secs float64
	err := b.db.QueryRow(ctx, `SELECT id, status, extract(epoch FROM finished_at - started_at)::float8, stats
		FROM bg_worker.job_runs WHERE worker_id = $1 AND job = $2 ORDER BY id DESC LIMIT 1`, workerID, job).
		Scan(&r.ID, &r.Status, &secs, &r.Stats)
	r.Duration = time.Duration(secs * float64(time.Second))
	return r, err
}

// s3Target is a versitygw behind its own latency proxy.
type s3Target struct {
	s3    *devservers.Versitygw
	proxy *faultproxy.Proxy
	reqs  *classifier
}

// withRegion runs fn with the bench's S3 side swapped for one whose signing region is
// region: a second versitygw (same credentials, started with --region region) serving
// the same bench bucket directory, behind its own proxy. It exists to measure what
// R2_REGION=us-east-1 (which R2 accepts) saves: the SDK resolves endpoints for a region
// that is in its partition table without compiling the partitions' regular expressions.
func (b *bench) withRegion(ctx context.Context, region string, fn func() error) error {
	if region == b.s3.Region {
		return fn()
	}
	if b.alt == nil {
		v, err := devservers.StartVersitygw(ctx, devservers.VersitygwOptions{Bin: b.opts.versitygw, Region: region,
			AccessKey: b.s3.AccessKey, SecretKey: b.s3.SecretKey})
		if err != nil {
			return err
		}
		alt := &s3Target{s3: v, reqs: newClassifier()}
		b.alt = alt
		if err := v.CreateBucket(ctx, benchBucket); err != nil {
			return err
		}
		dir := v.BucketDir(benchBucket)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.Symlink(b.s3.BucketDir(benchBucket), dir); err != nil {
			return err
		}
		if alt.proxy, err = faultproxy.Start(faultproxy.Config{Target: v.Endpoint, Match: alt.reqs.observe}); err != nil {
			return err
		}
		b.logf("versitygw --region %s %s (same bucket directory) behind proxy %s", region, v.Endpoint, alt.proxy.URL())
	}
	mainS3, mainProxy, mainReqs := b.s3, b.proxy, b.reqs
	b.s3, b.proxy, b.reqs = b.alt.s3, b.alt.proxy, b.alt.reqs
	defer func() { b.s3, b.proxy, b.reqs = mainS3, mainProxy, mainReqs }()
	return fn()
}
