package kubetest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names the checks depend on.
const (
	WorkerContainer = "bg-worker"
	HealthPath      = "/healthz" // liveness and startup: the loop is alive
	ReadyPath       = "/readyz"  // readiness: database reachable, schema current
	MetricsPath     = "/metrics"
	// GraceMargin is the least time, beyond SHUTDOWN_TIMEOUT + LOCK_TIMEOUT/2, between
	// SIGTERM and SIGKILL: releasing locks, closing sessions, exiting.
	GraceMargin = 5 * time.Second
)

// SecretNames are variables that carry credentials: they may only come from a Secret.
var SecretNames = map[string]bool{
	"DATABASE_URL": true, "R2_ACCESS_KEY_ID": true, "R2_SECRET_ACCESS_KEY": true, "SENTRY_DSN": true,
}

// Check returns every violated invariant (errors.Join), or nil.
func Check(o Objects, p Program) error {
	c := &checker{o: o, p: p}
	c.run()
	return errors.Join(c.errs...)
}

type checker struct {
	o    Objects
	p    Program
	errs []error
}

func (c *checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) run() {
	o := c.o
	for _, x := range o.Others {
		c.fail("%s: no rule for this kind (a bare Pod, StatefulSet, …): a Deployment of identical replicas is what scales", x.GetObjectKind().GroupVersionKind())
	}
	for _, s := range o.Secrets {
		c.fail("Secret %s is rendered from the repository: secrets are created out of band and referenced by name, never inlined", s.Name)
	}
	for _, j := range o.Jobs {
		c.fail("Job %s: migrations run in the worker pods' init container (a Job's pod template is immutable, so re-applying a changed one fails)", j.Name)
	}
	for _, ns := range o.Namespaces {
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			c.fail("Namespace %s: label pod-security.kubernetes.io/enforce should be restricted (the pods meet it)", ns.Name)
		}
	}
	if len(o.Deployments) != 1 {
		c.fail("want exactly 1 Deployment, got %d", len(o.Deployments))
		return
	}
	d := o.Deployments[0]
	c.deployment(d)
	c.pdb(d)
	c.serviceMonitors(d)
}

func (c *checker) deployment(d *appsv1.Deployment) {
	name := "Deployment " + d.Name
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		c.fail("%s: replicas must be at least 2 (a standby to fail over to)", name)
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		c.fail("%s: strategy Recreate stops every replica at once; use RollingUpdate", name)
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		c.fail("%s: selector does not match the pod template's labels", name)
	}
	spec := &d.Spec.Template.Spec

	// No fixed identity or host resources: every replica must be interchangeable.
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		c.fail("%s: hostNetwork/hostPID/hostIPC", name)
	}
	if spec.NodeName != "" || spec.Hostname != "" || spec.Subdomain != "" {
		c.fail("%s: nodeName, hostname or subdomain fixes a replica's identity", name)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil || v.PersistentVolumeClaim != nil {
			c.fail("%s: volume %s is a hostPath or a PersistentVolumeClaim; replicas share nothing but the database and bucket", name, v.Name)
		}
	}
	if spec.ServiceAccountName != "" && !slices.ContainsFunc(c.o.ServiceAccounts, func(sa *corev1.ServiceAccount) bool { return sa.Name == spec.ServiceAccountName }) {
		c.fail("%s: serviceAccountName %q is not rendered", name, spec.ServiceAccountName)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		c.fail("%s: automountServiceAccountToken must be false (the worker never calls the Kubernetes API)", name)
	}

	c.podSecurity(name, spec)
	c.spread(name, spec, podLabels)

	var worker *corev1.Container
	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for i := range spec.Containers {
		if spec.Containers[i].Name == WorkerContainer {
			worker = &spec.Containers[i]
		}
	}
	if worker == nil {
		c.fail("%s: no container named %q", name, WorkerContainer)
		return
	}
	env := c.configMapEnv(name, worker)
	for i := range all {
		ct := &all[i]
		cname := fmt.Sprintf("%s container %s", name, ct.Name)
		c.image(cname, ct.Image)
		if ct.Image != worker.Image {
			c.fail("%s: image %q differs from the worker's %q (migrations must match the binary)", cname, ct.Image, worker.Image)
		}
		c.containerSecurity(cname, ct)
		c.env(cname, ct)
		c.resources(cname, ct, i >= len(spec.InitContainers) && ct.Name == WorkerContainer)
		for _, p := range ct.Ports {
			if p.HostPort != 0 {
				c.fail("%s: hostPort %d: two replicas on one node would conflict", cname, p.HostPort)
			}
		}
	}
	if !slices.ContainsFunc(spec.InitContainers, func(ct corev1.Container) bool { return slices.Equal(ct.Args, []string{"migrate"}) }) {
		c.fail("%s: no init container runs `bg-worker migrate`", name)
	}
	c.probes(name, d, worker, env)
	c.grace(name, spec, env)
}

func indexOf(cs []corev1.Container, name string) int {
	return slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == name })
}

// configMapEnv is the worker's environment from ConfigMaps (envFrom), by name.
func (c *checker) configMapEnv(name string, ct *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range ct.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		cm := c.configMap(ef.ConfigMapRef.Name)
		if cm == nil {
			c.fail("%s: envFrom ConfigMap %q is not rendered", name, ef.ConfigMapRef.Name)
			continue
		}
		for k, v := range cm.Data {
			env[ef.Prefix+k] = v
		}
	}
	for _, e := range ct.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

func (c *checker) configMap(name string) *corev1.ConfigMap {
	for _, cm := range c.o.ConfigMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

func (c *checker) image(name, image string) {
	ref, digest, _ := strings.Cut(image, "@")
	if digest != "" {
		return // pinned by digest
	}
	tag := ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		tag = ref[i+1:]
	}
	switch tag {
	case "":
		c.fail("%s: image %q has no tag (it means latest): use a version tag or a digest", name, image)
	case "latest":
		c.fail("%s: image %q: latest is not a version; use a version tag or a digest", name, image)
	}
}

func (c *checker) podSecurity(name string, spec *corev1.PodSpec) {
	sc := spec.SecurityContext
	if sc == nil {
		c.fail("%s: no pod securityContext", name)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		c.fail("%s: securityContext.runAsNonRoot must be true", name)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		c.fail("%s: securityContext.runAsUser 0 is root", name)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.fail("%s: securityContext.seccompProfile.type must be RuntimeDefault", name)
	}
}

func (c *checker) containerSecurity(name string, ct *corev1.Container) {
	sc := ct.SecurityContext
	if sc == nil {
		c.fail("%s: no securityContext", name)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.fail("%s: allowPrivilegeEscalation must be false", name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.fail("%s: readOnlyRootFilesystem must be true", name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		c.fail("%s: privileged", name)
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		c.fail("%s: runAsNonRoot overridden to false", name)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		c.fail("%s: runAsUser 0 is root", name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		c.fail("%s: capabilities.drop must include ALL", name)
	} else if len(sc.Capabilities.Add) > 0 {
		c.fail("%s: capabilities.add %v", name, sc.Capabilities.Add)
	}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.fail("%s: seccompProfile.type %s", name, sc.SeccompProfile.Type)
	}
}

// env: every variable is one internal/config reads; secrets come from a Secret;
// WORKER_ID is the pod's name.
func (c *checker) env(name string, ct *corev1.Container) {
	known := func(v, from string) {
		if !c.p.ConfigNames[v] {
			c.fail("%s: %s %q is not a variable internal/config reads", name, from, v)
		}
	}
	for _, ef := range ct.EnvFrom {
		switch {
		case ef.SecretRef != nil:
			c.fail("%s: envFrom Secret %q: reference each secret variable by name (env[].valueFrom.secretKeyRef) so every name is checked", name, ef.SecretRef.Name)
		case ef.ConfigMapRef != nil:
			cm := c.configMap(ef.ConfigMapRef.Name)
			if cm == nil {
				continue // reported by configMapEnv
			}
			for k := range cm.Data {
				v := ef.Prefix + k
				known(v, "ConfigMap "+cm.Name+" key")
				if SecretNames[v] {
					c.fail("%s: ConfigMap %s holds %s: secrets belong in a Secret", name, cm.Name, v)
				}
				if v == "WORKER_ID" {
					c.fail("%s: ConfigMap %s sets WORKER_ID: every replica would have the same name", name, cm.Name)
				}
			}
			for k := range cm.BinaryData {
				c.fail("%s: ConfigMap %s binaryData %q", name, cm.Name, k)
			}
		}
	}
	seen := map[string]bool{}
	for _, e := range ct.Env {
		known(e.Name, "env")
		if seen[e.Name] {
			c.fail("%s: env %s set twice", name, e.Name)
		}
		seen[e.Name] = true
		switch {
		case e.Name == "WORKER_ID":
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				c.fail("%s: WORKER_ID must come from the downward API (fieldRef metadata.name): unique per replica", name)
			}
		case SecretNames[e.Name]:
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				c.fail("%s: %s must come from a Secret (valueFrom.secretKeyRef), never inlined", name, e.Name)
			}
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			c.fail("%s: %s from fieldRef %s", name, e.Name, e.ValueFrom.FieldRef.FieldPath)
		}
	}
	if !seen["DATABASE_URL"] {
		c.fail("%s: no DATABASE_URL (from the Secret)", name)
	} else if i := slices.IndexFunc(ct.Env, func(e corev1.EnvVar) bool { return e.Name == "DATABASE_URL" }); ct.Env[i].ValueFrom != nil &&
		ct.Env[i].ValueFrom.SecretKeyRef != nil && ct.Env[i].ValueFrom.SecretKeyRef.Optional != nil && *ct.Env[i].ValueFrom.SecretKeyRef.Optional {
		c.fail("%s: DATABASE_URL must not be optional", name)
	}
	if ct.Name == WorkerContainer && !seen["WORKER_ID"] {
		c.fail("%s: no WORKER_ID: the default (hostname-pid) works, but the pod name is what operators see in kubectl", name)
	}
}

func (c *checker) resources(name string, ct *corev1.Container, isWorker bool) {
	r := ct.Resources
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := r.Requests[res]; !ok {
			c.fail("%s: no %s request", name, res)
		}
	}
	lim, ok := r.Limits[corev1.ResourceMemory]
	if !ok {
		c.fail("%s: no memory limit", name)
		return
	}
	if req, ok := r.Requests[corev1.ResourceMemory]; ok && req.Cmp(lim) > 0 {
		c.fail("%s: memory request %s above its limit %s", name, req.String(), lim.String())
	}
	if !isWorker {
		return
	}
	// BENCHMARKS.md's measured peak RSS, with room for the Go runtime's GC headroom.
	peak := resource.NewQuantity(c.p.PeakRSSBytes, resource.DecimalSI)
	if req := r.Requests[corev1.ResourceMemory]; req.Cmp(*peak) < 0 {
		c.fail("%s: memory request %s is below the measured peak RSS %s (BENCHMARKS.md)", name, req.String(), peak.String())
	}
	if lim.Value() < c.p.PeakRSSBytes*3/2 {
		c.fail("%s: memory limit %s is less than 1.5x the measured peak RSS %s (BENCHMARKS.md)", name, lim.String(), peak.String())
	}
}

// probes: the paths the program serves, on the port HTTP_ADDR listens on.
func (c *checker) probes(name string, d *appsv1.Deployment, ct *corev1.Container, env map[string]string) {
	addr, set := env["HTTP_ADDR"]
	if !set {
		addr = c.p.HTTPAddr
	}
	if addr == "" {
		c.fail("%s: HTTP_ADDR is empty: the health listener is off, nothing answers the probes", name)
		return
	}
	port, err := HTTPPort(addr)
	if err != nil {
		c.fail("%s: %v", name, err)
		return
	}
	if !slices.ContainsFunc(ct.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }) {
		c.fail("%s: no containerPort %d (HTTP_ADDR %s)", name, port, addr)
	}
	for _, pr := range []struct {
		kind  string
		probe *corev1.Probe
		want  string
		need  bool
	}{
		{"livenessProbe", ct.LivenessProbe, HealthPath, true},
		{"readinessProbe", ct.ReadinessProbe, ReadyPath, true},
		{"startupProbe", ct.StartupProbe, HealthPath, false},
	} {
		where := name + " " + pr.kind
		if pr.probe == nil {
			if pr.need {
				c.fail("%s: missing", where)
			}
			continue
		}
		g := pr.probe.HTTPGet
		if g == nil {
			c.fail("%s: not an httpGet probe", where)
			continue
		}
		if !c.p.Routes[g.Path] {
			c.fail("%s: path %q is not served by internal/httpapi (it serves %v)", where, g.Path, keys(c.p.Routes))
		} else if g.Path != pr.want {
			c.fail("%s: path %q, want %q", where, g.Path, pr.want)
		}
		if got, err := containerPort(ct, g.Port); err != nil {
			c.fail("%s: %v", where, err)
		} else if got != port {
			c.fail("%s: port %d, but HTTP_ADDR %s listens on %d", where, got, addr, port)
		}
	}
	if ct.LivenessProbe != nil && ct.LivenessProbe.PeriodSeconds*max(ct.LivenessProbe.FailureThreshold, 1) < 10 {
		c.fail("%s livenessProbe: period x failureThreshold under 10s restarts replicas on a hiccup", name)
	}
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		c.fail("%s: pod annotation prometheus.io/scrape is not \"true\"", name)
	}
	if ann["prometheus.io/port"] != strconv.Itoa(port) {
		c.fail("%s: pod annotation prometheus.io/port %q, but HTTP_ADDR listens on %d", name, ann["prometheus.io/port"], port)
	}
	if p := ann["prometheus.io/path"]; p != MetricsPath || !c.p.Routes[p] {
		c.fail("%s: pod annotation prometheus.io/path %q, want %q served by internal/httpapi", name, p, MetricsPath)
	}
}

func containerPort(ct *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range ct.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port %q is not a named port of container %s", p.StrVal, ct.Name)
}

// grace: SIGKILL must not come before a running job's SHUTDOWN_TIMEOUT, the LOCK_TIMEOUT/2
// fencing bound for a job that ignores cancellation, and the lock release.
func (c *checker) grace(name string, spec *corev1.PodSpec, env map[string]string) {
	dur := func(v string, def time.Duration) time.Duration {
		s, ok := env[v]
		if !ok || strings.TrimSpace(s) == "" {
			return def
		}
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			c.fail("%s: %s=%q is not a positive Go duration (the worker would exit 2)", name, v, s)
			return def
		}
		return d
	}
	shutdown := dur("SHUTDOWN_TIMEOUT", c.p.ShutdownTimeout)
	lockTimeout := dur("LOCK_TIMEOUT", c.p.LockTimeout)
	need := shutdown + lockTimeout/2 + GraceMargin
	if spec.TerminationGracePeriodSeconds == nil {
		c.fail("%s: terminationGracePeriodSeconds unset (Kubernetes' 30s); need at least %s = SHUTDOWN_TIMEOUT %s + LOCK_TIMEOUT/2 %s + %s", name, need, shutdown, lockTimeout/2, GraceMargin)
		return
	}
	if got := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; got < need {
		c.fail("%s: terminationGracePeriodSeconds %s is below SHUTDOWN_TIMEOUT %s + LOCK_TIMEOUT/2 %s + %s = %s: a running job would be SIGKILLed; raise it with SHUTDOWN_TIMEOUT", name, got, shutdown, lockTimeout/2, GraceMargin, need)
	}
}

func (c *checker) spread(name string, spec *corev1.PodSpec, podLabels labels.Set) {
	for _, t := range spec.TopologySpreadConstraints {
		if t.TopologyKey != corev1.LabelHostname {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(t.LabelSelector)
		if err != nil || t.LabelSelector == nil || !sel.Matches(podLabels) {
			c.fail("%s: topologySpreadConstraint on %s does not select the worker's pods", name, t.TopologyKey)
			continue
		}
		if t.MaxSkew < 1 {
			c.fail("%s: topologySpreadConstraint maxSkew %d", name, t.MaxSkew)
		}
		return
	}
	c.fail("%s: no topologySpreadConstraint over %s: replicas could share one node, so losing it would be an outage", name, corev1.LabelHostname)
}

func (c *checker) pdb(d *appsv1.Deployment) {
	podLabels := labels.Set(d.Spec.Template.Labels)
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	found := false
	for _, p := range c.o.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || p.Spec.Selector == nil || !sel.Matches(podLabels) {
			continue
		}
		found = true
		name := "PodDisruptionBudget " + p.Name
		switch {
		case p.Spec.MaxUnavailable != nil:
			if p.Spec.MaxUnavailable.Type == intstr.Int && int32(p.Spec.MaxUnavailable.IntValue()) >= replicas {
				c.fail("%s: maxUnavailable %s lets a drain take every replica", name, p.Spec.MaxUnavailable.String())
			}
			if p.Spec.MaxUnavailable.Type == intstr.String && p.Spec.MaxUnavailable.StrVal == "100%" {
				c.fail("%s: maxUnavailable 100%%", name)
			}
		case p.Spec.MinAvailable != nil:
			if p.Spec.MinAvailable.Type == intstr.Int && p.Spec.MinAvailable.IntValue() < 1 {
				c.fail("%s: minAvailable %s lets a drain take every replica", name, p.Spec.MinAvailable.String())
			}
			if p.Spec.MinAvailable.Type == intstr.Int && int32(p.Spec.MinAvailable.IntValue()) >= replicas {
				c.fail("%s: minAvailable %s blocks every drain", name, p.Spec.MinAvailable.String())
			}
		default:
			c.fail("%s: neither maxUnavailable nor minAvailable", name)
		}
	}
	if !found {
		c.fail("Deployment %s: no PodDisruptionBudget selects its pods: a node drain could evict every replica", d.Name)
	}
}

// serviceMonitors: each selects a rendered Service whose pods are the worker's and whose
// port reaches the worker's metrics listener.
func (c *checker) serviceMonitors(d *appsv1.Deployment) {
	podLabels := labels.Set(d.Spec.Template.Labels)
	worker := &d.Spec.Template.Spec.Containers[max(indexOf(d.Spec.Template.Spec.Containers, WorkerContainer), 0)]
	for _, sm := range c.o.ServiceMonitors {
		name := "ServiceMonitor " + sm.Metadata.Name
		if len(sm.Spec.Selector.MatchLabels) == 0 {
			c.fail("%s: empty selector", name)
			continue
		}
		if len(sm.Spec.Endpoints) == 0 {
			c.fail("%s: no endpoints", name)
		}
		var svcs []*corev1.Service
		for _, s := range c.o.Services {
			if labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(s.Labels)) {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) == 0 {
			c.fail("%s: selects no rendered Service", name)
			continue
		}
		for _, s := range svcs {
			if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
				c.fail("%s: Service %s does not select the worker's pods", name, s.Name)
			}
			for _, ep := range sm.Spec.Endpoints {
				i := slices.IndexFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
				if i < 0 {
					c.fail("%s: endpoint port %q is not a port of Service %s", name, ep.Port, s.Name)
					continue
				}
				if _, err := containerPort(worker, s.Spec.Ports[i].TargetPort); err != nil {
					c.fail("%s: Service %s targetPort: %v", name, s.Name, err)
				}
				if path := cmpOr(ep.Path, MetricsPath); !c.p.Routes[path] {
					c.fail("%s: path %q is not served by internal/httpapi", name, path)
				}
				// bg-worker's metrics carry a job label (the bg-worker job): without
				// honorLabels Prometheus renames it exported_job and every by (job) in the
				// rules and dashboard sees one job.
				if !ep.HonorLabels {
					c.fail("%s: endpoint %q needs honorLabels: true (the metrics' job label)", name, ep.Port)
				}
			}
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
