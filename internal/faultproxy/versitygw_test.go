package faultproxy_test

// A small local harness: one versitygw per test binary, one bucket (a
// directory) per test. Skips when the binary is missing, unless CI=true.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type gw struct {
	endpoint, access, secret, dataDir, logFile string
	cmd                                        *exec.Cmd
	exited                                     chan struct{}
}

var (
	gwOnce sync.Once
	gwSrv  *gw
	gwErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if gwSrv != nil {
		gwSrv.stop()
	}
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func versitygwBin() string {
	if b := os.Getenv("VERSITYGW_BIN"); b != "" {
		return b
	}
	return filepath.Join("..", "..", ".bin", "versitygw")
}

func startGW() (*gw, error) {
	bin, err := filepath.Abs(versitygwBin())
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("versitygw binary: %w (build it: cd tools && go build -o ../.bin/versitygw github.com/versity/versitygw/cmd/versitygw)", err)
	}
	dir, err := os.MkdirTemp("", "faultproxy-test-")
	if err != nil {
		return nil, err
	}
	g := &gw{access: "K" + randHex(6), secret: randHex(20), dataDir: filepath.Join(dir, "data"), logFile: filepath.Join(dir, "versitygw.log")}
	if err := os.Mkdir(g.dataDir, 0o755); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err := g.start(bin)
		if err == nil {
			return g, nil
		}
		if attempt == 3 {
			log, _ := os.ReadFile(g.logFile)
			return nil, fmt.Errorf("start versitygw: %w\n%s", err, log)
		}
	}
}

func (g *gw) start(bin string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	logf, err := os.OpenFile(g.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--access", g.access, "--secret", g.secret, "--region", "auto", "--port", addr, "posix", g.dataDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	g.cmd, g.exited, g.endpoint = cmd, exited, "http://"+addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(g.endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited: %v", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.stop()
			return fmt.Errorf("versitygw did not answer on %s within 30s: %v", addr, err)
		}
	}
}

func (g *gw) stop() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	_ = os.RemoveAll(filepath.Dir(g.dataDir))
}

// server returns the shared versitygw, skipping (or failing with CI=true)
// when it cannot run.
func server(t testing.TB) *gw {
	t.Helper()
	gwOnce.Do(func() { gwSrv, gwErr = startGW() })
	if gwErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(gwErr)
		}
		t.Skip(gwErr)
	}
	return gwSrv
}

// testBucket creates a fresh bucket (a directory) and returns its name and
// directory.
func testBucket(t testing.TB) (*gw, string, string) {
	t.Helper()
	g := server(t)
	name := "b-" + strings.ToLower(randHex(6))
	dir := filepath.Join(g.dataDir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return g, name, dir
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
