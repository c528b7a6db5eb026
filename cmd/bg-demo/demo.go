package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bg-worker/bg-worker/internal/appshapes"
	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/devservers"
)

const (
	dbName     = "bg_demo"
	bucketName = "bg-demo"
	prefix     = "uploads/"
)

// demo is one run of the local stack.
type demo struct {
	opts  options
	out   *console
	start time.Time

	workerBin string
	binDir    *devservers.Dir
	pg        *devservers.Postgres
	s3        *devservers.Versitygw
	dbURL     string
	db        *pgxpool.Pool
	seed      *seedPlan

	// shape is the uploads table the demo seeds and reads: appshapes.Default, or the
	// application table of --app-table, created before migrate and mapped with its
	// UPLOADS_* variables.
	shape appshapes.Shape
	// appRelations are the relations outside the worker's schema after the application
	// table was created and before migrate: with --app-table, the worker must add none.
	appRelations []string

	replicas []*replica
	exits    chan *proc
	readyWG  sync.WaitGroup

	// Takeover watchers live as long as the loop.
	watchCtx context.Context
	watchers sync.WaitGroup
	loopEnd  time.Time

	mu       sync.Mutex
	pids     []int    // every process started, for the leak check
	dirs     []string // every temporary directory, for the leak check
	problems []string // failed checks: exit 1 in --duration mode
	kills    []*killRecord
}

func newDemo(opts options, stdout io.Writer) *demo {
	d := &demo{opts: opts, out: newConsole(stdout, opts.color), exits: make(chan *proc, 256), shape: appshapes.Default}
	if s, ok := appshapes.Lookup(opts.appTable); ok {
		d.shape = s
	}
	if n := len(fmt.Sprintf("replica-%d", opts.replicas)); n > d.out.width {
		d.out.width = n
	}
	return d
}

func (d *demo) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.problems = append(d.problems, msg)
	d.mu.Unlock()
}

func (d *demo) trackPID(pid int) {
	d.mu.Lock()
	d.pids = append(d.pids, pid)
	d.mu.Unlock()
}

func (d *demo) trackDir(dir string) {
	d.mu.Lock()
	d.dirs = append(d.dirs, dir)
	d.mu.Unlock()
}

// run sets the stack up, runs it until Ctrl-C or --duration, tears it down and checks.
func (d *demo) run(ctx context.Context, stdin io.Reader) int {
	d.start = time.Now()
	err := d.setup(ctx)
	if err == nil {
		d.loop(ctx, stdin)
	}
	d.stopReplicas()
	if err == nil {
		d.summary()
	}
	if cerr := d.cleanup(); cerr != nil {
		d.out.demo("cleanup: %v", cerr)
		d.problem("cleanup: %v", cerr)
	}
	leaks := d.leakCheck()
	if err != nil {
		if ctx.Err() != nil {
			d.out.demo("interrupted during setup: %v", err)
		} else {
			d.out.demo("setup failed: %v", err)
		}
		return 1
	}
	if len(leaks) > 0 {
		d.out.demoBlock(append([]string{"LEFT RUNNING (bug):"}, leaks...))
		return 1
	}
	d.mu.Lock()
	problems := append([]string(nil), d.problems...)
	pids, dirs := len(d.pids), len(d.dirs)
	d.mu.Unlock()
	d.out.demo("nothing left running: %d processes ended, %d temporary directories removed", pids, dirs)
	if len(problems) > 0 {
		lines := []string{"PROBLEMS:"}
		for _, p := range problems {
			lines = append(lines, "  - "+p)
		}
		d.out.demoBlock(lines)
		if d.opts.duration > 0 {
			d.out.demo("FAILED")
			return 1
		}
		return 0
	}
	if d.opts.duration > 0 {
		d.out.demo("OK: every replica started, runs happened, one runner per job per tick, seeded uploads as expected, nothing left running")
	}
	return 0
}

// setup builds the worker, starts PostgreSQL and versitygw, migrates, seeds and starts the
// replicas.
func (d *demo) setup(ctx context.Context) error {
	root := findRepoRoot()
	vgw, err := findVersitygw(d.opts.versitygw, root)
	if err != nil {
		return err
	}
	if err := d.buildWorker(ctx, root); err != nil {
		return err
	}

	t := time.Now()
	d.pg, err = devservers.StartPostgres(ctx, devservers.PostgresOptions{})
	if d.pg != nil {
		d.trackDir(d.pg.Dir)
		d.trackPID(d.pg.PID())
	}
	if err != nil {
		return err
	}
	if err := d.pg.CreateDatabase(ctx, dbName); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	d.dbURL = d.pg.URL(dbName)
	d.out.demo("PostgreSQL up in %s (pid %d): %s", time.Since(t).Round(time.Millisecond), d.pg.PID(), d.dbURL)

	t = time.Now()
	d.s3, err = devservers.StartVersitygw(ctx, devservers.VersitygwOptions{Bin: vgw, Region: "auto"})
	if d.s3 != nil {
		d.trackDir(d.s3.Dir)
		d.trackPID(d.s3.PID())
	}
	if err != nil {
		return err
	}
	if err := d.s3.CreateBucket(ctx, bucketName); err != nil {
		return err
	}
	d.out.demo("versitygw up in %s (pid %d): bucket %s at %s, files in %s", time.Since(t).Round(time.Millisecond),
		d.s3.PID(), bucketName, d.s3.Endpoint, d.s3.BucketDir(bucketName))

	pcfg, err := pgxpool.ParseConfig(d.dbURL)
	if err != nil {
		return err
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "bg-demo"
	pcfg.MaxConns = 4
	if d.db, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return err
	}

	if err := d.createAppTable(ctx); err != nil {
		return err
	}
	base := d.childEnv()
	if err := d.runTool(ctx, "migrate", append(append(base, "DATABASE_URL="+d.dbURL), d.shape.EnvList()...), "migrate"); err != nil {
		return err
	}
	t = time.Now()
	if d.seed, err = seed(ctx, d.db, d.shape, d.s3, bucketName, d.opts.uploads); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	d.out.demoBlock(d.seed.describe(time.Since(t), d.opts))

	for i := 1; i <= d.opts.replicas; i++ {
		port, err := devservers.FreePort()
		if err != nil {
			return err
		}
		r := &replica{
			name:  fmt.Sprintf("replica-%d", i),
			addr:  "127.0.0.1:" + strconv.Itoa(port),
			color: palette[(i-1)%len(palette)],
		}
		r.env = append(d.workerEnv(base), "WORKER_ID="+r.name, "HTTP_ADDR="+r.addr)
		d.replicas = append(d.replicas, r)
	}
	if err := d.runTool(ctx, "jobs", d.replicas[0].env, "jobs"); err != nil {
		return err
	}
	// status checks the mapping like a replica does, so the command it prints carries the
	// same UPLOADS_* variables.
	statusEnv := strings.Join(append(d.shape.EnvList(), "DATABASE_URL='"+d.dbURL+"'"), " ")
	inspect := []string{
		"Inspect it from another terminal while it runs:",
		fmt.Sprintf("  psql '%s' -c 'SELECT * FROM bg_worker.worker_lock_holders'", d.dbURL),
	}
	if d.opts.appTable != "" {
		inspect = append(inspect, fmt.Sprintf("  psql '%s' -c '%s'", d.dbURL, strings.ReplaceAll(d.shape.CountSQL(), "'", `'\''`)))
	}
	d.out.demoBlock(append(inspect,
		fmt.Sprintf("  %s %s status", statusEnv, d.workerBin),
		fmt.Sprintf("  curl -s http://%s/metrics | grep ^bgworker_", d.replicas[0].addr),
		"Type k⏎ to kill -9 the current leader, r⏎ to restart replicas that are down, s⏎ for lock holders now, q⏎ or Ctrl-C to stop.",
	))
	d.mu.Lock()
	dirs := strings.Join(d.dirs, " ")
	d.mu.Unlock()
	d.out.demo("temporary directories (removed at the end): %s", dirs)
	for _, r := range d.replicas {
		if err := d.startReplica(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// createAppTable creates the --app-table shape's table with the application's own DDL,
// before migrate, as an existing application has it; and remembers what exists outside
// the worker's schema, so that the summary can show migrate and the replicas added
// nothing there.
func (d *demo) createAppTable(ctx context.Context) error {
	if d.opts.appTable == "" {
		return nil
	}
	// Setup may hold several statements: Exec without arguments sends them as one
	// simple-protocol query.
	if _, err := d.db.Exec(ctx, d.shape.Setup); err != nil {
		return fmt.Errorf("create the application table %s: %w", d.shape.Table, err)
	}
	var err error
	if d.appRelations, err = d.relationsOutsideWorker(ctx); err != nil {
		return err
	}
	d.out.demoBlock([]string{
		fmt.Sprintf("application table (--app-table %s): %s", d.shape.Name, d.shape.About),
		fmt.Sprintf("  created %s with the application's DDL; migrate and every replica map it with", d.shape.Table),
		"  " + strings.Join(d.shape.EnvList(), " "),
	})
	return nil
}

// relationsOutsideWorker lists the relations (tables, views, indexes, sequences, types'
// tables) outside the worker's schema, as schema.name:kind.
func (d *demo) relationsOutsideWorker(ctx context.Context) ([]string, error) {
	rows, err := d.db.Query(ctx, appshapes.RelationsSQL(false))
	if err != nil {
		return nil, fmt.Errorf("list relations: %w", err)
	}
	rels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list relations: %w", err)
	}
	return rels, nil
}

// startReplica starts a process for r and waits for its readiness in the background.
func (d *demo) startReplica(ctx context.Context, r *replica) error {
	p, err := r.start(d.workerBin, d.out, d.exits)
	if err != nil {
		return err
	}
	d.trackPID(p.pid)
	d.out.demo("started %s pid=%d http://%s", r.name, p.pid, r.addr)
	d.readyWG.Add(1)
	go func() {
		defer d.readyWG.Done()
		t := time.Now()
		if err := r.waitReady(ctx, p, 60*time.Second); err != nil {
			if ctx.Err() == nil && !p.expectedExit() {
				d.out.demo("%v", err)
			}
			return
		}
		d.out.demo("%s ready in %s (/readyz 200)", r.name, time.Since(t).Round(time.Millisecond))
	}()
	return nil
}

// loop runs until Ctrl-C, q, or the end of --duration.
func (d *demo) loop(ctx context.Context, stdin io.Reader) {
	var stopWatchers context.CancelFunc
	d.watchCtx, stopWatchers = context.WithCancel(ctx)
	defer func() {
		d.loopEnd = time.Now()
		stopWatchers()
		d.watchers.Wait()
	}()
	lines := make(chan string)
	go func() {
		if stdin == nil {
			return
		}
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- strings.ToLower(strings.TrimSpace(sc.Text()))
		}
	}()
	status := time.NewTicker(d.opts.statusEvery)
	defer status.Stop()
	var end, kill, late <-chan time.Time
	if d.opts.duration > 0 {
		end = time.After(d.opts.duration)
	}
	if d.opts.killAfter > 0 {
		kill = time.After(d.opts.killAfter)
	}
	if len(d.seed.late) > 0 {
		late = time.After(3 * d.opts.interval)
	}
	for {
		select {
		case <-ctx.Done():
			d.out.demo("interrupted: stopping")
			return
		case <-end:
			d.out.demo("--duration %s over: stopping", d.opts.duration)
			return
		case <-status.C:
			d.printStatus(ctx)
		case <-kill:
			d.killLeader(ctx)
		case <-late:
			d.lateArrivals(ctx)
		case p := <-d.exits:
			if !p.expectedExit() {
				d.out.demo("%s (pid %d) exited unexpectedly: %s; r⏎ restarts it", p.r.name, p.pid, p.state)
				d.problem("%s (pid %d) exited unexpectedly: %s", p.r.name, p.pid, p.state)
			}
		case l := <-lines:
			switch l {
			case "k", "kill":
				d.killLeader(ctx)
			case "r", "restart":
				d.restartDown(ctx)
			case "s", "status":
				d.printStatus(ctx)
			case "q", "quit", "exit":
				d.out.demo("quit: stopping")
				return
			case "":
			default:
				d.out.demo("keys: k⏎ kill the leader · r⏎ restart replicas that are down · s⏎ lock holders · q⏎ quit")
			}
		}
	}
}

func (d *demo) restartDown(ctx context.Context) {
	n := 0
	for _, r := range d.replicas {
		if r.running() {
			continue
		}
		if err := d.startReplica(ctx, r); err != nil {
			d.out.demo("restart %s: %v", r.name, err)
			continue
		}
		n++
	}
	if n == 0 {
		d.out.demo("every replica is running")
	}
}

// stopReplicas sends SIGTERM to every running replica and waits for clean exits (0), up to
// SHUTDOWN_TIMEOUT plus a margin, then kills what is left.
func (d *demo) stopReplicas() {
	var running []*proc
	for _, r := range d.replicas {
		if p := r.current(); p != nil && !p.exited() {
			p.terminate()
			running = append(running, p)
		}
	}
	if len(running) > 0 {
		d.out.demo("SIGTERM sent to %d replica(s); waiting for them to release their locks and exit", len(running))
	}
	deadline := time.Now().Add(d.opts.shutdownTimeout + 10*time.Second)
	for _, p := range running {
		select {
		case <-p.done:
		case <-time.After(time.Until(deadline)):
			d.problem("%s (pid %d) did not exit within %s of SIGTERM; killed", p.r.name, p.pid, d.opts.shutdownTimeout+10*time.Second)
			p.kill()
			<-p.done
			continue
		}
		if code := p.state.ExitCode(); code != 0 {
			d.problem("%s (pid %d) exited with %s after SIGTERM, want exit status 0", p.r.name, p.pid, p.state)
		}
	}
	d.readyWG.Wait()
	for _, r := range d.replicas {
		if p := r.current(); p != nil {
			select {
			case <-p.logDone:
			case <-time.After(2 * time.Second):
			}
		}
	}
}

// cleanup stops the servers and removes the temporary directories, in order.
func (d *demo) cleanup() error {
	var errs []error
	if d.db != nil {
		d.db.Close()
	}
	if d.s3 != nil {
		errs = append(errs, d.s3.Stop())
	}
	if d.pg != nil {
		errs = append(errs, d.pg.Stop())
	}
	if d.binDir != nil {
		errs = append(errs, d.binDir.Remove())
	}
	return errors.Join(errs...)
}

// leakCheck lists whatever the demo started that is still there.
func (d *demo) leakCheck() []string {
	d.mu.Lock()
	pids := append([]int(nil), d.pids...)
	dirs := append([]string(nil), d.dirs...)
	d.mu.Unlock()
	var leaks []string
	for _, pid := range pids {
		if devservers.Alive(pid) {
			leaks = append(leaks, fmt.Sprintf("process %d still running", pid))
		}
	}
	for _, dir := range dirs {
		for _, p := range devservers.ProcessesUsing(dir) {
			leaks = append(leaks, "process using "+dir+": "+p)
		}
		if _, err := os.Stat(dir); err == nil {
			leaks = append(leaks, "directory not removed: "+dir)
		}
	}
	return leaks
}

// buildWorker builds cmd/bg-worker into a temporary directory (unless --worker-bin).
func (d *demo) buildWorker(ctx context.Context, root string) error {
	if d.opts.workerBin != "" {
		bin, err := filepath.Abs(d.opts.workerBin)
		if err != nil {
			return err
		}
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("--worker-bin: %w", err)
		}
		d.workerBin = bin
		return nil
	}
	if root == "" {
		return errors.New("not inside the bg-worker repository: run from it (make demo) or pass --worker-bin")
	}
	var err error
	if d.binDir, err = devservers.TempDir("", "bg-demo-bin-"); err != nil {
		return err
	}
	d.trackDir(d.binDir.Path)
	d.workerBin = filepath.Join(d.binDir.Path, "bg-worker")
	t := time.Now()
	cmd := exec.CommandContext(ctx, devservers.GoTool(), "build", "-o", d.workerBin, "./cmd/bg-worker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/bg-worker: %w\n%s", err, out)
	}
	d.out.demo("built bg-worker in %s: %s", time.Since(t).Round(time.Millisecond), d.workerBin)
	return nil
}

// runTool runs a one-shot bg-worker command, its output prefixed by name.
func (d *demo) runTool(ctx context.Context, name string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, d.workerBin, args...)
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		if l != "" {
			lines = append(lines, shortenLogLine(l))
		}
	}
	d.out.block(name, "2", lines)
	if err != nil {
		return fmt.Errorf("bg-worker %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// childEnv is this process's environment without any bg-worker variable, so that a
// DATABASE_URL or R2 secret in the caller's shell never reaches the demo's replicas.
func (d *demo) childEnv() []string {
	known := map[string]bool{}
	for _, n := range configVars() {
		known[n] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !known[name] {
			env = append(env, kv)
		}
	}
	return env
}

// workerEnv is what every replica shares.
func (d *demo) workerEnv(base []string) []string {
	orphanEvery := max(5*d.opts.interval, 10*time.Second)
	env := append(append([]string(nil), base...), d.shape.EnvList()...)
	return append(env,
		"DATABASE_URL="+d.dbURL,
		"R2_ENDPOINT="+d.s3.Endpoint,
		"R2_REGION="+d.s3.Region,
		"R2_ACCESS_KEY_ID="+d.s3.AccessKey,
		"R2_SECRET_ACCESS_KEY="+d.s3.SecretKey,
		"R2_BUCKET_NAME="+bucketName,
		"R2_PREFIX="+prefix,
		"WORKER_INTERVAL_MS="+strconv.FormatInt(d.opts.interval.Milliseconds(), 10),
		"LOG_FORMAT=text",
		"LOG_LEVEL="+d.opts.logLevel,
		"SHUTDOWN_TIMEOUT="+d.opts.shutdownTimeout.String(),
		"SYNC_MAX_BACKOFF=10s",
		"ORPHAN_SCAN_INTERVAL="+orphanEvery.String(),
		"ORPHAN_MIN_AGE="+orphanMinAge.String(),
		"ORPHAN_DELETE="+strconv.FormatBool(d.opts.orphanDelete),
	)
}

// configVars lists every variable config.Load reads (it asks for each one).
func configVars() []string {
	var names []string
	_, _ = config.Load(func(name string) (string, bool) {
		names = append(names, name)
		return "", false
	})
	return names
}

// findRepoRoot is the repository's root, "" when not inside it.
func findRepoRoot() string {
	root, _ := devservers.RepoRoot()
	return root
}

// findVersitygw: --versitygw, $VERSITYGW_BIN, <repo>/.bin/versitygw, PATH.
func findVersitygw(flagValue, root string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		return p, nil
	}
	if root != "" {
		p := filepath.Join(root, ".bin", "versitygw")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", errors.New("versitygw not found: run `make tools` (builds .bin/versitygw), or pass --versitygw PATH")
}
