// Package logging builds bg-worker's one *slog.Logger. Text keeps the original worker's
// prefix style ("[sync-uploads] Found 3 PENDING uploads in DB"); JSON carries the same
// as fields (job, worker_id, run_id, ...).
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Component is the attribute that becomes the "[name]" prefix of text lines.
const Component = "job"

// New returns a logger writing format ("text" or "json") at level to w.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	case "text", "":
		return slog.New(NewTextHandler(w, lvl)), nil
	default:
		return nil, fmt.Errorf("LOG_FORMAT: %q must be text or json", format)
	}
}

// TextHandler writes "TIME LEVEL [component] message key=value ..." lines. The worker_id
// attribute is left out of text lines (every line of a process has the same one; JSON keeps it).
type TextHandler struct {
	mu        *sync.Mutex
	w         io.Writer
	level     slog.Leveler
	component string
	attrs     string // preformatted " key=value" pairs
	group     string
}

// NewTextHandler returns a TextHandler.
func NewTextHandler(w io.Writer, level slog.Leveler) *TextHandler {
	return &TextHandler{mu: &sync.Mutex{}, w: w, level: level, component: "bg-worker"}
}

func (h *TextHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *TextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		if h.group == "" && a.Key == Component {
			h2.component = a.Value.String()
			continue
		}
		appendAttr(&b, h.group, a)
	}
	h2.attrs = b.String()
	return &h2
}

func (h *TextHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	if h2.group != "" {
		h2.group += "."
	}
	h2.group += name
	return &h2
}

func (h *TextHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	b.WriteString(t.UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteByte(' ')
	b.WriteString(fmt.Sprintf("%-5s", r.Level.String()))
	component := h.component
	var rest strings.Builder
	r.Attrs(func(a slog.Attr) bool {
		if h.group == "" && a.Key == Component {
			component = a.Value.String()
			return true
		}
		appendAttr(&rest, h.group, a)
		return true
	})
	b.WriteString(" [")
	b.WriteString(safeComponent(component))
	b.WriteString("] ")
	b.WriteString(safeMessage(r.Message))
	b.WriteString(h.attrs)
	b.WriteString(rest.String())
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) || a.Key == "worker_id" {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			appendAttr(b, key, g)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(quoteIfNeeded(key))
	b.WriteByte('=')
	var s string
	switch a.Value.Kind() {
	case slog.KindDuration:
		s = a.Value.Duration().Round(time.Millisecond).String()
	case slog.KindTime:
		s = a.Value.Time().UTC().Format(time.RFC3339Nano)
	default:
		s = a.Value.String()
	}
	b.WriteString(quoteIfNeeded(s))
}

// Escaping. Attribute values come from anywhere (object keys, bucket and database
// errors), so none may break a line, forge a "TIME LEVEL [job]" prefix on a line of its
// own, or reach the terminal as a control sequence. As slog's own text handler does, a
// value is written as strconv.Quote writes it when it is empty or has a space, '=', a
// quote, a control character (newlines, ESC of ANSI sequences, DEL), a non-printable or
// non-ASCII space rune (U+2028, NEL) or invalid UTF-8. The message keeps its
// prefix-style text ("Found 3 PENDING uploads in DB"); only a message with something
// unsafe is quoted whole, so a key formatted into one cannot forge a line either.

// quoteIfNeeded quotes s as slog's text handler would.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " =\"") || unsafe(s) {
		return strconv.Quote(s)
	}
	return s
}

// safeMessage is the message as written: unchanged unless unsafe, then quoted.
func safeMessage(s string) string {
	if unsafe(s) {
		return strconv.Quote(s)
	}
	return s
}

// safeComponent is the "[name]" prefix: a job name, quoted if it could break the
// prefix itself.
func safeComponent(s string) string {
	if strings.ContainsAny(s, " []\"") || unsafe(s) {
		return strconv.Quote(s)
	}
	return s
}

// unsafe reports a control character, a rune strconv.Quote would escape (anything
// not printable, every space but ' '), or invalid UTF-8.
func unsafe(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || !strconv.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}
