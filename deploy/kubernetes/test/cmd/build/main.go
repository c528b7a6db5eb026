// Command build is `kustomize build` with the kustomize Go API version this module pins,
// plus the invariant checks of deploy/kubernetes/test:
//
//	cd deploy && go run ./kubernetes/test/cmd/build kubernetes                   # the base
//	cd deploy && go run ./kubernetes/test/cmd/build -check kubernetes/overlays/example
//
// It prints the rendered objects as YAML; with -check it also decodes them strictly into
// the k8s.io/api types and checks them against the worker's source (exit 1 on a problem).
package main

import (
	"flag"
	"fmt"
	"os"

	kubetest "github.com/bg-worker/bg-worker/deploy/kubernetes/test"
	"sigs.k8s.io/kustomize/api/resmap"
)

func main() {
	check := flag.Bool("check", false, "also decode strictly and check the invariants")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: build [-check] DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	dir := flag.Arg(0)
	m, err := kubetest.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := m.AsYaml()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
	if !*check {
		return
	}
	if err := checkRendered(dir, m); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", dir, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "%s: every object decodes strictly and every invariant holds\n", dir)
}

// checkRendered decodes what Build rendered and checks it against the worker's source.
func checkRendered(dir string, m resmap.ResMap) error {
	root, err := kubetest.RepoRoot(dir)
	if err != nil {
		return err
	}
	p, err := kubetest.LoadProgram(root)
	if err != nil {
		return err
	}
	objs, err := kubetest.Decode(m)
	if err != nil {
		return err
	}
	return kubetest.Check(objs, p)
}
