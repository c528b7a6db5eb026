package bucket

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/faultproxy"
)

// viaProxy returns a bucket config whose requests go through a fault proxy in
// front of versitygw, and the proxy.
func viaProxy(t *testing.T, pcfg faultproxy.Config) (Config, *faultproxy.Proxy) {
	t.Helper()
	cfg, _ := testBucket(t)
	pcfg.Target = cfg.Endpoint
	p, err := faultproxy.Start(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	cfg.Endpoint = p.URL()
	return cfg, p
}

var allFaults = []faultproxy.Fault{faultproxy.Fault500, faultproxy.Fault503, faultproxy.Fault429, faultproxy.FaultReset, faultproxy.FaultStall}

// Each kind of fault is retried, on every operation, and the request then
// succeeds.
func TestFaultsAreRetried(t *testing.T) {
	t.Parallel()
	cfg, p := viaProxy(t, faultproxy.Config{StallFor: time.Minute})
	cfg.RequestTimeout = 300 * time.Millisecond
	cfg.MaxAttempts = 3
	var mu sync.Mutex
	var outcomes []string
	cfg.Observer = func(op, outcome string) { mu.Lock(); outcomes = append(outcomes, op+"/"+outcome); mu.Unlock() }
	c := newClient(t, cfg)
	ctx := ctxT(t)
	put(t, c, "obj", "hello", "text/plain")

	for _, f := range allFaults {
		t.Run(f.String(), func(t *testing.T) {
			check := func(op string, call func() error) {
				t.Helper()
				p.ResetStats()
				mu.Lock()
				outcomes = nil
				mu.Unlock()
				// Two failed attempts, the third succeeds; CheckBucket (the one probe
				// of a down bucket) retries once: one failed attempt, the second succeeds.
				faults := 2
				if op == OpHeadBucket {
					faults = checkBucketAttempts - 1
				}
				for range faults {
					p.QueueFaults(f)
				}
				start := time.Now()
				if err := call(); err != nil {
					t.Fatalf("%s after %d %s faults: %v", op, faults, f, err)
				}
				st := p.Stats()
				if st.Requests != int64(faults+1) || st.Faults != int64(faults) || st.ByFault[f.String()] != int64(faults) {
					t.Fatalf("%s: proxy saw %+v; want %d requests, %d %s faults", op, st, faults+1, faults, f)
				}
				if f == faultproxy.FaultStall && time.Since(start) < time.Duration(faults)*cfg.RequestTimeout {
					t.Fatalf("%s: returned after %v, before %d attempt timeouts", op, time.Since(start), faults)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(outcomes) != 1 || outcomes[0] != op+"/ok" {
					t.Fatalf("observer: %v; want one %s/ok", outcomes, op)
				}
			}
			check(OpHead, func() error {
				o, err := c.Head(ctx, "obj")
				if err == nil && (o.Size != 5 || o.ETag != md5hex("hello")) {
					err = fmt.Errorf("wrong object %+v", o)
				}
				return err
			})
			check(OpHeadBucket, func() error { return c.CheckBucket(ctx) })
			check(OpList, func() error {
				n := 0
				err := c.List(ctx, "", func(page []Object) error { n += len(page); return nil })
				if err == nil && n != 1 {
					err = fmt.Errorf("listed %d objects", n)
				}
				return err
			})
			check(OpDelete, func() error {
				d, err := c.Delete(ctx, []string{"never-there"})
				if err == nil && len(d) != 1 {
					err = fmt.Errorf("deleted %q", d)
				}
				return err
			})
		})
	}
}

// When every attempt fails, the error is transient (never NotFound), and the
// client made exactly MaxAttempts attempts without hanging.
func TestExhaustedRetriesAreTransient(t *testing.T) {
	t.Parallel()
	cfg, p := viaProxy(t, faultproxy.Config{StallFor: time.Minute})
	cfg.RequestTimeout = 200 * time.Millisecond
	cfg.MaxAttempts = 3
	c := newClient(t, cfg)
	ctx := ctxT(t)

	for _, f := range allFaults {
		t.Run(f.String(), func(t *testing.T) {
			var faults faultproxy.Faults
			switch f {
			case faultproxy.Fault500:
				faults.Err500 = 1
			case faultproxy.Fault503:
				faults.Err503 = 1
			case faultproxy.Fault429:
				faults.Err429 = 1
			case faultproxy.FaultReset:
				faults.Reset = 1
			case faultproxy.FaultStall:
				faults.Stall = 1
			}
			if err := p.SetFaults(faults); err != nil {
				t.Fatal(err)
			}
			defer p.SetFaults(faultproxy.Faults{})
			p.ResetStats()
			start := time.Now()
			_, err := c.Head(ctx, "missing-or-not-we-cannot-know")
			elapsed := time.Since(start)
			if err == nil || !IsTransient(err) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAccessDenied) {
				t.Fatalf("err = %v (transient %v); want a transient error", err, IsTransient(err))
			}
			n, want := p.Stats().Requests, int64(cfg.MaxAttempts)
			// net/http itself resends an idempotent request once when a
			// reused connection dies before any response, so a reset can
			// cost up to two requests per attempt.
			if n != want && !(f == faultproxy.FaultReset && n > want && n <= 2*want) {
				t.Fatalf("%d requests reached the proxy, want %d", n, want)
			}
			if f == faultproxy.FaultStall {
				var at *AttemptTimeoutError
				if !errors.As(err, &at) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("stall: err = %v; want an AttemptTimeoutError", err)
				}
				if elapsed > time.Duration(cfg.MaxAttempts)*cfg.RequestTimeout+2*time.Second {
					t.Fatalf("stall: took %v", elapsed)
				}
			}
			t.Logf("%s: %v", f, err)
		})
	}
}

// Random faults at a moderate rate never change the answer: existing objects
// are found, missing ones are NotFound, nothing is lost.
func TestRandomFaultsDoNotChangeAnswers(t *testing.T) {
	t.Parallel()
	cfg, p := viaProxy(t, faultproxy.Config{})
	cfg.MaxAttempts = 10
	cfg.RequestTimeout = 500 * time.Millisecond
	c := newClient(t, cfg)
	ctx := ctxT(t)
	for i := range 20 {
		put(t, c, fmt.Sprint("k/", i), "x", "")
	}
	if err := p.SetConfig(faultproxy.Config{Err500: 0.1, Err503: 0.1, Err429: 0.1, Reset: 0.1, Stall: 0.02, StallFor: time.Minute, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	p.ResetStats()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range 40 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := c.Head(ctx, fmt.Sprint("k/", i))
			exists := i < 20
			if exists && err != nil || !exists && !errors.Is(err, ErrNotFound) {
				t.Errorf("key %d (exists %v): %v", i, exists, err)
			}
		}()
	}
	wg.Wait()
	// Each wrong answer failed the test above. That only means something if the faults hit
	// these HEADs: some did, and each faulted request was answered by a later attempt
	// (every key needs one forwarded request for its right answer).
	st := p.Stats()
	t.Logf("%d requests, %d faults %v", st.Requests, st.Faults, st.ByFault)
	if st.Faults == 0 {
		t.Errorf("no fault reached the 40 HEADs (proxy %+v): the test checked nothing", st)
	}
	if st.Requests-st.Faults < 40 {
		t.Errorf("%d requests, %d faulted: fewer than the 40 forwarded answers the right results need", st.Requests, st.Faults)
	}
	if st.MaxInFlight > 8 {
		t.Errorf("%d requests in flight; the test sends at most 8 at once", st.MaxInFlight)
	}
}

// A 32-way fan-out reuses its connections instead of opening new ones per
// request (the reason MaxConcurrency sizes the idle pool).
func TestFanOutReusesConnections(t *testing.T) {
	t.Parallel()
	cfg, p := viaProxy(t, faultproxy.Config{Latency: 10 * time.Millisecond})
	cfg.MaxConcurrency = 32
	c := newClient(t, cfg)
	ctx := ctxT(t)
	put(t, c, "obj", "x", "")
	p.ResetStats()
	const rounds, width = 5, 32
	for range rounds {
		var wg sync.WaitGroup
		for range width {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Head(ctx, "obj"); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	st := p.Stats()
	if st.Requests != rounds*width || st.MaxInFlight > width {
		t.Fatalf("proxy stats %+v", st)
	}
	// The SDK's default client would keep 10 idle connections and open
	// ~22 new ones every round (> 100 in all).
	if st.Connections > width+4 {
		t.Fatalf("%d connections for %d requests in rounds of %d: connections are not reused", st.Connections, st.Requests, width)
	}
	t.Logf("%d requests over %d connections, max in flight %d", st.Requests, st.Connections, st.MaxInFlight)
}

// The caller's context bounds the whole request: cancelling it during a stall
// returns at once with a non-transient error; its deadline is transient.
func TestCallerContext(t *testing.T) {
	t.Parallel()
	cfg, p := viaProxy(t, faultproxy.Config{Stall: 1, StallFor: time.Minute})
	cfg.RequestTimeout = time.Minute
	c := newClient(t, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for p.Stats().InFlight == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := c.Head(ctx, "obj")
	if err == nil || IsTransient(err) || errors.Is(err, ErrNotFound) || time.Since(start) > 15*time.Second {
		t.Fatalf("cancelled: err = %v after %v", err, time.Since(start))
	}

	ctx, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err = c.Head(ctx, "obj")
	if !IsTransient(err) || errors.Is(err, ErrNotFound) {
		t.Fatalf("deadline: err = %v", err)
	}
	if n := p.Stats().Requests; n != 2 {
		t.Fatalf("%d requests: a cancelled request must not be retried", n)
	}
}

// A server that answers HEAD with a bare 403 (no body, no code) is access
// denied, never NotFound, and not retried. A bare 404 is NotFound.
func TestBareStatusOnHead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status   int
		want     error
		attempts int64
	}{
		{http.StatusForbidden, ErrAccessDenied, 1},
		{http.StatusUnauthorized, ErrAccessDenied, 1},
		{http.StatusNotFound, ErrNotFound, 1},
		{http.StatusTooManyRequests, nil, 3},
		{http.StatusBadGateway, nil, 3},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			var hits atomic.Int64
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				w.WriteHeader(tc.status)
			}))
			defer ts.Close()
			c := newClient(t, Config{Endpoint: ts.URL, AccessKeyID: "AK", SecretAccessKey: "SK", Bucket: "b",
				MaxAttempts: 3, RetryBaseDelay: time.Millisecond})
			_, err := c.Head(ctxT(t), "k")
			for _, sentinel := range []error{ErrAccessDenied, ErrNotFound, ErrNoSuchBucket} {
				if errors.Is(err, sentinel) != (sentinel == tc.want) {
					t.Fatalf("err = %v; errors.Is(%v) = %v", err, sentinel, errors.Is(err, sentinel))
				}
			}
			if IsTransient(err) != (tc.want == nil) {
				t.Fatalf("err = %v; IsTransient = %v", err, IsTransient(err))
			}
			if hits.Load() != tc.attempts {
				t.Fatalf("%d attempts, want %d", hits.Load(), tc.attempts)
			}
		})
	}
}
