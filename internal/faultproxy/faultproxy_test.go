package faultproxy_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bg-worker/bg-worker/internal/bucket"
	"github.com/bg-worker/bg-worker/internal/faultproxy"
	"github.com/bg-worker/bg-worker/internal/testenv"
)

func start(t *testing.T, cfg faultproxy.Config) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// echo is an upstream that answers with what it received.
func echo(t *testing.T) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s host=%s body=%s", r.Method, r.RequestURI, r.Host, body)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func do(t *testing.T, c *http.Client, method, url string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Poll(t, 10*time.Second, what, cond)
}

func TestStartValidates(t *testing.T) {
	for _, cfg := range []faultproxy.Config{
		{Target: ""},
		{Target: "127.0.0.1:80"},
		{Target: "http://h/base"},
		{Target: "http://h", Err500: 1.5},
		{Target: "http://h", Err500: -0.1},
		{Target: "http://h", Err500: 0.6, Reset: 0.6},
	} {
		if p, err := faultproxy.Start(cfg); err == nil {
			p.Close()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}

// The path (escaped form, repeated slashes), the raw query, the method, the
// body and the Host header reach the upstream unchanged.
func TestForwardsExactly(t *testing.T) {
	t.Parallel()
	up := echo(t)
	p := start(t, faultproxy.Config{Target: up.URL})
	for _, uri := range []string{
		"/bucket/a%2Fb//c%20d+e%25f%23g%3Fh",
		"//leading?x=%20&y=a%2Bb&z",
		"/bucket/%E6%97%A5%F0%9F%98%80?list-type=2&prefix=a%2F&continuation-token=ab%3D%3D",
		"/bucket/./x/../y",
	} {
		req, err := http.NewRequest(http.MethodPost, p.URL()+uri, strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "signed.example:1234"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "POST " + uri + " host=signed.example:1234 body=payload"
		if resp.StatusCode != 200 || string(b) != want {
			t.Errorf("%s: got %d %q, want %q", uri, resp.StatusCode, b, want)
		}
	}
}

// Against a real versitygw: SigV4-signed requests (signed for the proxy's
// address) verify, for HEAD, GET (list) and POST with a body (delete), with
// awkward keys.
func TestSignedRequestsThroughProxy(t *testing.T) {
	t.Parallel()
	b := testBucket(t)
	p := start(t, faultproxy.Config{Target: b.Endpoint})
	keys := []string{"plain", "sp ace", "a+b", "pct%41", "hash#x", "q?x=1&y", "日本/😀", "deep/er/key"}
	for _, k := range keys {
		path := filepath.Join(b.Dir, filepath.FromSlash(k))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(k), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := bucket.Config{Endpoint: p.URL(), Region: b.Region, AccessKeyID: b.AccessKeyID, SecretAccessKey: b.SecretAccessKey, Bucket: b.Name, MaxAttempts: 1}
	c, err := bucket.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if err := c.CheckBucket(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		o, err := c.Head(ctx, k)
		if err != nil || o.Size != int64(len(k)) {
			t.Fatalf("Head(%q) = %+v, %v", k, o, err)
		}
	}
	var listed []string
	if err := c.List(ctx, "", func(page []bucket.Object) error {
		for _, o := range page {
			listed = append(listed, o.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("listed %q, want %q", listed, want)
	}
	deleted, err := c.Delete(ctx, keys)
	if err != nil || len(deleted) != len(keys) {
		t.Fatalf("Delete: %q, %v", deleted, err)
	}
	if _, err := c.Head(ctx, "plain"); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	st := p.Stats()
	if st.ByMethod["HEAD"] == 0 || st.ByMethod["GET"] == 0 || st.ByMethod["POST"] != 1 || st.Faults != 0 {
		t.Fatalf("stats %+v", st)
	}

	// The proxy does not mask authentication failures.
	cfg.SecretAccessKey = "wrong"
	bad, _ := bucket.New(cfg)
	if err := bad.CheckBucket(ctx); !errors.Is(err, bucket.ErrAccessDenied) {
		t.Fatalf("wrong secret through the proxy: %v", err)
	}
}

func TestFaultKinds(t *testing.T) {
	t.Parallel()
	up := echo(t)
	p := start(t, faultproxy.Config{Target: up.URL, StallFor: 100 * time.Millisecond})
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	for _, tc := range []struct {
		fault  faultproxy.Fault
		method string
		status int
		code   string
	}{
		{faultproxy.Fault500, "GET", 500, "<Code>InternalError</Code>"},
		{faultproxy.Fault503, "GET", 503, "<Code>SlowDown</Code>"},
		{faultproxy.Fault429, "GET", 429, "<Code>TooManyRequests</Code>"},
		{faultproxy.Fault429, "HEAD", 429, ""}, // a bare 429, as HEAD has no body
		{faultproxy.FaultNone, "GET", 200, "GET / host="},
	} {
		p.QueueFaults(tc.fault)
		status, body, err := do(t, fresh, tc.method, p.URL()+"/")
		if err != nil || status != tc.status || !strings.Contains(body, tc.code) || (tc.code == "" && body != "") {
			t.Errorf("%s %s: %d %q %v", tc.fault, tc.method, status, body, err)
		}
	}

	// Reset: the client sees a TCP RST.
	p.QueueFaults(faultproxy.FaultReset)
	if _, _, err := do(t, fresh, "GET", p.URL()+"/"); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reset: err = %v, want ECONNRESET", err)
	}

	// Stall: held for StallFor, then 504.
	p.QueueFaults(faultproxy.FaultStall)
	t0 := time.Now()
	status, _, err := do(t, fresh, "GET", p.URL()+"/")
	if err != nil || status != http.StatusGatewayTimeout || time.Since(t0) < 100*time.Millisecond {
		t.Errorf("stall: %d %v after %v", status, err, time.Since(t0))
	}

	// Stall past the client's timeout: the client gives up, and the proxy
	// notices and stops counting the request.
	if err := p.SetConfig(faultproxy.Config{StallFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	p.QueueFaults(faultproxy.FaultStall)
	impatient := &http.Client{Timeout: 100 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if _, _, err := do(t, impatient, "GET", p.URL()+"/"); err == nil {
		t.Error("stall: client did not time out")
	}
	waitFor(t, "in-flight back to 0", func() bool { return p.Stats().InFlight == 0 })

	st := p.Stats()
	if st.Faults != 7 || st.ByFault["429"] != 2 || st.ByFault["stall"] != 2 || st.ByFault["reset"] != 1 || st.Requests != 8 {
		t.Fatalf("stats %+v", st)
	}
}

func statuses(t *testing.T, p *faultproxy.Proxy, n int) []int {
	var out []int
	for range n {
		status, _, err := do(t, http.DefaultClient, "GET", p.URL()+"/")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, status)
	}
	return out
}

func TestSeededRatesAreDeterministic(t *testing.T) {
	t.Parallel()
	up := echo(t)
	cfg := faultproxy.Config{Target: up.URL, Err500: 0.2, Err503: 0.1, Err429: 0.1, Seed: 42}
	a, b := start(t, cfg), start(t, cfg)
	cfg.Seed = 43
	c := start(t, cfg)
	const n = 400
	sa, sb, sc := statuses(t, a, n), statuses(t, b, n), statuses(t, c, n)
	if !slices.Equal(sa, sb) {
		t.Fatal("same seed, different faults")
	}
	if slices.Equal(sa, sc) {
		t.Fatal("different seed, same faults")
	}
	count := map[int]int{}
	for _, s := range sa {
		count[s]++
	}
	// Expected 80 / 40 / 40 / 240; allow generous binomial slack.
	for status, want := range map[int]int{500: 80, 503: 40, 429: 40, 200: 240} {
		if got := count[status]; got < want*6/10 || got > want*14/10 {
			t.Errorf("status %d: %d of %d, want about %d", status, got, n, want)
		}
	}
	if st := a.Stats(); st.Faults != int64(n-count[200]) || st.Requests != n {
		t.Fatalf("stats %+v", st)
	}
}

func TestMatchAndRuntimeChanges(t *testing.T) {
	t.Parallel()
	up := echo(t)
	p := start(t, faultproxy.Config{Target: up.URL, Err503: 1, Match: func(r *http.Request) bool { return r.Method == http.MethodHead }})
	if s, _, _ := do(t, http.DefaultClient, "GET", p.URL()+"/"); s != 200 {
		t.Fatalf("GET not matched but got %d", s)
	}
	if s, _, _ := do(t, http.DefaultClient, "HEAD", p.URL()+"/"); s != 503 {
		t.Fatalf("HEAD matched but got %d", s)
	}
	if err := p.SetFaults(faultproxy.Faults{}); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := do(t, http.DefaultClient, "HEAD", p.URL()+"/"); s != 200 {
		t.Fatalf("after SetFaults: %d", s)
	}
	if err := p.SetFaults(faultproxy.Faults{Err500: 2}); err == nil {
		t.Fatal("invalid rate accepted")
	}

	p.SetLatency(60 * time.Millisecond)
	t0 := time.Now()
	if s, _, _ := do(t, http.DefaultClient, "GET", p.URL()+"/"); s != 200 || time.Since(t0) < 60*time.Millisecond {
		t.Fatalf("latency: %d after %v", s, time.Since(t0))
	}
	if p.Config().Latency != 60*time.Millisecond {
		t.Fatal("Config() does not reflect SetLatency")
	}
	p.ResetStats()
	if st := p.Stats(); st.Requests != 0 || st.Faults != 0 || len(st.ByMethod) != 0 {
		t.Fatalf("after ResetStats: %+v", st)
	}
}

// MaxInFlight is exact: N requests held together at the upstream count N;
// strictly sequential requests count 1; a client limited to K concurrent
// requests is never counted above K, even over many quick requests.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	const n = 16
	var arrived atomic.Int64
	release := make(chan struct{})
	var gate atomic.Bool
	gate.Store(true)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gate.Load() && arrived.Add(1) == n {
			close(release)
		}
		if gate.Load() {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(up.Close)
	p := start(t, faultproxy.Config{Target: up.URL})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, _, err := do(t, client, "GET", p.URL()+"/"); err != nil || s != 200 {
				t.Errorf("%d %v", s, err)
			}
		}()
	}
	wg.Wait()
	if st := p.Stats(); st.MaxInFlight != n || st.InFlight != 0 || st.Requests != n {
		t.Fatalf("barrier of %d: %+v", n, st)
	}

	gate.Store(false)
	p.ResetStats()
	for range 50 {
		do(t, client, "GET", p.URL()+"/")
	}
	if st := p.Stats(); st.MaxInFlight != 1 {
		t.Fatalf("sequential: MaxInFlight %d", st.MaxInFlight)
	}

	const k = 4
	p.ResetStats()
	sem := make(chan struct{}, k)
	for range 2000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			do(t, client, "GET", p.URL()+"/")
		}()
	}
	wg.Wait()
	if st := p.Stats(); st.MaxInFlight > k || st.MaxInFlight < 2 || st.Requests != 2000 {
		t.Fatalf("client limited to %d: %+v", k, st)
	}
}

func TestCloseEndsStalledRequests(t *testing.T) {
	t.Parallel()
	up := echo(t)
	p, err := faultproxy.Start(faultproxy.Config{Target: up.URL, Stall: 1, StallFor: time.Hour, Latency: 0})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := do(t, http.DefaultClient, "GET", p.URL()+"/")
		errc <- err
	}()
	waitFor(t, "the request to stall", func() bool { return p.Stats().InFlight == 1 })
	t0 := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if time.Since(t0) > 5*time.Second {
		t.Fatalf("Close took %v", time.Since(t0))
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("stalled request succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client still waiting after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}
