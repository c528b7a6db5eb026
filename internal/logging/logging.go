// Package logging builds bg-worker's one *slog.Logger. Text keeps the original worker's
// prefix style ("[sync-uploads] Found 3 PENDING uploads in DB"); JSON carries the same
// as fields (job, worker_id, run_id, ...).
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
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
	b.WriteString(component)
	b.WriteString("] ")
	b.WriteString(r.Message)
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
	b.WriteString(key)
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
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		s = fmt.Sprintf("%q", s)
	}
	b.WriteString(s)
}
