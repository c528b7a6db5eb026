package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// console interleaves whole lines from the demo and the replicas, each prefixed by its
// source's name.
type console struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
	width int
}

var palette = []string{"36", "33", "35", "32", "34", "91", "96", "93", "95", "92"}

func newConsole(w io.Writer, mode string) *console {
	c := &console{w: w, width: len("replica-1")}
	switch mode {
	case "always":
		c.color = true
	case "auto":
		if f, ok := w.(*os.File); ok && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb" {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				c.color = true
			}
		}
	}
	return c
}

// line writes one line as "name │ text".
func (c *console) line(name, color, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prefix := fmt.Sprintf("%-*s │", c.width, name)
	if c.color && color != "" {
		prefix = "\x1b[" + color + "m" + prefix + "\x1b[0m"
	}
	fmt.Fprintf(c.w, "%s %s\n", prefix, text)
}

// block writes several lines under one prefix without other lines in between.
func (c *console) block(name, color string, lines []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prefix := fmt.Sprintf("%-*s │", c.width, name)
	if c.color && color != "" {
		prefix = "\x1b[" + color + "m" + prefix + "\x1b[0m"
	}
	for _, l := range lines {
		fmt.Fprintf(c.w, "%s %s\n", prefix, l)
	}
}

// demo prints a line of the demo's own.
func (c *console) demo(format string, args ...any) {
	c.line("demo", "1", fmt.Sprintf(format, args...))
}

// demoBlock prints lines of the demo's own, together.
func (c *console) demoBlock(lines []string) { c.block("demo", "1", lines) }

// shortenLogLine drops the date from bg-worker's text log lines
// ("2026-01-02T15:04:05.000Z INFO ..." becomes "15:04:05.000 INFO ...").
func shortenLogLine(s string) string {
	if len(s) > 25 && s[10] == 'T' && s[23] == 'Z' && s[24] == ' ' && s[4] == '-' && s[7] == '-' {
		return s[11:23] + s[24:]
	}
	return s
}

// table formats rows as aligned columns.
func table(header []string, rows [][]string) []string {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len([]rune(h))
	}
	for _, r := range rows {
		for i, v := range r {
			if i < len(widths) && len([]rune(v)) > widths[i] {
				widths[i] = len([]rune(v))
			}
		}
	}
	format := func(r []string) string {
		var b strings.Builder
		for i, v := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(v)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(v))))
			}
		}
		return "  " + b.String()
	}
	out := []string{format(header)}
	for _, r := range rows {
		out = append(out, format(r))
	}
	return out
}
