package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
)

var (
	teardownMu sync.Mutex
	teardowns  []func()
)

// onTeardown registers f to run when Main returns, after all tests (last registered runs first).
func onTeardown(f func()) {
	teardownMu.Lock()
	defer teardownMu.Unlock()
	teardowns = append(teardowns, f)
}

// Main wraps testing.M for a package's TestMain: it runs the tests, then stops any servers
// this test binary started and removes their temporary directories.
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	teardownMu.Lock()
	fs := teardowns
	teardowns = nil
	teardownMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	return code
}

// unavailable reports that a server the test needs could not be started: a failure when
// CI=true, a skip otherwise.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("testenv: %v", err)
	}
	t.Skipf("testenv: %v (set CI=true to fail instead of skipping)", err)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// nameFor turns a test name into a lowercase identifier fragment of at most max bytes
// using only [a-z0-9] and sep.
func nameFor(t testing.TB, sep byte, max int) string {
	var b strings.Builder
	lastSep := true
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			lastSep = false
		} else if !lastSep {
			b.WriteByte(sep)
			lastSep = true
		}
		if b.Len() >= max {
			break
		}
	}
	return strings.Trim(b.String(), string(sep))
}
