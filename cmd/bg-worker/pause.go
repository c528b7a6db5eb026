package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/store"
)

// parseJobFlags parses `CMD JOB [flags]` or `CMD [flags] JOB` (flags before or after
// the one JOB argument) and returns JOB; anything else is a usage error.
func parseJobFlags(fs *flag.FlagSet, args []string, usage string) (string, error) {
	var name string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		name = ""
	}
	if name == "" {
		return "", &usageError{errors.New("usage: " + usage)}
	}
	return name, nil
}

// cmdPause pauses a job on every replica: from its next window its leader starts no new
// run (a running one finishes, or is cancelled with --now). Equivalent to an UPDATE of
// the job's row in worker_jobs (README, "Pause and resume").
func cmdPause(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("pause", stderr)
	forD := fs.Duration("for", 0, "pause for this long (default: until `bg-worker resume`)")
	reason := fs.String("reason", "", "why (shown by status and worker_lock_holders)")
	now := fs.Bool("now", false, "also cancel a run in progress")
	by := fs.String("by", defaultActor(env), "who pauses (shown by status)")
	name, err := parseJobFlags(fs, args, "bg-worker pause JOB [--for D] [--reason TEXT] [--now]")
	if err != nil {
		return err
	}
	if *forD < 0 {
		return &usageError{errors.New("--for must be positive")}
	}
	_, st, err := commandStore(ctx, env, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.PauseJob(ctx, name, *forD, *by, *reason, *now); err != nil {
		return unknownJob(name, err)
	}
	until := "until resumed"
	if *forD > 0 {
		until = "for " + forD.String()
	}
	fmt.Fprintf(stdout, "paused %s %s: no new runs from its next window on every replica", name, until)
	if *now {
		fmt.Fprint(stdout, "; the running run is cancelled at the leader's next tick")
	}
	fmt.Fprintln(stdout)
	return nil
}

// cmdResume ends a job's pause: it runs again from its next window, on whichever
// replica leads it.
func cmdResume(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("resume", stderr)
	name, err := parseJobFlags(fs, args, "bg-worker resume JOB")
	if err != nil {
		return err
	}
	_, st, err := commandStore(ctx, env, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.ResumeJob(ctx, name); err != nil {
		return unknownJob(name, err)
	}
	fmt.Fprintf(stdout, "resumed %s: it runs again from its next window\n", name)
	return nil
}

// unknownJob turns "no such row in worker_jobs" into a usage error (exit 2): the fleet's
// registered jobs are the ones that can be paused, whatever this binary knows.
func unknownJob(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &usageError{fmt.Errorf("unknown job %q: no replica has registered it (see bg-worker status)", name)}
	}
	return err
}

// defaultActor names who runs a command: $USER@host, else WORKER_ID's default.
func defaultActor(env config.LookupEnv) string {
	host, _ := os.Hostname()
	if u, ok := env("USER"); ok && u != "" {
		return u + "@" + host
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
