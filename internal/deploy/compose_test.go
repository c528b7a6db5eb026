package deploy_test

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/bg-worker/bg-worker/internal/config"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

// configVars is every variable internal/config reads: Load asks for each one.
func configVars() []string {
	seen := map[string]bool{}
	var names []string
	_, _ = config.Load(func(name string) (string, bool) {
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
		return "", false
	})
	sort.Strings(names)
	return names
}

// loadCompose loads docker-compose.yml as `docker compose` would with this environment
// (the shell's) and, if envFile is set, that file as the project's .env. The developer's
// own .env and environment are never read.
func loadCompose(t *testing.T, env map[string]string, envFile string) *types.Project {
	t.Helper()
	root := testenv.RepoRoot(t)
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts := []cli.ProjectOptionsFn{cli.WithWorkingDirectory(root), cli.WithEnv(list)}
	if envFile != "" {
		opts = append(opts, cli.WithEnvFiles(envFile), cli.WithDotEnv)
	}
	po, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := po.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %q (has %v)", name, p.ServiceNames())
	}
	return s
}

// envOf is a service's resolved environment: variables with a value (a variable listed
// without one and not set in the environment reaches the container unset).
func envOf(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// workerConfig is the configuration a container of service s would load.
func workerConfig(t *testing.T, s types.ServiceConfig) config.Config {
	t.Helper()
	cfg, err := config.Load(config.MapEnv(envOf(s)))
	if err != nil {
		t.Fatalf("%s: its environment does not load: %v", s.Name, err)
	}
	return cfg
}

func TestComposeScalingRules(t *testing.T) {
	p := loadCompose(t, nil, "")
	for _, s := range p.Services {
		if s.ContainerName != "" {
			t.Errorf("%s: container_name %q: fixed names break --scale and parallel projects", s.Name, s.ContainerName)
		}
		for _, port := range s.Ports {
			if port.Published != "" {
				t.Errorf("%s: host port %s is fixed: a second replica or project could not start", s.Name, port.Published)
			}
		}
	}
	w := service(t, p, "bg-worker")
	if w.Hostname != "" {
		t.Errorf("bg-worker: hostname %q would be shared by every replica", w.Hostname)
	}
	if _, ok := w.Environment["WORKER_ID"]; ok {
		t.Error("bg-worker: sets WORKER_ID, which every replica would share; leave it to the default (hostname-pid)")
	}
	if w.Scale != nil || (w.Deploy != nil && w.Deploy.Replicas != nil) {
		t.Error("bg-worker: scale/deploy.replicas fixed in the file; --scale decides")
	}
	if len(w.Volumes) > 0 {
		t.Errorf("bg-worker: volumes %v: replicas must not share state outside PostgreSQL", w.Volumes)
	}
	for _, port := range w.Ports {
		if port.HostIP != "127.0.0.1" {
			t.Errorf("bg-worker: port %d published on %q, want 127.0.0.1 (metrics stay local)", port.Target, port.HostIP)
		}
		if port.Target != 8081 {
			t.Errorf("bg-worker: publishes container port %d, HTTP_ADDR is :8081", port.Target)
		}
	}
	if got := envOf(w)["HTTP_ADDR"]; got != ":8081" {
		t.Errorf("bg-worker: HTTP_ADDR = %q, want :8081 (the healthcheck and the port mapping use it)", got)
	}
	if w.Restart != types.RestartPolicyUnlessStopped && w.Restart != types.RestartPolicyAlways {
		t.Errorf("bg-worker: restart %q, want unless-stopped", w.Restart)
	}
	if w.Build == nil || w.Image == "" {
		t.Error("bg-worker: needs build (the Dockerfile) and an image name")
	}
	m := service(t, p, "migrate")
	if m.Image != w.Image {
		t.Errorf("migrate runs image %q, bg-worker %q: they must be the same build", m.Image, w.Image)
	}
	if !slices.Equal(m.Command, types.ShellCommand{"migrate"}) || !slices.Equal(w.Command, types.ShellCommand{"run"}) {
		t.Errorf("commands: migrate %v, bg-worker %v; want [migrate] and [run]", m.Command, w.Command)
	}
	if m.Restart != types.RestartPolicyNo && m.Restart != "" {
		t.Errorf("migrate: restart %q: a one-shot must not restart", m.Restart)
	}
}

func TestComposeEnvNames(t *testing.T) {
	p := loadCompose(t, nil, "")
	known := map[string]bool{}
	for _, n := range configVars() {
		known[n] = true
	}
	if len(known) < 20 {
		t.Fatalf("config.Load asked for only %d variables: %v", len(known), configVars())
	}
	for _, name := range []string{"bg-worker", "migrate"} {
		for k := range service(t, p, name).Environment {
			if !known[k] {
				t.Errorf("%s sets %s, which internal/config does not read (a typo, or a variable the README would not list)", name, k)
			}
		}
	}
	w := service(t, p, "bg-worker")
	for n := range known {
		if _, ok := w.Environment[n]; !ok && n != "WORKER_ID" {
			t.Errorf("bg-worker does not pass %s: an operator could not set it in .env", n)
		}
	}
	if _, ok := envOf(service(t, p, "migrate"))["DATABASE_URL"]; !ok {
		t.Error("migrate has no DATABASE_URL")
	}
}

func TestComposeHealthchecks(t *testing.T) {
	p := loadCompose(t, nil, "")
	w := service(t, p, "bg-worker")
	if w.HealthCheck == nil || !slices.Equal([]string(w.HealthCheck.Test), []string{"CMD", "/bg-worker", "healthcheck"}) {
		t.Fatalf("bg-worker healthcheck = %+v, want [CMD /bg-worker healthcheck] (distroless: no shell, no curl)", w.HealthCheck)
	}
	// `bg-worker healthcheck` gives up after 3s; Docker must wait longer than that.
	if hc := w.HealthCheck; hc.Timeout == nil || time.Duration(*hc.Timeout) <= 3*time.Second ||
		hc.Interval == nil || hc.Retries == nil || hc.StartPeriod == nil {
		t.Errorf("bg-worker healthcheck timing incomplete or too tight: %+v", hc)
	}
	pg := service(t, p, "postgres")
	if pg.HealthCheck == nil || !strings.Contains(strings.Join(pg.HealthCheck.Test, " "), "pg_isready") {
		t.Errorf("postgres healthcheck = %+v, want pg_isready", pg.HealthCheck)
	}
	s3 := service(t, p, "versitygw")
	if s3.HealthCheck == nil || s3.HealthCheck.Disable {
		t.Fatal("versitygw has no healthcheck")
	}
	if health := envOf(s3)["VGW_HEALTH"]; health == "" || !strings.Contains(strings.Join(s3.HealthCheck.Test, " "), health) {
		t.Errorf("versitygw healthcheck %v does not probe its VGW_HEALTH endpoint %q", s3.HealthCheck.Test, health)
	}
	if m := service(t, p, "migrate"); m.HealthCheck == nil || !m.HealthCheck.Disable {
		t.Error("migrate: the image's HEALTHCHECK probes HTTP_ADDR, which migrate never serves: disable it")
	}
}

func TestComposeDependencies(t *testing.T) {
	p := loadCompose(t, nil, "")
	want := map[string]map[string]string{
		"bg-worker": {
			"postgres":  types.ServiceConditionHealthy,
			"versitygw": types.ServiceConditionHealthy,
			"migrate":   types.ServiceConditionCompletedSuccessfully,
		},
		"migrate": {"postgres": types.ServiceConditionHealthy},
	}
	for name, deps := range want {
		s := service(t, p, name)
		for dep, cond := range deps {
			got, ok := s.DependsOn[dep]
			if !ok {
				t.Errorf("%s does not depend on %s", name, dep)
				continue
			}
			if got.Condition != cond {
				t.Errorf("%s depends on %s with condition %q, want %q", name, dep, got.Condition, cond)
			}
			if !got.Required {
				t.Errorf("%s: dependency on %s is not required", name, dep)
			}
		}
	}
	for _, dep := range []string{"postgres", "versitygw"} {
		if s := service(t, p, dep); s.HealthCheck == nil || s.HealthCheck.Disable {
			t.Errorf("%s has no healthcheck, so service_healthy on it never holds", dep)
		}
	}
}

func TestComposeStopGracePeriod(t *testing.T) {
	root := testenv.RepoRoot(t)
	for _, tc := range []struct {
		name    string
		env     map[string]string
		envFile string
	}{
		{"defaults", nil, ""},
		{".env.example", nil, filepath.Join(root, ".env.example")},
		{"longer SHUTDOWN_TIMEOUT with STOP_GRACE_PERIOD", map[string]string{"SHUTDOWN_TIMEOUT": "2m", "STOP_GRACE_PERIOD": "150s"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := service(t, loadCompose(t, tc.env, tc.envFile), "bg-worker")
			cfg := workerConfig(t, w)
			if w.StopGracePeriod == nil {
				t.Fatal("bg-worker has no stop_grace_period: Docker's 10s default kills a running job")
			}
			grace := time.Duration(*w.StopGracePeriod)
			// After SIGTERM: the running job's grace, then half LOCK_TIMEOUT for a job that
			// ignores cancellation, then releasing the locks (≤ 5s) and closing (≤ 2s).
			need := cfg.ShutdownTimeout + cfg.LockTimeout/2 + 7*time.Second
			if grace <= need {
				t.Errorf("stop_grace_period %s, want more than SHUTDOWN_TIMEOUT %s + LOCK_TIMEOUT/2 %s + 7s", grace, cfg.ShutdownTimeout, cfg.LockTimeout/2)
			}
		})
	}
}

// The local stack is wired together: the worker reaches the compose postgres and
// versitygw with the credentials those services start with, in the bucket versitygw creates.
func TestComposeLocalStackWiring(t *testing.T) {
	p := loadCompose(t, nil, "")
	w := service(t, p, "bg-worker")
	cfg := workerConfig(t, w)
	if err := cfg.RequireDatabase(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.RequireBucket(); err != nil {
		t.Fatal(err)
	}

	pg := envOf(service(t, p, "postgres"))
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := u.User.Password()
	if u.Hostname() != "postgres" || u.User.Username() != pg["POSTGRES_USER"] || pass != pg["POSTGRES_PASSWORD"] ||
		strings.TrimPrefix(u.Path, "/") != pg["POSTGRES_DB"] {
		t.Errorf("DATABASE_URL %s does not match the postgres service %v", config.RedactURL(cfg.DatabaseURL), pg)
	}
	mg := workerConfig(t, service(t, p, "migrate"))
	if mg.DatabaseURL != cfg.DatabaseURL {
		t.Errorf("migrate migrates %s, the worker uses %s", config.RedactURL(mg.DatabaseURL), config.RedactURL(cfg.DatabaseURL))
	}

	s3svc := service(t, p, "versitygw")
	s3 := envOf(s3svc)
	e, err := url.Parse(cfg.R2Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	_, vgwPort, _ := net.SplitHostPort(s3["VGW_PORT"])
	if e.Hostname() != "versitygw" || e.Port() != vgwPort {
		t.Errorf("R2_ENDPOINT %s does not reach the versitygw service on its VGW_PORT %q", cfg.R2Endpoint, s3["VGW_PORT"])
	}
	if cfg.R2AccessKeyID != s3["ROOT_ACCESS_KEY_ID"] || cfg.R2SecretAccessKey != s3["ROOT_SECRET_ACCESS_KEY"] {
		t.Error("the worker's R2 credentials are not versitygw's root credentials")
	}
	if cfg.R2Region != s3["VGW_REGION"] {
		t.Errorf("the worker signs for region %q, versitygw accepts %q", cfg.R2Region, s3["VGW_REGION"])
	}
	if cfg.R2BucketName == "" || s3["BUCKET"] != cfg.R2BucketName {
		t.Errorf("versitygw creates bucket %q, the worker uses %q", s3["BUCKET"], cfg.R2BucketName)
	}
	// The bucket exists on first start: versitygw's posix backend serves every directory
	// of its root as a bucket, and the command creates that directory first.
	cmd := strings.Join(append(append([]string{}, s3svc.Entrypoint...), s3svc.Command...), " ")
	if !strings.Contains(cmd, `mkdir -p "/data/${BUCKET}"`) || !strings.Contains(cmd, "posix /data") {
		t.Errorf("versitygw does not create the bucket directory under its posix root: %s", cmd)
	}
	if !strings.HasPrefix(s3svc.Image, "versity/versitygw:") {
		t.Errorf("versitygw image %q, want the official versity/versitygw", s3svc.Image)
	}

	volumes := map[string]string{}
	for _, name := range []string{"postgres", "versitygw"} {
		for _, v := range service(t, p, name).Volumes {
			if v.Type == types.VolumeTypeVolume {
				volumes[name] = v.Source + ":" + v.Target
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s mounts volume %s, which is not declared", name, v.Source)
				}
			}
		}
	}
	if volumes["postgres"] != "pgdata:/var/lib/postgresql/data" {
		t.Errorf("postgres volume = %q, want a named volume at /var/lib/postgresql/data", volumes["postgres"])
	}
	if !strings.HasSuffix(volumes["versitygw"], ":/data") {
		t.Errorf("versitygw volume = %q, want a named volume at /data", volumes["versitygw"])
	}
}

// Real R2 and an external database: only the environment changes.
func TestComposeRealR2ByEnvOnly(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL":         "postgres://app:s3cret@db.example.com:5432/app?sslmode=require",
		"R2_ENDPOINT":          "",
		"R2_ACCOUNT_ID":        "0123456789abcdef0123456789abcdef",
		"R2_ACCESS_KEY_ID":     "AKIAEXAMPLE",
		"R2_SECRET_ACCESS_KEY": "r2-secret",
		"R2_BUCKET_NAME":       "prod-uploads",
		"R2_PREFIX":            "uploads/",
		"WORKER_INTERVAL_MS":   "10000",
	}
	w := service(t, loadCompose(t, env, ""), "bg-worker")
	cfg := workerConfig(t, w)
	if cfg.R2Endpoint != "" {
		t.Errorf("R2_ENDPOINT = %q: set to nothing in the environment, it must not fall back to the local versitygw", cfg.R2Endpoint)
	}
	if cfg.R2AccountID != env["R2_ACCOUNT_ID"] || cfg.R2AccessKeyID != env["R2_ACCESS_KEY_ID"] ||
		cfg.R2SecretAccessKey != env["R2_SECRET_ACCESS_KEY"] || cfg.R2BucketName != env["R2_BUCKET_NAME"] ||
		cfg.R2Prefix != env["R2_PREFIX"] {
		t.Errorf("R2 settings did not come through: %+v", cfg)
	}
	if cfg.DatabaseURL != env["DATABASE_URL"] || cfg.Interval != 10*time.Second {
		t.Errorf("DATABASE_URL/WORKER_INTERVAL_MS did not come through: %s %s", config.RedactURL(cfg.DatabaseURL), cfg.Interval)
	}
	if err := cfg.RequireBucket(); err != nil {
		t.Error(err)
	}
	// The same through an .env file, as an operator would do it.
	dir := t.TempDir()
	var b strings.Builder
	for k, v := range env {
		b.WriteString(k + "=" + v + "\n")
	}
	envFile := filepath.Join(dir, ".env")
	if err := os.WriteFile(envFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2 := workerConfig(t, service(t, loadCompose(t, nil, envFile), "bg-worker"))
	if cfg2.R2Endpoint != "" || cfg2.R2AccountID != env["R2_ACCOUNT_ID"] || cfg2.DatabaseURL != env["DATABASE_URL"] {
		t.Errorf("through .env: endpoint %q account %q db %s", cfg2.R2Endpoint, cfg2.R2AccountID, config.RedactURL(cfg2.DatabaseURL))
	}
}

var (
	envLine     = regexp.MustCompile(`^#?([A-Z][A-Z0-9_]*)=`)
	composeVars = regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)`)
)

func TestEnvExample(t *testing.T) {
	root := testenv.RepoRoot(t)
	f, err := os.Open(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	named := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := envLine.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			named[m[1]] = true
		}
	}
	compose, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{}
	for _, m := range composeVars.FindAllStringSubmatch(string(compose), -1) {
		allowed[m[1]] = true
	}
	for _, n := range configVars() {
		allowed[n] = true
		if !named[n] && n != "WORKER_ID" && n != "HTTP_ADDR" {
			t.Errorf(".env.example does not mention %s", n)
		}
	}
	for n := range named {
		if !allowed[n] {
			t.Errorf(".env.example sets %s, which neither internal/config nor docker-compose.yml reads", n)
		}
	}
	if named["WORKER_ID"] || named["HTTP_ADDR"] {
		t.Error(".env.example offers WORKER_ID or HTTP_ADDR, which docker-compose.yml fixes per replica")
	}
	// Used as .env, it gives the same working local stack.
	w := service(t, loadCompose(t, nil, filepath.Join(root, ".env.example")), "bg-worker")
	cfg := workerConfig(t, w)
	if err := cfg.RequireBucket(); err != nil {
		t.Error(err)
	}
	if !strings.Contains(cfg.R2Endpoint, "versitygw") {
		t.Errorf(".env.example as .env: R2_ENDPOINT = %q, want the local versitygw", cfg.R2Endpoint)
	}
}

// A variable set to nothing in .env reaches the container as "": it must mean the default.
func TestEmptyVariableMeansDefault(t *testing.T) {
	def, err := config.Load(config.MapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range configVars() {
		if n == "HTTP_ADDR" { // empty turns the listener off, by design; compose fixes it
			continue
		}
		got, err := config.Load(config.MapEnv(map[string]string{n: ""}))
		if err != nil {
			t.Errorf("%s set to nothing: %v", n, err)
			continue
		}
		got.WorkerID, def.WorkerID = "", ""
		if !reflect.DeepEqual(got, def) {
			t.Errorf("%s set to nothing does not give the default:\n got %+v\nwant %+v", n, got, def)
		}
	}
}

func TestIgnoredSecrets(t *testing.T) {
	root := testenv.RepoRoot(t)
	for file, want := range map[string][]string{
		".gitignore":    {".env"},
		".dockerignore": {".env", ".git"},
	} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for _, w := range want {
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.TrimSpace(l) == w || strings.TrimSpace(l) == "/"+w }) {
				t.Errorf("%s does not ignore %s", file, w)
			}
		}
	}
}
