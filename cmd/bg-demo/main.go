// Command bg-demo runs the whole bg-worker stack on this machine without Docker: a
// throwaway PostgreSQL (initdb/postgres on PATH), versitygw as the S3-compatible bucket,
// migrations, demo uploads and objects, and N replicas of the real bg-worker binary with
// their logs interleaved. Every few seconds it prints who leads which job
// (SELECT * FROM worker_lock_holders). On Ctrl-C, or at the end of --duration, it stops
// everything, prints what ran where, and leaves nothing running.
//
//	make demo                              # = go run ./cmd/bg-demo
//	go run ./cmd/bg-demo --replicas 5 --interval 1s --uploads 1000
//	go run ./cmd/bg-demo --kill-after 15s  # kill -9 the leader, watch a standby take over
//	go run ./cmd/bg-demo --duration 20s    # bounded: exit 1 unless it all worked (CI)
//	go run ./cmd/bg-demo --app-table prisma # an application's own table, mapped with UPLOADS_*
//
// While it runs, type a letter and Enter: k kills (SIGKILL) the current leader, r restarts
// replicas that are down, s prints the lock holders now, q quits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/bg-worker/bg-worker/internal/appshapes"
)

func main() {
	// A closed stdout (`bg-demo | head`, a pager quit with Ctrl-C) must not kill the demo
	// halfway through its shutdown: writes fail instead, and it still cleans up.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command-line flags.
type options struct {
	replicas        int
	interval        time.Duration
	uploads         int
	duration        time.Duration
	killAfter       time.Duration
	statusEvery     time.Duration
	shutdownTimeout time.Duration
	versitygw       string
	workerBin       string
	logLevel        string
	orphanDelete    bool
	color           string
	appTable        string // "": the default public.uploads that migrate creates
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bg-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.replicas, "replicas", 3, "bg-worker replicas to run")
	fs.DurationVar(&o.interval, "interval", 2*time.Second, "tick of sync-uploads (WORKER_INTERVAL_MS)")
	fs.IntVar(&o.uploads, "uploads", 200, "upload rows to seed (objects, orphans and odd keys scale with it)")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long and exit 1 unless every replica started, runs happened, the seeded uploads reached their expected status and nothing is left running (0: until Ctrl-C)")
	fs.DurationVar(&o.killAfter, "kill-after", 0, "kill -9 the leader of the fastest job after this long, to show a standby taking over (0: off; key k does it any time)")
	fs.DurationVar(&o.statusEvery, "status-every", 5*time.Second, "how often to print worker_lock_holders")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "SHUTDOWN_TIMEOUT of the replicas")
	fs.StringVar(&o.versitygw, "versitygw", "", "versitygw binary (default $VERSITYGW_BIN, then .bin/versitygw from `make tools`, then PATH)")
	fs.StringVar(&o.workerBin, "worker-bin", "", "a built bg-worker binary to run (default: go build ./cmd/bg-worker)")
	fs.StringVar(&o.logLevel, "log-level", "info", "LOG_LEVEL of the replicas (debug shows one line per upload)")
	fs.BoolVar(&o.orphanDelete, "orphan-delete", false, "ORPHAN_DELETE of the replicas: delete old orphan objects instead of only reporting them")
	fs.StringVar(&o.color, "color", "auto", "color the replica prefixes: auto, always, never")
	fs.StringVar(&o.appTable, "app-table", "", "run against an application's own uploads table, created before migrate and mapped with UPLOADS_*: "+
		strings.Join(appshapes.Names(), ", ")+" (default: none, the public.uploads that migrate creates)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: bg-demo [flags]\n\nRuns PostgreSQL, versitygw and N bg-worker replicas locally; see README.md.\nWhile it runs, type k⏎ to kill the leader, r⏎ to restart replicas that are down, s⏎ for lock holders, q⏎ to quit.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []string
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if o.replicas < 1 || o.replicas > 20 {
		errs = append(errs, "--replicas: must be between 1 and 20")
	}
	if o.interval < 100*time.Millisecond || o.interval%time.Millisecond != 0 {
		errs = append(errs, "--interval: must be a whole number of milliseconds, at least 100ms")
	}
	if o.uploads < 0 || o.uploads > 100000 {
		errs = append(errs, "--uploads: must be between 0 and 100000")
	}
	if o.duration < 0 {
		errs = append(errs, "--duration: must not be negative")
	}
	if o.killAfter < 0 || (o.duration > 0 && o.killAfter >= o.duration) {
		errs = append(errs, "--kill-after: must be positive and shorter than --duration")
	}
	if o.statusEvery <= 0 {
		errs = append(errs, "--status-every: must be positive")
	}
	if o.shutdownTimeout <= 0 {
		errs = append(errs, "--shutdown-timeout: must be positive")
	}
	switch strings.ToLower(o.logLevel) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, "--log-level: must be debug, info, warn or error")
	}
	switch o.color {
	case "auto", "always", "never":
	default:
		errs = append(errs, "--color: must be auto, always or never")
	}
	if _, ok := appshapes.Lookup(o.appTable); o.appTable != "" && !ok {
		errs = append(errs, "--app-table: must be one of "+strings.Join(appshapes.Names(), ", ")+" (or unset for the default public.uploads)")
	}
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, "bg-demo:", e)
		}
		return o, errors.New("bad flags")
	}
	return o, nil
}

// run is the whole program; its result is the exit code: 0 fine, 1 something failed
// (setup, or in --duration mode a check), 2 bad flags.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	d := newDemo(opts, stdout)
	code := d.run(ctx, stdin)
	return code
}
