package testenv

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/devservers"
)

// Poll checks cond every few milliseconds until it holds, and fails the test (naming
// what it waited for) when within passes first. It returns how long it took. Use it
// wherever a test waits for something another goroutine or process does: never a bare
// sleep.
func Poll(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// RepoRoot is the repository's root (devservers.RepoRoot): the nearest directory above
// the working directory whose go.mod declares the worker's module, so a nested module
// such as deploy/ is not mistaken for it.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := devservers.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// LogBuffer collects what concurrent writers (loggers, child processes) write; safe for
// concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Len is how much was written so far (an offset for From).
func (b *LogBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// From is what was written after offset off.
func (b *LogBuffer) From(off int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()[off:]
}

func (b *LogBuffer) String() string { return b.From(0) }
