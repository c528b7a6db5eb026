// Package kubetest renders deploy/kubernetes with the kustomize Go API, decodes every
// object strictly into the official k8s.io/api types and checks the invariants that keep
// bg-worker safe on Kubernetes (see Check). It lives in its own module (deploy/go.mod) so
// the worker's go.mod carries no Kubernetes dependency.
package kubetest

import (
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Objects are the rendered objects, by kind, in render order.
type Objects struct {
	Deployments     []*appsv1.Deployment
	ConfigMaps      []*corev1.ConfigMap
	Secrets         []*corev1.Secret
	Services        []*corev1.Service
	ServiceAccounts []*corev1.ServiceAccount
	Namespaces      []*corev1.Namespace
	PDBs            []*policyv1.PodDisruptionBudget
	Jobs            []*batchv1.Job
	ServiceMonitors []*ServiceMonitor
	// Others are decoded objects of kinds Check has no rule for (it rejects them).
	Others []runtime.Object
}

// ServiceMonitor is the part of prometheus-operator's monitoring.coreos.com/v1
// ServiceMonitor that these manifests use. It is a CRD, not in k8s.io/api: decoding is
// strict against this struct, so a field outside it (a typo, or one this file does not
// know yet) fails until it is added here on purpose.
type ServiceMonitor struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   metav1ObjectMeta   `json:"metadata"`
	Spec       ServiceMonitorSpec `json:"spec"`
}

type metav1ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ServiceMonitorSpec is the subset of the CRD's spec used here.
type ServiceMonitorSpec struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	NamespaceSelector *struct {
		MatchNames []string `json:"matchNames,omitempty"`
		Any        bool     `json:"any,omitempty"`
	} `json:"namespaceSelector,omitempty"`
	JobLabel  string `json:"jobLabel,omitempty"`
	Endpoints []struct {
		Port          string `json:"port"`
		Path          string `json:"path,omitempty"`
		Scheme        string `json:"scheme,omitempty"`
		Interval      string `json:"interval,omitempty"`
		ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		HonorLabels   bool   `json:"honorLabels,omitempty"`
	} `json:"endpoints"`
}

var (
	scheme = runtime.NewScheme()
	// Strict: unknown and duplicate fields are errors, as with kubectl's server-side
	// field validation set to Strict.
	decoder runtime.Decoder
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, batchv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	decoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

var serviceMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}

// Render runs kustomize over the kustomization in dir (Build) and decodes every object
// strictly (Decode).
func Render(dir string) (Objects, error) {
	m, err := Build(dir)
	if err != nil {
		return Objects{}, err
	}
	return Decode(m)
}

// Build runs kustomize (krusty, kubectl's -k) over the kustomization in dir on disk, with
// kustomize's default options (files only from inside each kustomization's root, no
// plugins).
func Build(dir string) (resmap.ResMap, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	if len(m.Resources()) == 0 {
		return m, fmt.Errorf("kustomize build %s: no objects", dir)
	}
	return m, nil
}

// Decode decodes every object Build rendered strictly into the k8s.io/api types.
func Decode(m resmap.ResMap) (Objects, error) {
	var objs Objects
	var errs []error
	for _, r := range m.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.CurId(), err))
			continue
		}
		if err := objs.add(data); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.CurId(), err))
		}
	}
	return objs, errors.Join(errs...)
}

// add decodes one object (JSON) strictly and files it by kind.
func (o *Objects) add(data []byte) error {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &tm); err != nil {
		return err
	}
	if schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind) == serviceMonitorGVK {
		sm := new(ServiceMonitor)
		strict, err := kjson.UnmarshalStrict(data, sm)
		if err != nil {
			return fmt.Errorf("decode ServiceMonitor: %w", err)
		}
		if err := errors.Join(strict...); err != nil {
			return fmt.Errorf("decode ServiceMonitor strictly: %w", err)
		}
		o.ServiceMonitors = append(o.ServiceMonitors, sm)
		return nil
	}
	obj, _, err := decoder.Decode(data, nil, nil)
	if err != nil {
		// Unknown kinds and unknown or duplicate fields end here.
		return fmt.Errorf("decode into k8s.io/api types (strict): %w", err)
	}
	switch x := obj.(type) {
	case *appsv1.Deployment:
		o.Deployments = append(o.Deployments, x)
	case *corev1.ConfigMap:
		o.ConfigMaps = append(o.ConfigMaps, x)
	case *corev1.Secret:
		o.Secrets = append(o.Secrets, x)
	case *corev1.Service:
		o.Services = append(o.Services, x)
	case *corev1.ServiceAccount:
		o.ServiceAccounts = append(o.ServiceAccounts, x)
	case *corev1.Namespace:
		o.Namespaces = append(o.Namespaces, x)
	case *policyv1.PodDisruptionBudget:
		o.PDBs = append(o.PDBs, x)
	case *batchv1.Job:
		o.Jobs = append(o.Jobs, x)
	default:
		o.Others = append(o.Others, obj)
	}
	return nil
}
