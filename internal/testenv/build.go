package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bg-worker/bg-worker/internal/devservers"
)

// builds caches Build's binaries per test binary: package and tags → path or error.
var builds struct {
	mu   sync.Mutex
	dir  string
	done map[string]*builtBinary
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// Build builds the main package pkg (a path relative to the repository root, such as
// "./cmd/bg-worker") with the given build tags, once per test binary, and returns the
// binary's path. The binaries are removed when Main returns.
func Build(t testing.TB, pkg string, tags ...string) string {
	t.Helper()
	root := RepoRoot(t)
	key := pkg + "|" + strings.Join(tags, ",")
	builds.mu.Lock()
	if builds.done == nil {
		builds.done = map[string]*builtBinary{}
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "testenv-bin-")
		if err != nil {
			builds.mu.Unlock()
			t.Fatal(err)
		}
		builds.dir = dir
		onTeardown(func() { _ = os.RemoveAll(dir) })
	}
	b := builds.done[key]
	if b == nil {
		b = &builtBinary{}
		builds.done[key] = b
	}
	dir := builds.dir
	builds.mu.Unlock()
	b.once.Do(func() {
		b.path = filepath.Join(dir, filepath.Base(pkg)+"-"+randomHex(4))
		args := []string{"build", "-o", b.path}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		cmd := exec.Command(devservers.GoTool(), append(args, pkg)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}
