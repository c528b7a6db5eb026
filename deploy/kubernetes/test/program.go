package kubetest

import (
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Program is what the manifests must agree with, read from the worker's own source and
// docs at test time (not copied here, so the check follows the program as it changes).
type Program struct {
	// ConfigNames are the environment variables internal/config reads: every string
	// literal in its non-test files that looks like one (^[A-Z][A-Z0-9_]+$).
	ConfigNames map[string]bool
	// Routes are the paths internal/httpapi serves ("/healthz", "/readyz", "/metrics").
	Routes map[string]bool
	// Defaults from config.Defaults().
	ShutdownTimeout time.Duration // SHUTDOWN_TIMEOUT
	LockTimeout     time.Duration // LOCK_TIMEOUT
	HTTPAddr        string        // HTTP_ADDR
	// PeakRSSBytes is the measured peak RSS of a sync run in BENCHMARKS.md.
	PeakRSSBytes int64
}

// Module is the worker's module path; RepoRoot checks it.
const Module = "github.com/bg-worker/bg-worker"

// RepoRoot walks up from dir to the worker module's go.mod.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && regexp.MustCompile(`(?m)^module\s+`+regexp.QuoteMeta(Module)+`\s*$`).Match(b) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of %s above %s", Module, dir)
		}
	}
}

var envNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]+$`)

// LoadProgram reads internal/config, internal/httpapi and BENCHMARKS.md under root.
func LoadProgram(root string) (Program, error) {
	p := Program{ConfigNames: map[string]bool{}, Routes: map[string]bool{}}

	cfgFiles, err := parseDir(filepath.Join(root, "internal", "config"))
	if err != nil {
		return p, err
	}
	for _, f := range cfgFiles {
		ast.Inspect(f, func(n ast.Node) bool {
			if s, ok := stringLit(n); ok && envNameRE.MatchString(s) {
				p.ConfigNames[s] = true
			}
			return true
		})
	}
	for _, must := range []string{"DATABASE_URL", "WORKER_ID", "HTTP_ADDR", "SHUTDOWN_TIMEOUT", "LOCK_TIMEOUT"} {
		if !p.ConfigNames[must] {
			return p, fmt.Errorf("internal/config: found no %q literal; has the way it reads variables changed?", must)
		}
	}
	defaults, consts, err := configDefaults(cfgFiles)
	if err != nil {
		return p, err
	}
	for _, d := range []struct {
		field string
		dst   *time.Duration
	}{{"ShutdownTimeout", &p.ShutdownTimeout}, {"LockTimeout", &p.LockTimeout}} {
		e, ok := defaults[d.field]
		if !ok {
			return p, fmt.Errorf("internal/config: Defaults() sets no %s", d.field)
		}
		v, err := eval(e, consts)
		if err != nil {
			return p, fmt.Errorf("internal/config: Defaults().%s: %w", d.field, err)
		}
		n, ok := constant.Int64Val(constant.ToInt(v))
		if !ok || n <= 0 {
			return p, fmt.Errorf("internal/config: Defaults().%s = %v is not a positive duration", d.field, v)
		}
		*d.dst = time.Duration(n)
	}
	if e, ok := defaults["HTTPAddr"]; ok {
		v, err := eval(e, consts)
		if err != nil || v.Kind() != constant.String {
			return p, fmt.Errorf("internal/config: Defaults().HTTPAddr is not a constant string (%v)", err)
		}
		p.HTTPAddr = constant.StringVal(v)
	}

	httpFiles, err := parseDir(filepath.Join(root, "internal", "httpapi"))
	if err != nil {
		return p, err
	}
	for _, f := range httpFiles {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") {
				return true
			}
			if s, ok := stringLit(call.Args[0]); ok {
				// net/http patterns: "[METHOD ][HOST]/path".
				if i := strings.Index(s, "/"); i >= 0 {
					p.Routes[s[i:]] = true
				}
			}
			return true
		})
	}
	if len(p.Routes) == 0 {
		return p, errors.New("internal/httpapi: found no HandleFunc/Handle route")
	}

	bench, err := os.ReadFile(filepath.Join(root, "BENCHMARKS.md"))
	if err != nil {
		return p, err
	}
	m := regexp.MustCompile(`(?i)peak RSS[^|\n]*\|\s*([0-9.]+) MB`).FindSubmatch(bench)
	if m == nil {
		return p, errors.New("BENCHMARKS.md: no peak RSS figure (`| 2 memory | peak RSS … | 34.1 MB |`)")
	}
	mb, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return p, fmt.Errorf("BENCHMARKS.md: peak RSS %q: %w", m[1], err)
	}
	p.PeakRSSBytes = int64(mb * 1e6)
	return p, nil
}

// HTTPPort is the port of an HTTP_ADDR value (":8081", "0.0.0.0:8081").
func HTTPPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("HTTP_ADDR %q: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return 0, fmt.Errorf("HTTP_ADDR %q: port is not a number in 1-65535", addr)
	}
	return n, nil
}

func parseDir(dir string) ([]*ast.File, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no Go files", dir)
	}
	return files, nil
}

func stringLit(n ast.Node) (string, bool) {
	lit, ok := n.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// configDefaults returns the fields of the Config literal in func Defaults, and the
// package's constants (for defaults written as named constants).
func configDefaults(files []*ast.File) (map[string]ast.Expr, map[string]ast.Expr, error) {
	fields := map[string]ast.Expr{}
	consts := map[string]ast.Expr{}
	var found bool
	for _, f := range files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.GenDecl:
				if d.Tok != token.CONST {
					continue
				}
				for _, spec := range d.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, name := range vs.Names {
						if i < len(vs.Values) {
							consts[name.Name] = vs.Values[i]
						}
					}
				}
			case *ast.FuncDecl:
				if d.Recv != nil || d.Name.Name != "Defaults" || d.Body == nil {
					continue
				}
				ast.Inspect(d.Body, func(n ast.Node) bool {
					cl, ok := n.(*ast.CompositeLit)
					if !ok {
						return true
					}
					if id, ok := cl.Type.(*ast.Ident); !ok || id.Name != "Config" {
						return true
					}
					found = true
					for _, elt := range cl.Elts {
						if kv, ok := elt.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok {
								fields[k.Name] = kv.Value
							}
						}
					}
					return false
				})
			}
		}
	}
	if !found {
		return nil, nil, errors.New("internal/config: no Config{…} literal in func Defaults")
	}
	return fields, consts, nil
}

var timeUnits = map[string]time.Duration{
	"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
	"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
}

// eval evaluates a constant expression of the kinds defaults are written in:
// 30 * time.Second, time.Duration(n) * time.Millisecond, named constants, ":8081".
func eval(e ast.Expr, consts map[string]ast.Expr) (constant.Value, error) {
	return evalDepth(e, consts, 0)
}

func evalDepth(e ast.Expr, consts map[string]ast.Expr, depth int) (constant.Value, error) {
	if depth > 20 {
		return nil, errors.New("constant definitions too deep")
	}
	switch x := e.(type) {
	case *ast.BasicLit:
		v := constant.MakeFromLiteral(x.Value, x.Kind, 0)
		if v.Kind() == constant.Unknown {
			return nil, fmt.Errorf("literal %s", x.Value)
		}
		return v, nil
	case *ast.ParenExpr:
		return evalDepth(x.X, consts, depth+1)
	case *ast.UnaryExpr:
		v, err := evalDepth(x.X, consts, depth+1)
		if err != nil {
			return nil, err
		}
		return constant.UnaryOp(x.Op, v, 0), nil
	case *ast.BinaryExpr:
		a, err := evalDepth(x.X, consts, depth+1)
		if err != nil {
			return nil, err
		}
		b, err := evalDepth(x.Y, consts, depth+1)
		if err != nil {
			return nil, err
		}
		if x.Op == token.QUO && a.Kind() == constant.Int && b.Kind() == constant.Int {
			return constant.BinaryOp(a, token.QUO_ASSIGN, b), nil // integer division
		}
		return constant.BinaryOp(a, x.Op, b), nil
	case *ast.SelectorExpr:
		if pkg, ok := x.X.(*ast.Ident); ok && pkg.Name == "time" {
			if d, ok := timeUnits[x.Sel.Name]; ok {
				return constant.MakeInt64(int64(d)), nil
			}
		}
	case *ast.Ident:
		if c, ok := consts[x.Name]; ok {
			return evalDepth(c, consts, depth+1)
		}
	case *ast.CallExpr:
		// Conversions: time.Duration(n), int64(n).
		if len(x.Args) == 1 {
			return evalDepth(x.Args[0], consts, depth+1)
		}
	}
	return nil, fmt.Errorf("cannot evaluate %T; the test's evaluator (deploy/kubernetes/test/program.go) needs extending", e)
}
