package httpapi_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/httpapi"
	"github.com/bg-worker/bg-worker/internal/metrics"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// --- the handler on its own -------------------------------------------------------------

func TestHandlerProbes(t *testing.T) {
	var aliveErr, readyErr error
	m := metrics.New()
	m.RunFinished("sync-uploads", "succeeded", 120*time.Millisecond)
	h := httpapi.Handler(httpapi.Checks{
		Alive: func(time.Time) error { return aliveErr },
		Ready: func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("/readyz check runs without a deadline")
			}
			return readyErr
		},
	}, m.Registry)
	get := func(method, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("GET", "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, _ := get("GET", "/readyz"); code != 200 {
		t.Errorf("/readyz = %d, want 200", code)
	}
	aliveErr = errors.New("job sync-uploads has not ticked since 12:00:00")
	readyErr = errors.New("database: connection refused")
	if code, body := get("GET", "/healthz"); code != 503 || !strings.Contains(body, "has not ticked") {
		t.Errorf("/healthz = %d %q, want 503 naming the stalled job", code, body)
	}
	if code, body := get("GET", "/readyz"); code != 503 || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz = %d %q, want 503 with the reason", code, body)
	}
	code, body := get("GET", "/metrics")
	if code != 200 || !strings.Contains(body, `bgworker_runs_total{job="sync-uploads",status="succeeded"} 1`) {
		t.Errorf("/metrics = %d, want the run counter:\n%s", code, body)
	}
	if code, _ := get("POST", "/healthz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", code)
	}
	if code, _ := get("GET", "/nope"); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	noMetrics := httpapi.Handler(httpapi.Checks{Alive: func(time.Time) error { return nil }, Ready: func(context.Context) error { return nil }}, nil)
	rec := httptest.NewRecorder()
	noMetrics.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("/metrics without a registry = %d, want 404", rec.Code)
	}
}

func TestServeBindsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrC := make(chan net.Addr, 1)
	errC := make(chan error, 1)
	h := httpapi.Handler(httpapi.Checks{Alive: func(time.Time) error { return nil }, Ready: func(context.Context) error { return nil }}, nil)
	go func() {
		errC <- httpapi.Serve(ctx, "127.0.0.1:0", h, slog.New(slog.DiscardHandler), func(a net.Addr) { addrC <- a })
	}()
	addr := <-addrC
	resp, err := http.Get("http://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-errC:
		if err != nil {
			t.Fatalf("Serve returned %v after its context ended, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	// A taken address is an error naming HTTP_ADDR.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = httpapi.Serve(context.Background(), ln.Addr().String(), h, slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "HTTP_ADDR") {
		t.Fatalf("Serve on a taken address: %v, want an error naming HTTP_ADDR", err)
	}
}
