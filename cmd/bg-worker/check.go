package main

import (
	"context"
	"fmt"
	"io"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/store"
	"github.com/bg-worker/bg-worker/internal/wiring"
)

// cmdCheck validates the configuration against the database without changing anything:
// schema current, uploads mapping matching the catalog and the installed one, the
// recommended indexes present, this role's privileges, and a session advisory lock
// visible on its own session (a transaction-mode pooler fails that). Exit 0 when all
// hold, 1 when a problem was found, 2 for configuration errors (mapping included).
func cmdCheck(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, st, err := commandStore(ctx, env, stderr)
	if err != nil {
		return err
	}
	defer st.Close()

	problems := 0
	ok := func(format string, a ...any) { fmt.Fprintf(stdout, "ok       "+format+"\n", a...) }
	problem := func(format string, a ...any) {
		problems++
		fmt.Fprintf(stdout, "PROBLEM  "+format+"\n", a...)
	}

	if err := schemaReady(ctx, st); err != nil {
		problem("schema %s: %v", cfg.Schema(), err)
	} else {
		ok("schema %s is current", cfg.Schema())
	}

	mapping, err := st.CheckMapping(ctx, cfg.Uploads)
	if err != nil {
		if cerrs := configErrors(err); len(cerrs) > 0 {
			for _, e := range cerrs {
				fmt.Fprintf(stdout, "CONFIG   %v\n", e)
			}
			return &exitError{code: exitUsage, err: fmt.Errorf("%d configuration problem(s)", len(cerrs))}
		}
		return err
	}
	ok("uploads table %s matches the catalog and the installed mapping", cfg.Uploads.QualifiedTable())

	advice, err := st.UploadIndexAdvice(ctx, mapping)
	if err != nil {
		return err
	}
	for _, a := range advice {
		problem("uploads table: %s; create the index with:\n         %s", a.Why, a.Statement)
	}
	if len(advice) == 0 {
		ok("uploads table has the indexes a due page needs")
	}

	missing, err := st.MissingPrivileges(ctx, mapping)
	if err != nil {
		return err
	}
	for _, m := range missing {
		problem("privilege: %s", m)
	}
	if len(missing) == 0 {
		ok("role has the privileges a replica needs")
	}

	if err := checkLockSession(ctx, cfg); err != nil {
		problem("advisory lock: %v", err)
	} else {
		ok("session advisory locks hold on this connection (no transaction-mode pooler)")
	}

	if problems > 0 {
		return &exitError{code: exitFailed, err: fmt.Errorf("%d problem(s) found", problems)}
	}
	return nil
}

// configErrors collects the *config.Error leaves of an error tree.
func configErrors(err error) []error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if ce, ok := e.(*config.Error); ok {
			out = append(out, ce)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// checkLockSession takes a lock the way a leader does (lock.Session: it verifies in
// pg_locks that the lock sits on its own backend, ErrPooler otherwise) and releases it.
func checkLockSession(ctx context.Context, cfg config.Config) error {
	connCfg, err := store.ParseConfig(cfg.DatabaseURL, cfg.WorkerID)
	if err != nil {
		return err
	}
	sess := lock.NewSession(connCfg, lock.KeyFor("bg-worker check"), wiring.LockOptions(cfg))
	defer sess.Close(context.WithoutCancel(ctx))
	lease, _, err := sess.TryAcquire(ctx)
	if err != nil || lease == nil {
		return err // nil lease: another check holds it right now, which proves it visible
	}
	return sess.Release(ctx)
}
