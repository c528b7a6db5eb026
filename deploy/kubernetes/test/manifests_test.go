package kubetest

import (
	"go/ast"
	"go/constant"
	"go/parser"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// manifests is deploy/kubernetes, the parent of this package's directory.
const manifests = ".."

// withServiceMonitor is a kustomization, written into copies of the tree, that adds the
// optional component to the base (the way an overlay would).
const withServiceMonitor = "with-servicemonitor"

var loadProgram = sync.OnceValues(func() (Program, error) {
	root, err := RepoRoot(".")
	if err != nil {
		return Program{}, err
	}
	return LoadProgram(root)
})

func program(t *testing.T) Program {
	t.Helper()
	p, err := loadProgram()
	if err != nil {
		t.Fatalf("reading the worker's source: %v", err)
	}
	return p
}

// copyTree copies deploy/kubernetes into a temporary directory (without this Go
// package) and adds the with-servicemonitor kustomization.
func copyTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	src, err := filepath.Abs(manifests)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if rel == "test" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dst, withServiceMonitor, "kustomization.yaml"), `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../base
components:
  - ../components/servicemonitor
`)
	return dst
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// renderAndCheck renders dir and checks it: the one function both the good manifests and
// every mutation go through.
func renderAndCheck(t *testing.T, dir string) (Objects, error) {
	t.Helper()
	objs, err := Render(dir)
	if err != nil {
		return objs, err
	}
	return objs, Check(objs, program(t))
}

// TestManifests renders every kustomization this directory ships (the base as
// `kubectl apply -k deploy/kubernetes` sees it, the example overlay, the ServiceMonitor
// component on the base) and checks the invariants on each.
func TestManifests(t *testing.T) {
	tree := copyTree(t) // only for with-servicemonitor; the rest render in place
	for _, tc := range []struct {
		name string
		dir  string
		want func(t *testing.T, o Objects)
	}{
		{"kubectl apply -k deploy/kubernetes", manifests, func(t *testing.T, o Objects) {
			wantImage(t, o, "bg-worker:0.1.0")
			if len(o.ServiceMonitors) != 0 || len(o.Namespaces) != 0 {
				t.Errorf("the base renders a ServiceMonitor or Namespace")
			}
		}},
		{"base", filepath.Join(manifests, "base"), nil},
		{"overlays/example", filepath.Join(manifests, "overlays", "example"), func(t *testing.T, o Objects) {
			wantImage(t, o, "registry.example.com/acme/bg-worker:1.4.2")
			for _, d := range o.Deployments {
				if d.Namespace != "bg-worker" {
					t.Errorf("Deployment namespace %q, want bg-worker", d.Namespace)
				}
				if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != 80 {
					t.Errorf("terminationGracePeriodSeconds %v, want the overlay's 80", g)
				}
			}
			if len(o.ConfigMaps) != 1 || o.ConfigMaps[0].Data["SHUTDOWN_TIMEOUT"] != "60s" || o.ConfigMaps[0].Data["LOG_FORMAT"] != "json" {
				t.Errorf("the overlay's ConfigMap does not merge into the base's: %+v", o.ConfigMaps)
			}
		}},
		{"components/servicemonitor on the base", filepath.Join(tree, withServiceMonitor), func(t *testing.T, o Objects) {
			if len(o.ServiceMonitors) != 1 || len(o.Services) != 1 {
				t.Errorf("got %d ServiceMonitors and %d Services, want 1 and 1", len(o.ServiceMonitors), len(o.Services))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := renderAndCheck(t, tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs.Deployments) != 1 || len(objs.PDBs) != 1 || len(objs.ConfigMaps) != 1 || len(objs.ServiceAccounts) != 1 {
				t.Errorf("want 1 Deployment, PodDisruptionBudget, ConfigMap and ServiceAccount; got %d, %d, %d, %d",
					len(objs.Deployments), len(objs.PDBs), len(objs.ConfigMaps), len(objs.ServiceAccounts))
			}
			// The generated ConfigMap's name carries a content hash, and the Deployment
			// follows it: a configuration change rolls the replicas.
			if len(objs.ConfigMaps) == 1 && !strings.HasPrefix(objs.ConfigMaps[0].Name, "bg-worker-config-") {
				t.Errorf("ConfigMap %q has no content hash", objs.ConfigMaps[0].Name)
			}
			if tc.want != nil {
				tc.want(t, objs)
			}
		})
	}
}

func wantImage(t *testing.T, o Objects, want string) {
	t.Helper()
	for _, d := range o.Deployments {
		for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
			if c.Image != want {
				t.Errorf("container %s image %q, want %q", c.Name, c.Image, want)
			}
		}
	}
}

// edit is a change to one file of a copy of the tree. old must occur exactly once, so a
// mutation can never silently miss.
type edit struct {
	file, old, new string
}

// patchBase appends a JSON patch of the Deployment to the base kustomization.
func patchBase(ops string) edit {
	return edit{"base/kustomization.yaml", "resources:\n", "patches:\n  - target:\n      kind: Deployment\n    patch: |-\n" + indent(ops, "      ") + "resources:\n"}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString(prefix + line + "\n")
	}
	return b.String()
}

// TestMutations proves the checks can fail: each case breaks one thing in a copy of the
// manifests, and rendering or checking must report it.
func TestMutations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		target  string // kustomization directory inside the copy; "" is the root
		edits   []edit
		wantErr string
	}{
		{
			name:    "grace period below SHUTDOWN_TIMEOUT + LOCK_TIMEOUT/2 + margin",
			edits:   []edit{{"base/deployment.yaml", "terminationGracePeriodSeconds: 50", "terminationGracePeriodSeconds: 30"}},
			wantErr: "terminationGracePeriodSeconds 30s is below SHUTDOWN_TIMEOUT 30s + LOCK_TIMEOUT/2 5s",
		},
		{
			name:    "grace period left at Kubernetes' default",
			edits:   []edit{{"base/deployment.yaml", "      terminationGracePeriodSeconds: 50\n", ""}},
			wantErr: "terminationGracePeriodSeconds unset",
		},
		{
			name:    "SHUTDOWN_TIMEOUT raised without the grace period",
			edits:   []edit{{"base/config.env", "SHUTDOWN_TIMEOUT=30s", "SHUTDOWN_TIMEOUT=60s"}},
			wantErr: "terminationGracePeriodSeconds 50s is below SHUTDOWN_TIMEOUT 1m0s",
		},
		{
			name:    "LOCK_TIMEOUT raised without the grace period",
			edits:   []edit{{"base/config.env", "LOCK_TIMEOUT=10s", "LOCK_TIMEOUT=40s"}},
			wantErr: "LOCK_TIMEOUT/2 20s",
		},
		{
			name:    "SHUTDOWN_TIMEOUT that the worker cannot parse",
			edits:   []edit{{"base/config.env", "SHUTDOWN_TIMEOUT=30s", "SHUTDOWN_TIMEOUT=30"}},
			wantErr: `SHUTDOWN_TIMEOUT="30" is not a positive Go duration`,
		},
		{
			name:    "overlay raises SHUTDOWN_TIMEOUT but not its grace period",
			target:  "overlays/example",
			edits:   []edit{{"overlays/example/kustomization.yaml", "value: 80", "value: 60"}},
			wantErr: "terminationGracePeriodSeconds 1m0s is below SHUTDOWN_TIMEOUT 1m0s",
		},
		{
			name:    "liveness probe path misspelled",
			edits:   []edit{{"base/deployment.yaml", "livenessProbe:\n            httpGet:\n              path: /healthz", "livenessProbe:\n            httpGet:\n              path: /healtz"}},
			wantErr: `livenessProbe: path "/healtz" is not served by internal/httpapi`,
		},
		{
			name:    "readiness probe path misspelled",
			edits:   []edit{{"base/deployment.yaml", "path: /readyz", "path: /ready"}},
			wantErr: `readinessProbe: path "/ready" is not served`,
		},
		{
			name:    "liveness on /readyz (a database outage would restart every replica)",
			edits:   []edit{{"base/deployment.yaml", "livenessProbe:\n            httpGet:\n              path: /healthz", "livenessProbe:\n            httpGet:\n              path: /readyz"}},
			wantErr: `livenessProbe: path "/readyz", want "/healthz"`,
		},
		{
			name:    "HTTP_ADDR moved, probes and port not",
			edits:   []edit{{"base/config.env", "HTTP_ADDR=:8081", "HTTP_ADDR=:9090"}},
			wantErr: "HTTP_ADDR :9090 listens on 9090",
		},
		{
			name:    "health listener turned off",
			edits:   []edit{{"base/config.env", "HTTP_ADDR=:8081", "HTTP_ADDR="}},
			wantErr: "HTTP_ADDR is empty",
		},
		{
			name:    "scrape annotation on another port",
			edits:   []edit{{"base/deployment.yaml", `prometheus.io/port: "8081"`, `prometheus.io/port: "9090"`}},
			wantErr: `prometheus.io/port "9090"`,
		},
		{
			name:    "unknown field (strict decoding)",
			edits:   []edit{{"base/deployment.yaml", "periodSeconds: 2", "periodSecond: 2"}},
			wantErr: `unknown field "spec.template.spec.containers[0].startupProbe.periodSecond"`,
		},
		{
			name:    "duplicate key (rejected while rendering)",
			edits:   []edit{{"base/poddisruptionbudget.yaml", "maxUnavailable: 1", "maxUnavailable: 1\n  maxUnavailable: 2"}},
			wantErr: `mapping key "maxUnavailable" already defined`,
		},
		{
			name:    "variable internal/config does not read",
			edits:   []edit{{"base/config.env", "LOG_LEVEL=info", "LOG_LEVEL=info\nWORKER_INTERVAL=5000"}},
			wantErr: `key "WORKER_INTERVAL" is not a variable internal/config reads`,
		},
		{
			name:    "secret in the ConfigMap",
			edits:   []edit{{"base/config.env", "LOG_LEVEL=info", "LOG_LEVEL=info\nDATABASE_URL=postgres://app:hunter2@db:5432/app"}},
			wantErr: "holds DATABASE_URL: secrets belong in a Secret",
		},
		{
			name: "secret inlined as a value",
			edits: []edit{patchBase(`- op: replace
  path: /spec/template/spec/containers/0/env/2
  value: {name: R2_ACCESS_KEY_ID, value: AKIAEXAMPLE}`)},
			wantErr: "R2_ACCESS_KEY_ID must come from a Secret",
		},
		{
			name:    "Secret object in the repository",
			edits:   []edit{{"base/kustomization.yaml", "configMapGenerator:", "secretGenerator:\n  - name: bg-worker\n    literals: [DATABASE_URL=postgres://app:hunter2@db/app]\nconfigMapGenerator:"}},
			wantErr: "is rendered from the repository",
		},
		{
			name: "secrets through envFrom hide their names",
			edits: []edit{patchBase(`- op: add
  path: /spec/template/spec/containers/0/envFrom/-
  value: {secretRef: {name: bg-worker}}`)},
			wantErr: `envFrom Secret "bg-worker"`,
		},
		{
			name:    "fixed WORKER_ID in the ConfigMap",
			edits:   []edit{{"base/config.env", "LOG_LEVEL=info", "LOG_LEVEL=info\nWORKER_ID=worker-1"}},
			wantErr: "sets WORKER_ID: every replica would have the same name",
		},
		{
			name: "fixed WORKER_ID value",
			edits: []edit{patchBase(`- op: replace
  path: /spec/template/spec/containers/0/env/0
  value: {name: WORKER_ID, value: worker-1}`)},
			wantErr: "WORKER_ID must come from the downward API",
		},
		{
			name:    "hostPort",
			edits:   []edit{{"base/deployment.yaml", "containerPort: 8081", "containerPort: 8081\n              hostPort: 8081"}},
			wantErr: "hostPort 8081",
		},
		{
			name:    "image tag latest",
			edits:   []edit{{"base/kustomization.yaml", `newTag: "0.1.0"`, `newTag: latest`}},
			wantErr: "latest is not a version",
		},
		{
			name:    "image without a tag",
			edits:   []edit{{"base/kustomization.yaml", "images:\n  - name: bg-worker\n    newTag: \"0.1.0\"\n", ""}},
			wantErr: `image "bg-worker" has no tag`,
		},
		{
			name:    "runs as root allowed",
			edits:   []edit{{"base/deployment.yaml", "runAsNonRoot: true", "runAsNonRoot: false"}},
			wantErr: "runAsNonRoot must be true",
		},
		{
			name:    "no seccomp profile",
			edits:   []edit{{"base/deployment.yaml", "        seccompProfile:\n          type: RuntimeDefault\n", ""}},
			wantErr: "seccompProfile.type must be RuntimeDefault",
		},
		{
			name: "capabilities kept",
			edits: []edit{patchBase(`- op: remove
  path: /spec/template/spec/containers/0/securityContext/capabilities`)},
			wantErr: "container bg-worker: capabilities.drop must include ALL",
		},
		{
			name: "init container may escalate",
			edits: []edit{patchBase(`- op: replace
  path: /spec/template/spec/initContainers/0/securityContext/allowPrivilegeEscalation
  value: true`)},
			wantErr: "container migrate: allowPrivilegeEscalation must be false",
		},
		{
			name: "writable root filesystem",
			edits: []edit{patchBase(`- op: replace
  path: /spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem
  value: false`)},
			wantErr: "readOnlyRootFilesystem must be true",
		},
		{
			name: "migrate on another image than the worker",
			edits: []edit{patchBase(`- op: replace
  path: /spec/template/spec/initContainers/0/image
  value: example.com/other-worker:0.1.0`)},
			wantErr: "migrations must match the binary",
		},
		{
			name:    "no PodDisruptionBudget",
			edits:   []edit{{"base/kustomization.yaml", "  - poddisruptionbudget.yaml\n", ""}},
			wantErr: "no PodDisruptionBudget selects its pods",
		},
		{
			name:    "PodDisruptionBudget that allows evicting every replica",
			edits:   []edit{{"base/poddisruptionbudget.yaml", "maxUnavailable: 1", "maxUnavailable: 3"}},
			wantErr: "maxUnavailable 3 lets a drain take every replica",
		},
		{
			name:    "no spread across nodes",
			edits:   []edit{{"base/deployment.yaml", "topologyKey: kubernetes.io/hostname", "topologyKey: example.com/rack"}},
			wantErr: "no topologySpreadConstraint over kubernetes.io/hostname",
		},
		{
			name:    "a single replica",
			edits:   []edit{{"base/deployment.yaml", "replicas: 3", "replicas: 1"}},
			wantErr: "replicas must be at least 2",
		},
		{
			name:    "memory request below the measured peak",
			edits:   []edit{{"base/deployment.yaml", "              cpu: 50m\n              memory: 64Mi", "              cpu: 50m\n              memory: 16Mi"}},
			wantErr: "memory request 16Mi is below the measured peak RSS",
		},
		{
			name:    "ServiceMonitor: unknown field",
			target:  withServiceMonitor,
			edits:   []edit{{"components/servicemonitor/servicemonitor.yaml", "interval: 30s", "intervall: 30s"}},
			wantErr: `unknown field "spec.endpoints[0].intervall"`,
		},
		{
			name:    "ServiceMonitor: metrics path misspelled",
			target:  withServiceMonitor,
			edits:   []edit{{"components/servicemonitor/servicemonitor.yaml", "path: /metrics", "path: /metric"}},
			wantErr: `path "/metric" is not served`,
		},
		{
			name:    "ServiceMonitor: Service selects other pods",
			target:  withServiceMonitor,
			edits:   []edit{{"components/servicemonitor/service.yaml", "app.kubernetes.io/component: worker", "app.kubernetes.io/component: web"}},
			wantErr: "does not select the worker's pods",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree := copyTree(t)
			for _, e := range tc.edits {
				path := filepath.Join(tree, filepath.FromSlash(e.file))
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if n := strings.Count(string(b), e.old); n != 1 {
					t.Fatalf("%s: %q occurs %d times, want exactly 1 (the mutation would not be what it says)", e.file, e.old, n)
				}
				writeFile(t, path, strings.Replace(string(b), e.old, e.new, 1))
			}
			_, err := renderAndCheck(t, filepath.Join(tree, filepath.FromSlash(tc.target)))
			if err == nil {
				t.Fatalf("the mutated manifests pass; want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error does not contain %q:\n%v", tc.wantErr, err)
			}
		})
	}
}

// TestProgram checks what LoadProgram reads from the worker's source.
func TestProgram(t *testing.T) {
	p := program(t)
	for _, r := range []string{HealthPath, ReadyPath, MetricsPath} {
		if !p.Routes[r] {
			t.Errorf("internal/httpapi does not serve %s (routes %v)", r, keys(p.Routes))
		}
	}
	if p.ShutdownTimeout <= 0 || p.LockTimeout <= 0 {
		t.Errorf("defaults SHUTDOWN_TIMEOUT %s, LOCK_TIMEOUT %s", p.ShutdownTimeout, p.LockTimeout)
	}
	if _, err := HTTPPort(p.HTTPAddr); err != nil {
		t.Errorf("default HTTP_ADDR: %v", err)
	}
	if p.PeakRSSBytes < 1e6 {
		t.Errorf("peak RSS %d bytes", p.PeakRSSBytes)
	}
	t.Logf("config names %d, routes %v, SHUTDOWN_TIMEOUT %s, LOCK_TIMEOUT %s, HTTP_ADDR %q, peak RSS %d",
		len(p.ConfigNames), keys(p.Routes), p.ShutdownTimeout, p.LockTimeout, p.HTTPAddr, p.PeakRSSBytes)
}

func TestEval(t *testing.T) {
	consts := map[string]string{
		"defaultShutdown": "30 * time.Second",
		"half":            "defaultShutdown / 2",
	}
	parsed := map[string]ast.Expr{}
	for name, src := range consts {
		e, err := parser.ParseExpr(src)
		if err != nil {
			t.Fatal(err)
		}
		parsed[name] = e
	}
	for _, tc := range []struct {
		src  string
		want time.Duration
	}{
		{"30 * time.Second", 30 * time.Second},
		{"time.Duration(5000) * time.Millisecond", 5 * time.Second},
		{"(10 * time.Second) / 4", 2500 * time.Millisecond},
		{"defaultShutdown", 30 * time.Second},
		{"half + time.Minute", 75 * time.Second},
		{"168 * time.Hour", 168 * time.Hour},
	} {
		t.Run(tc.src, func(t *testing.T) {
			e, err := parser.ParseExpr(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			v, err := eval(e, parsed)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := constant.Int64Val(constant.ToInt(v)); !ok || time.Duration(got) != tc.want {
				t.Errorf("= %v, want %s", v, tc.want)
			}
		})
	}
	e, _ := parser.ParseExpr("defaultTimeout()")
	if _, err := eval(e, parsed); err == nil {
		t.Error("a function call evaluated; want an error naming the evaluator")
	}
}

func TestHTTPPort(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want int
		ok   bool
	}{
		{":8081", 8081, true},
		{"0.0.0.0:9090", 9090, true},
		{"[::]:8081", 8081, true},
		{"8081", 0, false},
		{":http", 0, false},
		{":0", 0, false},
	} {
		got, err := HTTPPort(tc.addr)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("HTTPPort(%q) = %d, %v; want %d, ok %v", tc.addr, got, err, tc.want, tc.ok)
		}
	}
}
