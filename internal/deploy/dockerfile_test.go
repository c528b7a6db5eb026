package deploy_test

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/bg-worker/bg-worker/internal/testenv"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t)
	var froms []string
	var final []instruction // instructions of the last stage
	args := map[string]string{}
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.args)
			final = nil
		case "ARG":
			for _, a := range strings.Fields(in.args) {
				if k, v, ok := strings.Cut(a, "="); ok && len(froms) == 0 {
					args[k] = v
				}
			}
		}
		final = append(final, in)
	}
	if len(froms) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a small final stage", len(froms))
	}
	if !strings.HasPrefix(strings.Fields(froms[len(froms)-1])[0], "gcr.io/distroless/static") ||
		!strings.Contains(froms[len(froms)-1], ":nonroot") {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static…:nonroot", froms[len(froms)-1])
	}
	// The Go of the build stage can build this module.
	goMod, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if !strings.Contains(froms[0], "golang:${GO_VERSION}") || args["GO_VERSION"] != string(m[1]) {
		t.Errorf("build stage FROM %s with GO_VERSION=%q; go.mod says go %s", froms[0], args["GO_VERSION"], m[1])
	}

	var all strings.Builder
	for _, in := range ins {
		all.WriteString(in.cmd + " " + in.args + "\n")
	}
	text := all.String()
	for _, want := range []string{
		"CGO_ENABLED=0",
		"--mount=type=cache,target=/go/pkg/mod",
		"--mount=type=cache,target=/root/.cache/go-build",
		"COPY go.mod go.sum ./",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	var user, entrypoint, healthcheck string
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "HEALTHCHECK":
			healthcheck = in.args
		}
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("final stage USER %q, want a non-root user", user)
	}
	// docker-compose.yml's healthcheck runs /bg-worker: the binary must be there.
	if entrypoint != `["/bg-worker"]` {
		t.Errorf(`ENTRYPOINT %s, want ["/bg-worker"]`, entrypoint)
	}
	if !strings.Contains(healthcheck, `CMD ["/bg-worker", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q, want CMD [\"/bg-worker\", \"healthcheck\"]", healthcheck)
	}
}

// shellWords splits a command line like sh does for plain words and double quotes.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestStaticBuild runs the Dockerfile's own `go build` line here with CGO_ENABLED=0 and
// checks that the binary is static (no interpreter, no shared libraries), as
// distroless/static needs, and that it runs.
func TestStaticBuild(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("checks a Linux ELF binary")
	}
	var build []string
	for _, in := range parseDockerfile(t) {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			words := shellWords(in.args)
			i := slices.Index(words, "go")
			build = words[i+1:]
		}
	}
	if len(build) == 0 {
		t.Fatal("the Dockerfile has no RUN … go build line")
	}
	out := filepath.Join(t.TempDir(), "bg-worker")
	for i, w := range build {
		if w == "/out/bg-worker" {
			build[i] = out
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, build...)
	cmd.Dir = testenv.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go %s: %v\n%s", strings.Join(build, " "), err, b)
	}

	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader (PT_INTERP): not static")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v: not static", libs)
	}

	// It runs (no database needed to list jobs) and its healthcheck fails cleanly when
	// nothing listens.
	run := exec.Command(out, "jobs")
	run.Env = []string{}
	b, err := run.CombinedOutput()
	if err != nil || !bytes.Contains(b, []byte("JOB")) {
		t.Errorf("bg-worker jobs: %v\n%s", err, b)
	}
	hc := exec.Command(out, "healthcheck")
	hc.Env = []string{"HTTP_ADDR=127.0.0.1:1"}
	b, err = hc.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("bg-worker healthcheck with nothing listening: %v (want exit 1)\n%s", err, b)
	}
}
