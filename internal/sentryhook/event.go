package sentryhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bg-worker/bg-worker/internal/lock"
	"github.com/bg-worker/bg-worker/internal/scheduler"
	"github.com/bg-worker/bg-worker/internal/store"
)

// buildEvent turns a failure into a Sentry event: the error chain as exceptions (the
// outermost titled "<job> <status>"), the panic's stack on the panic, the run in the
// "run" context and tags, and the fingerprint.
func buildEvent(f *failure, workerID string, maxDepth int) *sentry.Event {
	e := sentry.NewEvent()
	e.Level = sentry.LevelError
	e.Timestamp = f.at
	err := f.err
	if err == nil {
		err = errors.New(f.status) // abandoned: no error of its own
	}
	e.SetException(err, maxDepth)
	var pe *scheduler.PanicError
	isPanic := errors.As(f.err, &pe)
	for i := range e.Exception {
		x := &e.Exception[i]
		// The SDK gives the outermost error the sender goroutine's stack: not the run's.
		if x.Stacktrace != nil && i == len(e.Exception)-1 {
			x.Stacktrace = nil
		}
		if isPanic && x.Type == "*scheduler.PanicError" {
			x.Stacktrace = panicStack(pe.Stack)
			x.Mechanism = &sentry.Mechanism{Type: "panic", Handled: ptr(false), Data: map[string]any{"recovered_by": "bg-worker scheduler"}}
		}
	}
	if n := len(e.Exception); n > 0 {
		e.Exception[n-1].Type = f.info.Job + " " + f.status
		if isPanic && n == 1 {
			e.Exception[0].Type = f.info.Job + " panicked"
		}
	}
	if isPanic {
		e.Level = sentry.LevelFatal
	}
	e.Fingerprint = f.fingerprint
	e.Tags = map[string]string{
		"job":         f.info.Job,
		"status":      f.status,
		"trigger":     f.info.Trigger,
		"worker_id":   workerID,
		"error_class": truncate(f.class, 200),
	}
	run := sentry.Context{
		"job":       f.info.Job,
		"run_id":    f.info.RunID,
		"status":    f.status,
		"trigger":   f.info.Trigger,
		"worker_id": workerID,
		"interval":  f.info.Interval.String(),
		"timeout":   f.info.Timeout.String(),
		"failures":  f.repeats, // this event stands for this many failed runs of its fingerprint
	}
	if !f.info.TickAt.IsZero() {
		run["tick_at"] = f.info.TickAt.UTC().Format(time.RFC3339Nano)
	}
	e.Contexts = map[string]sentry.Context{"run": run}
	return e
}

func ptr[T any](v T) *T { return &v }

// Class is the error class of a failed run: what stays the same while the same failure
// repeats (no ids, counts, keys or addresses). It is "panic <value type> at <function>"
// for a panic, "timeout" for a run past its timeout, the cancellation's cause for a
// cancelled run, and otherwise the top message's first clause (digits and quoted strings
// taken out) with the root cause's kind: a PostgreSQL SQLSTATE, an S3 error code, a
// network operation, a context error, or the root error's type and shape.
func Class(status string, err error) string { return classOf(status, err, nil) }

// classOf is Class with each message scrubbed first (so no secret or key reaches the
// fingerprint, even in part).
func classOf(status string, err error, scrub func(string) string) string {
	if scrub == nil {
		scrub = func(s string) string { return s }
	}
	if err == nil {
		return status
	}
	var pe *scheduler.PanicError
	if errors.As(err, &pe) {
		c := fmt.Sprintf("panic %T", pe.Value)
		if fn := panicFunction(pe.Stack); fn != "" {
			c += " at " + fn
		}
		return c
	}
	msg := truncate(err.Error(), 1024) // the class needs the start; keep the run's cost bounded
	var te *scheduler.TimeoutError
	if errors.As(err, &te) || strings.HasPrefix(msg, "timeout:") {
		return "timeout"
	}
	if errors.Is(err, lock.ErrLockLost) {
		return "lock lost"
	}
	if status == store.StatusCancelled {
		return "cancelled: " + shape(firstClause(scrub(msg)))
	}
	top := shape(firstClause(scrub(msg)))
	return top + " / " + rootClass(err, scrub)
}

// rootClass names the root cause's kind.
func rootClass(err error, scrub func(string) string) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return "postgres " + pg.Code
	}
	var api interface{ ErrorCode() string }
	if errors.As(err, &api) && api.ErrorCode() != "" {
		return "s3 " + api.ErrorCode()
	}
	var conn *pgconn.ConnectError
	if errors.As(err, &conn) {
		return "postgres connect"
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	case errors.Is(err, context.Canceled):
		return "context canceled"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		if op.Timeout() {
			return "network " + op.Op + " timeout"
		}
		return "network " + op.Op
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "network timeout"
	}
	root := err
	for {
		next := errors.Unwrap(root)
		if next == nil {
			if m, ok := root.(interface{ Unwrap() []error }); ok && len(m.Unwrap()) > 0 && m.Unwrap()[0] != nil {
				next = m.Unwrap()[0]
			}
		}
		if next == nil {
			break
		}
		root = next
	}
	return reflect.TypeOf(root).String() + " " + shape(firstClause(scrub(truncate(root.Error(), 1024))))
}

var (
	uuidRe   = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	hexRun   = regexp.MustCompile(`\b(?:0x)?[0-9a-fA-F]{6,}\b`)
	digits   = regexp.MustCompile(`[0-9]+(?:\.[0-9]+)?`)
	spaces   = regexp.MustCompile(`\s+`)
	urlLike  = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://\S+`)
	quotedSq = regexp.MustCompile(`'[^'\s]*'`)
)

// shape is a message with what varies between occurrences taken out: quoted strings,
// URLs, hex and numbers.
func shape(s string) string {
	s = quoted.ReplaceAllString(s, `"_"`)
	s = quotedSq.ReplaceAllString(s, `'_'`)
	s = urlLike.ReplaceAllString(s, "URL")
	s = uuidRe.ReplaceAllString(s, "UUID")
	s = hexRun.ReplaceAllStringFunc(s, func(h string) string {
		if strings.ContainsAny(h, "0123456789") {
			return "X"
		}
		return h // a word such as "facade"
	})
	s = digits.ReplaceAllString(s, "N")
	s = spaces.ReplaceAllString(strings.TrimSpace(s), " ")
	return truncate(s, 80)
}

// firstClause is a message up to its first ": " (where wrapped causes begin).
func firstClause(s string) string {
	if i := strings.Index(s, ": "); i > 0 {
		return s[:i]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8Start(s[n]) {
		n--
	}
	return s[:n]
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// panicStack turns a debug.Stack() text into Sentry frames, oldest first, from the
// frame that panicked (the runtime's and the recovering frames are left out).
func panicStack(stack []byte) *sentry.Stacktrace {
	frames := parseStack(stack)
	if len(frames) == 0 {
		return nil
	}
	out := make([]sentry.Frame, 0, len(frames))
	for i := len(frames) - 1; i >= 0; i-- {
		out = append(out, frames[i])
	}
	return &sentry.Stacktrace{Frames: out}
}

// parseStack reads "function(args)\n\tfile:line +0x..." pairs, newest first, skipping
// everything up to and including the runtime's panic frame.
func parseStack(stack []byte) []sentry.Frame {
	lines := strings.Split(string(stack), "\n")
	var frames []sentry.Frame
	afterPanic := false
	sawPanic := strings.Contains(string(stack), "\npanic(")
	for i := 0; i+1 < len(lines); i++ {
		fn := lines[i]
		loc := lines[i+1]
		if fn == "" || strings.HasPrefix(fn, "\t") || strings.HasPrefix(fn, "goroutine ") || !strings.HasPrefix(loc, "\t") {
			continue
		}
		i++
		if strings.HasPrefix(fn, "created by ") {
			break
		}
		if sawPanic && !afterPanic {
			if strings.HasPrefix(fn, "panic(") {
				afterPanic = true
			}
			continue
		}
		if p := strings.LastIndexByte(fn, '('); p > 0 {
			fn = fn[:p]
		}
		file, line := strings.TrimSpace(loc), 0
		if sp := strings.LastIndex(file, " +0x"); sp > 0 {
			file = file[:sp]
		}
		if c := strings.LastIndexByte(file, ':'); c > 0 {
			line, _ = strconv.Atoi(file[c+1:])
			file = file[:c]
		}
		module, function := splitFunc(fn)
		frames = append(frames, sentry.Frame{
			Function: function, Module: module, AbsPath: file, Filename: baseName(file), Lineno: line,
			InApp: strings.HasPrefix(fn, "github.com/bg-worker/") || strings.HasPrefix(fn, "main."),
		})
	}
	return frames
}

// panicFunction is the function that panicked: the first frame after the panic.
func panicFunction(stack []byte) string {
	for _, f := range parseStack(stack) {
		if strings.HasPrefix(f.Module, "runtime") {
			continue // e.g. runtime.goPanicIndex
		}
		if f.Module != "" {
			return f.Module + "." + f.Function
		}
		return f.Function
	}
	return ""
}

// splitFunc splits "github.com/x/pkg.(*T).M" into "github.com/x/pkg" and "(*T).M".
func splitFunc(fn string) (string, string) {
	slash := strings.LastIndexByte(fn, '/')
	dot := strings.IndexByte(fn[slash+1:], '.')
	if dot < 0 {
		return "", fn
	}
	return fn[:slash+1+dot], fn[slash+1+dot+1:]
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// newCheckInID is a random 32-hex-digit id (a version-4 UUID without dashes).
func newCheckInID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}
