package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/logging"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/wiring"
	"github.com/bg-worker/bg-worker/migrations"
)

const usage = `usage: bg-worker [command]

commands:
  run                         the worker loop, until SIGTERM/SIGINT (default)
  migrate                     apply database migrations (safe from many replicas)
  status [--json]             lock holders, last runs and next tick of each job
  once JOB [--timeout D]      run JOB now (here, or on the replica that holds its lock)
  jobs                        list registered jobs and their intervals
  healthcheck                 GET /healthz on HTTP_ADDR (exit 0 healthy, 1 not)
  pause JOB [--for D] [--reason T] [--now]
                              fleet-wide: no new runs of JOB from its next window
  resume JOB                  fleet-wide: JOB runs again from its next window
  check                       validate the configuration against the database
                              (exit 0 ok, 1 problems found, 2 configuration)

Configuration comes from the environment; see README.md.
`

// run is the whole program behind main: it parses args, reads the environment through
// env, and writes to stdout/stderr. Its error decides the exit code (see exitCode).
func run(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return cmdRun(ctx, args, env, stdout, stderr)
	case "migrate":
		return cmdMigrate(ctx, args, env, stderr)
	case "status":
		return cmdStatus(ctx, args, env, stdout, stderr)
	case "once":
		return cmdOnce(ctx, args, env, stdout, stderr)
	case "jobs":
		return cmdJobs(args, env, stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(ctx, args, env, stdout, stderr)
	case "check":
		return cmdCheck(ctx, args, env, stdout, stderr)
	case "pause":
		return cmdPause(ctx, args, env, stdout, stderr)
	case "resume":
		return cmdResume(ctx, args, env, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return &usageError{fmt.Errorf("unknown command %q", cmd)}
	}
}

// newFlags returns a FlagSet whose errors become usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("bg-worker "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: exitOK}
		}
		return &usageError{err}
	}
	return nil
}

// loadConfig reads and validates the environment; problems are usage errors (exit 2).
func loadConfig(env config.LookupEnv, needDB bool) (config.Config, error) {
	cfg, err := config.Load(env)
	if err == nil && needDB {
		err = cfg.RequireDatabase()
	}
	if err != nil {
		return cfg, &usageError{err}
	}
	return cfg, nil
}

// setup reads the configuration and builds the process's one logger.
func setup(env config.LookupEnv, needDB bool, stderr io.Writer) (config.Config, *slog.Logger, error) {
	cfg, err := loadConfig(env, needDB)
	if err != nil {
		return cfg, nil, err
	}
	log, err := newLogger(cfg, stderr)
	return cfg, log, err
}

// newLogger builds the process's one logger.
func newLogger(cfg config.Config, w io.Writer) (*slog.Logger, error) {
	log, err := logging.New(w, cfg.LogFormat, cfg.SlogLevel())
	if err != nil {
		return nil, &usageError{err}
	}
	return log.With("worker_id", cfg.WorkerID), nil
}

// selectJobs builds the registry and picks WORKER_JOBS; bucket jobs need R2 variables.
func selectJobs(cfg config.Config, d jobs.Deps) ([]jobs.Job, error) {
	all := registry(d)
	selected, err := jobs.Select(all, cfg.Jobs)
	if err != nil {
		return nil, &usageError{err}
	}
	for n := range cfg.JobTimeouts {
		if _, ok := jobs.Find(all, n); !ok {
			return nil, &usageError{&config.Error{Var: "JOB_TIMEOUTS", Msg: fmt.Sprintf("unknown job %q (see bg-worker jobs)", n)}}
		}
	}
	for _, j := range selected {
		if j.UsesBucket {
			if err := cfg.RequireBucket(); err != nil {
				return nil, &usageError{err}
			}
			break
		}
	}
	return selected, nil
}

// openStore connects, retrying with backoff until ctx ends when wait is set (a worker
// that starts before its database should wait, not crash-loop).
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger, maxConns int32, wait bool) (*store.Store, error) {
	backoff := time.Second
	for {
		st, err := store.Open(ctx, cfg.DatabaseURL, wiring.StoreOptions(cfg, maxConns))
		if err == nil {
			if err = st.Ping(ctx); err == nil {
				return st, nil
			}
			st.Close()
		}
		err = fmt.Errorf("database %s: %w", config.RedactURL(cfg.DatabaseURL), err)
		if !wait || ctx.Err() != nil {
			return nil, err
		}
		log.Warn("Database not reachable; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func cmdJobs(args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("jobs", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env, false)
	if err != nil {
		return err
	}
	all := registry(jobs.Deps{Config: cfg})
	enabled := map[string]bool{}
	sel, err := jobs.Select(all, cfg.Jobs)
	if err != nil {
		return &usageError{err}
	}
	for _, j := range sel {
		enabled[j.Name] = true
	}
	fmt.Fprintf(stdout, "%-14s %-22s %-10s %-8s %s\n", "JOB", "SCHEDULE", "TIMEOUT", "ENABLED", "DESCRIPTION")
	for _, j := range all {
		en := "no"
		if enabled[j.Name] {
			en = "yes"
		}
		fmt.Fprintf(stdout, "%-14s %-22s %-10s %-8s %s\n", j.Name, j.Windows(), j.EffectiveTimeout(), en, j.Description)
	}
	return nil
}

func cmdMigrate(ctx context.Context, args []string, env config.LookupEnv, stderr io.Writer) error {
	fs := newFlags("migrate", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, log, err := setup(env, true, stderr)
	if err != nil {
		return err
	}
	res, err := store.Migrate(ctx, cfg.DatabaseURL, migrations.Options{Schema: cfg.Schema(), Uploads: cfg.Uploads})
	if err != nil {
		return mappingError(fmt.Errorf("migrate: %w", err))
	}
	if res.CreatedSchema {
		log.Info("Created schema", "schema", cfg.Schema())
	}
	if res.CreatedTable {
		log.Info("Created the default uploads table", "table", cfg.Uploads.QualifiedTable())
	}
	if len(res.Applied) == 0 {
		log.Info("Database schema is current", "schema", cfg.Schema())
	} else {
		log.Info("Applied migrations", "schema", cfg.Schema(), "migrations", strings.Join(res.Applied, ","))
	}
	if res.MappingInstalled {
		log.Info("Installed uploads mapping", "table", cfg.Uploads.QualifiedTable(), "fingerprint", res.Mapping.Fingerprint())
	}
	return nil
}

// mappingError turns a mapping that does not match the catalog (errors.Join of
// *config.Error) into a usage error: exit 2, one line per variable.
func mappingError(err error) error {
	if cerrs := configErrors(err); len(cerrs) > 0 {
		return &usageError{errors.Join(cerrs...)}
	}
	return err
}

// registry is every job this binary runs: the product's, plus test-only jobs in binaries
// built with -tags e2e (never in a release build).
func registry(d jobs.Deps) []jobs.Job {
	return append(jobs.Registry(d), jobs.WithTimeouts(d, extraJobs(d))...)
}

// commandStore is the set-up of a one-shot database command (status, check, pause,
// resume): the configuration and a small pool; the caller closes the store.
func commandStore(ctx context.Context, env config.LookupEnv, stderr io.Writer) (config.Config, *store.Store, error) {
	cfg, log, err := setup(env, true, stderr)
	if err != nil {
		return cfg, nil, err
	}
	st, err := openStore(ctx, cfg, log, 2, false)
	return cfg, st, err
}
