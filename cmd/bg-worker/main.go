// Command bg-worker runs background jobs beside a web application: N replicas, one
// PostgreSQL advisory lock per job, exactly one runner per job per tick.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitTimeout = 3
)

// exitError carries a specific exit code; its message (if any) has been printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// usageError is a bad flag, argument or variable: exit 2, one line each.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitCode decides the process's exit code in one place and prints the error.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		printLines(stderr, ue.err)
		return exitUsage
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "bg-worker: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "bg-worker: %v\n", err)
	return exitFailed
}

// printLines prints each joined error on its own line.
func printLines(w io.Writer, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printLines(w, e)
		}
		return
	}
	fmt.Fprintf(w, "bg-worker: %v\n", err)
}
