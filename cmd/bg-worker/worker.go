package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/httpapi"
	"github.com/bg-worker/bg-worker/internal/jobs"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/wiring"
)

// cmdRun is the worker loop.
func cmdRun(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, log, err := setup(env, true, stderr)
	if err != nil {
		return err
	}
	reporter := newSentry(cfg, log) // nil without SENTRY_DSN
	defer reporter.Flush()
	m := metrics.New()
	deps, err := newDeps(cfg, log, m)
	if err != nil {
		return err
	}
	selected, err := selectJobs(cfg, deps)
	if err != nil {
		return err
	}
	connCfg, err := store.ParseConfig(cfg.DatabaseURL, cfg.WorkerID)
	if err != nil {
		return &usageError{&config.Error{Var: "DATABASE_URL", Msg: err.Error()}}
	}
	log.Info(fmt.Sprintf("Starting background worker (interval: %dms)", cfg.Interval.Milliseconds()),
		"jobs", jobNames(selected), "lock_timeout", cfg.LockTimeout, "database", config.RedactURL(cfg.DatabaseURL))

	// The HTTP listener starts before the database is reachable so probes can tell
	// "alive but not ready" from "dead".
	var schedP atomic.Pointer[scheduler.Scheduler]
	var storeP atomic.Pointer[store.Store]
	checks := httpapi.Checks{
		Alive: func(now time.Time) error {
			if s := schedP.Load(); s != nil {
				return s.Healthy(now)
			}
			return nil // still connecting: alive, not ready
		},
		Ready: func(ctx context.Context) error {
			st := storeP.Load()
			if st == nil {
				return fmt.Errorf("database not connected yet")
			}
			if err := schemaReady(ctx, st); err != nil {
				return err
			}
			if schedP.Load() == nil {
				return fmt.Errorf("scheduler not started yet")
			}
			return nil
		},
	}
	g, gctx := errgroup.WithContext(ctx)
	if cfg.HTTPAddr != "" {
		g.Go(func() error {
			return httpapi.Serve(gctx, cfg.HTTPAddr, httpapi.Handler(checks, m.Registry), log, func(a net.Addr) {})
		})
	}
	g.Go(func() error {
		st, err := openStore(gctx, cfg, log, wiring.WorkerPoolSize(cfg), true)
		if err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		defer st.Close()
		storeP.Store(st)
		if err := waitForSchema(gctx, st, log); err != nil {
			return nil // shutdown while waiting
		}
		mapping, err := st.CheckMapping(gctx, cfg.Uploads)
		if err != nil {
			return mappingError(err)
		}
		log.Info("Uploads table", "table", cfg.Uploads.QualifiedTable(), "id", mapping.ID.Name, "key", mapping.Key.Name,
			"status", mapping.Status.Name, "schema", cfg.Schema())
		for _, j := range registry(deps) { // calendar schedules for bgworker_next_tick_timestamp_seconds
			m.DB.SetSchedule(j.Name, j.Windows())
		}
		m.DB.Attach(metrics.NewStoreSource(st, cfg.R2Prefix), log) // fleet-wide gauges from the database
		defer m.DB.Attach(nil, nil)
		if advice, err := st.UploadIndexAdvice(gctx, mapping); err != nil {
			log.Warn("Could not check the uploads table's indexes", "error", err)
		} else {
			for _, a := range advice {
				log.Warn("Uploads table lacks an index: "+a.Why+"; create it with", "sql", a.Statement)
			}
		}
		if err := scheduler.RegisterJobs(gctx, st, log, selected, true); err != nil {
			return err
		}
		s, err := scheduler.New(scheduler.Options{
			WorkerID: cfg.WorkerID, ConnConfig: connCfg, Store: st, Logger: log,
			Lock:            wiring.LockOptions(cfg),
			ShutdownTimeout: cfg.ShutdownTimeout, MaxFailures: cfg.LeaderMaxFailures, Observer: m,
			Hooks: reporter.Hooks(),
		}, selected)
		if err != nil {
			return err
		}
		schedP.Store(s)
		err = s.Run(gctx)
		log.Info("Background worker stopped")
		return err
	})
	return g.Wait()
}

func jobNames(js []jobs.Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.Name
	}
	return out
}

func schemaReady(ctx context.Context, st *store.Store) error {
	if err := st.SchemaAccess(ctx); err != nil {
		return err
	}
	applied, latest, err := st.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if applied < latest {
		return fmt.Errorf("database schema at version %d, this build needs %d: run `bg-worker migrate`", applied, latest)
	}
	fp, err := st.MappingFingerprint(ctx)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if fp == "" {
		return fmt.Errorf("no uploads mapping installed: run `bg-worker migrate`")
	}
	return nil
}

// waitForSchema waits until migrations are current (a migrate step may still be
// running), logging what it waits for.
func waitForSchema(ctx context.Context, st *store.Store, log *slog.Logger) error {
	warned := false
	for {
		err := schemaReady(ctx, st)
		if err == nil {
			return nil
		}
		if !warned {
			log.Warn("Waiting for the database schema", "error", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
