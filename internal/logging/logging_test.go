package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostile are values a bucket key, a bucket error or a database error can carry.
var hostile = []struct{ name, v string }{
	{"newline", "uploads/a\nb.png"},
	{"ansi", "uploads/\x1b[31mred\x1b[0m.png"},
	{"forged prefix", "x.png\n2026-01-01T00:00:00Z INFO  [sync-uploads] Sync job completed"},
	{"forged prefix CR", "x.png\r2026-01-01T00:00:00.000Z INFO  [sync-uploads] Sync job completed"},
	{"NUL DEL", "a\x00b\x7fc"},
	{"line separator", "a\u2028b\u0085c"},
	{"invalid UTF-8", "a\xffb"},
	{"tab and quote", "a\tb\"c"},
}

var linePrefix = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO |WARN |ERROR) \[[^\]]*\] `)

// checkLines asserts exactly n lines, each a whole event with the handler's prefix, and
// no raw control byte, invalid UTF-8 or Unicode line break anywhere.
func checkLines(t *testing.T, out string, n int) []string {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("%d lines for %d events:\n%s", len(lines), n, out)
	}
	for _, l := range lines {
		if !utf8.ValidString(l) {
			t.Errorf("invalid UTF-8 in %q", l)
		}
		for _, r := range l {
			if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\u0085' {
				t.Errorf("raw control character %U in %q", r, l)
			}
		}
	}
	return lines
}

func TestTextEscapesHostileValues(t *testing.T) {
	t.Parallel()
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(NewTextHandler(&buf, slog.LevelDebug)).With("worker_id", "w1")
			jlog := log.With(Component, "sync-uploads")
			jlog.Debug("Upload MISSING in R2", "upload_id", 7, "key", tc.v)   // an attribute
			jlog.Warn("Bucket check failed", "error", errors.New(tc.v))       // an error
			jlog.Info("Orphan: " + tc.v)                                      // a message built from a key
			log.With(Component, tc.v).Info("Starting sync job...")            // the prefix
			jlog.WithGroup("obj").Debug("Listed", slog.String("key", tc.v))   // a group
			log.With("bucket_error", tc.v).Info("Sync job completed", "n", 3) // WithAttrs
			lines := checkLines(t, buf.String(), 6)
			for i, l := range lines {
				if !linePrefix.MatchString(l) {
					t.Errorf("line %d lacks the prefix: %q", i, l)
				}
			}
			q := strconv.Quote(tc.v)
			for i, want := range []string{
				"[sync-uploads] Upload MISSING in R2 upload_id=7 key=" + q,
				"[sync-uploads] Bucket check failed error=" + q,
				"[sync-uploads] " + strconv.Quote("Orphan: "+tc.v),
				"[" + q + "] Starting sync job...",
				"[sync-uploads] Listed obj.key=" + q,
				"[bg-worker] Sync job completed bucket_error=" + q + " n=3",
			} {
				if !strings.HasSuffix(lines[i], want) {
					t.Errorf("line %d = %q\nwant suffix %q", i, lines[i], want)
				}
			}
		})
	}
}

func TestTextKeepsPlainLines(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		log  func(*slog.Logger)
		want string
	}{
		{"prefix style", func(l *slog.Logger) { l.With(Component, "sync-uploads").Info("Found 3 PENDING uploads in DB") },
			"INFO  [sync-uploads] Found 3 PENDING uploads in DB"},
		{"plain values bare", func(l *slog.Logger) {
			l.Info("Starting background worker (interval: 5000ms)", "jobs", "sync-uploads,prune-runs")
		},
			"INFO  [bg-worker] Starting background worker (interval: 5000ms) jobs=sync-uploads,prune-runs"},
		{"non-ASCII letters bare", func(l *slog.Logger) { l.Debug("Upload EXISTS in R2", "key", "o/ü.png") },
			"DEBUG [bg-worker] Upload EXISTS in R2 key=o/ü.png"},
		{"space, = and empty quoted", func(l *slog.Logger) { l.Warn("x", "a", "b c", "d", "e=f", "g", "") },
			`WARN  [bg-worker] x a="b c" d="e=f" g=""`},
		{"worker_id left out", func(l *slog.Logger) { l.With("worker_id", "w1").Error("Run failed", "run_id", 4) },
			"ERROR [bg-worker] Run failed run_id=4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			tc.log(slog.New(NewTextHandler(&buf, slog.LevelDebug)))
			line := checkLines(t, buf.String(), 1)[0]
			if got := line[len("2006-01-02T15:04:05.000Z "):]; got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// JSON is slog's own handler: it escapes every C0 control character (and U+2028/9), so a
// value cannot break a line; DEL and C1 controls pass as JSON allows, inside a string.
func TestJSONEscapesHostileValues(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := New(&buf, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range hostile {
		log.With(Component, "sync-uploads").Debug("Upload MISSING in R2", "key", tc.v, "error", errors.New(tc.v))
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(hostile) {
		t.Fatalf("%d lines for %d events:\n%s", len(lines), len(hostile), buf.String())
	}
	for i, l := range lines {
		for _, c := range []byte(l) {
			if c < 0x20 {
				t.Errorf("raw control byte %#x in %q", c, l)
			}
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v: %q", i, err, l)
		}
		want := strings.ToValidUTF8(hostile[i].v, "\uFFFD")
		if rec["key"] != want || rec["error"] != want || rec["job"] != "sync-uploads" {
			t.Errorf("line %d: key %q error %q job %q, want %q", i, rec["key"], rec["error"], rec["job"], want)
		}
	}
}
