// Package faultproxy is a reverse proxy for tests and benchmarks that sits
// between an S3 client and an S3-compatible server. It adds latency, injects
// faults (HTTP 500, 503 SlowDown, 429, TCP reset, stalls) at configurable
// rates, and counts requests, including the most requests it ever had in
// flight at once.
//
// The proxy forwards the method, the escaped path and the raw query exactly
// as received, and keeps the client's Host header, so SigV4-signed requests
// signed for the proxy's address verify at the upstream (versitygw checks the
// Host it receives against the signature). It is deliberately not behind an
// http.ServeMux, which would clean "//" out of paths (keys with a leading
// '/') and redirect.
//
// Faults are drawn from one seeded generator: with the same Seed and the same
// order of requests the same requests fail. For exact scripts, QueueFaults
// makes the next matching requests fail in a given order.
package faultproxy

import (
	"fmt"
	"io"
	"log"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what the proxy does to one request instead of forwarding it.
type Fault int

const (
	FaultNone  Fault = iota // forward
	Fault500                // 500 InternalError
	Fault503                // 503 SlowDown
	Fault429                // 429 TooManyRequests
	FaultReset              // close the connection with a TCP RST, no response
	FaultStall              // hold the request for StallFor, then answer 504 if the client is still there
)

func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case Fault500:
		return "500"
	case Fault503:
		return "503"
	case Fault429:
		return "429"
	case FaultReset:
		return "reset"
	case FaultStall:
		return "stall"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Config configures a Proxy.
type Config struct {
	// Target is the upstream base URL, e.g. http://127.0.0.1:7070. Its path
	// must be empty or "/".
	Target string
	// Latency is added to every request (faulted or not) before anything
	// else happens to it.
	Latency time.Duration
	// Fault rates in [0,1]. Each request draws once: it gets a 500 with
	// probability Err500, else a 503 with probability Err503, and so on
	// (the rates are disjoint slices of [0,1), so their sum must be <= 1).
	Err500, Err503, Err429, Reset, Stall float64
	// StallFor is how long a stalled request is held before the proxy gives
	// up and answers 504; make it exceed the client's per-attempt timeout.
	// A stalled request also ends when the client goes away or the proxy
	// closes. Default 1 minute.
	StallFor time.Duration
	// Seed seeds the fault generator.
	Seed int64
	// Match, if set, limits faults (not latency) to the requests for which
	// it returns true, e.g. only HEAD.
	Match func(r *http.Request) bool
}

// Faults are the fault rates of a Config, for SetFaults.
type Faults struct {
	Err500, Err503, Err429, Reset, Stall float64
}

func (c Config) faults() Faults {
	return Faults{Err500: c.Err500, Err503: c.Err503, Err429: c.Err429, Reset: c.Reset, Stall: c.Stall}
}

func (f Faults) validate() error {
	sum := 0.0
	for _, r := range []float64{f.Err500, f.Err503, f.Err429, f.Reset, f.Stall} {
		if r < 0 || r > 1 || r != r {
			return fmt.Errorf("faultproxy: fault rate %v outside [0,1]", r)
		}
		sum += r
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("faultproxy: fault rates add up to %v > 1", sum)
	}
	return nil
}

// Stats are the proxy's counters since Start or the last ResetStats.
type Stats struct {
	Requests    int64            // requests received
	Connections int64            // client connections accepted (reuse shows as few)
	Faults      int64            // requests given a fault instead of being forwarded
	ByMethod    map[string]int64 // requests per HTTP method
	ByFault     map[string]int64 // faults per kind (Fault.String())
	InFlight    int64            // requests being handled right now
	MaxInFlight int64            // most requests handled at once
}

// Counting notes. A request is in flight from its arrival until the proxy
// starts its response (or resets the connection), so a client that starts a
// new request only after the previous one answered is never counted twice:
// MaxInFlight never exceeds a client's real concurrency because of the proxy.
// Two client-side effects still show: net/http resends an idempotent request
// once when a reused connection dies before answering (a Reset can cost two
// requests per SDK attempt), and a client that times out a stalled request
// and retries at once may overlap the stalled request for the moment it takes
// the proxy to see the first connection close.

// Proxy is a running fault-injecting reverse proxy.
type Proxy struct {
	target *url.URL
	ln     net.Listener
	srv    *http.Server
	rp     *httputil.ReverseProxy
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu       sync.Mutex
	isClosed bool
	cfg      Config
	rng      *rand.Rand
	queue    []Fault
	requests int64
	faults   int64
	byMethod map[string]int64
	byFault  map[string]int64
	maxIn    int64
	conns    int64

	inFlight atomic.Int64
}

// Start validates cfg and starts the proxy on 127.0.0.1 on a free port.
func Start(cfg Config) (*Proxy, error) {
	target, err := url.Parse(cfg.Target)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("faultproxy: Target %q: want http(s)://host:port", cfg.Target)
	}
	if target.Path != "" && target.Path != "/" {
		return nil, fmt.Errorf("faultproxy: Target %q: a path is not supported", cfg.Target)
	}
	if err := cfg.faults().validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 1024
	transport.MaxIdleConnsPerHost = 1024
	transport.DisableCompression = true // pass bodies and encodings through untouched

	p := &Proxy{
		target:   target,
		ln:       ln,
		closed:   make(chan struct{}),
		cfg:      cfg,
		rng:      newRand(cfg.Seed),
		byMethod: map[string]int64{},
		byFault:  map[string]int64{},
	}
	quiet := log.New(io.Discard, "", 0)
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			// Only the destination changes. Path, RawPath and RawQuery
			// stay as parsed from the incoming request line, so the
			// escaped path is written out byte for byte; the Host header
			// stays the one the client signed. (SetURL would rewrite
			// both.)
			r.Out.URL.Scheme = target.Scheme
			r.Out.URL.Host = target.Host
			r.Out.Host = r.In.Host
		},
		Transport: transport,
		ErrorLog:  quiet,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			http.Error(w, "faultproxy: upstream: "+err.Error(), http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{
		Handler:           p, // no ServeMux: it would clean and redirect paths
		ErrorLog:          quiet,
		ReadHeaderTimeout: 30 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				p.mu.Lock()
				p.conns++
				p.mu.Unlock()
			}
		},
	}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

func newRand(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
}

// URL is the proxy's base URL, e.g. http://127.0.0.1:41234.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy: stalled and delayed requests end at once, open
// connections are closed, and Close waits for the handlers to return.
func (p *Proxy) Close() error {
	var err error
	p.once.Do(func() {
		p.mu.Lock()
		p.isClosed = true
		p.mu.Unlock()
		err = p.srv.Close()
		close(p.closed)
		p.wg.Wait()
	})
	return err
}

// Config returns the current configuration.
func (p *Proxy) Config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// SetConfig replaces latency, fault rates, StallFor and Match at runtime.
// Target cannot change (it is ignored). The generator is reseeded only if
// Seed changes.
func (p *Proxy) SetConfig(cfg Config) error {
	if err := cfg.faults().validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cfg.Target = p.cfg.Target
	if cfg.Seed != p.cfg.Seed {
		p.rng = newRand(cfg.Seed)
	}
	p.cfg = cfg
	return nil
}

// SetFaults replaces only the fault rates.
func (p *Proxy) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg.Err500, p.cfg.Err503, p.cfg.Err429, p.cfg.Reset, p.cfg.Stall = f.Err500, f.Err503, f.Err429, f.Reset, f.Stall
	return nil
}

// SetLatency replaces only the latency.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg.Latency = d
}

// QueueFaults makes the next matching requests get these faults, in order,
// before the random rates apply again. FaultNone in the queue forwards one
// request.
func (p *Proxy) QueueFaults(faults ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(p.queue, faults...)
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{
		Requests:    p.requests,
		Connections: p.conns,
		Faults:      p.faults,
		ByMethod:    maps.Clone(p.byMethod),
		ByFault:     maps.Clone(p.byFault),
		InFlight:    p.inFlight.Load(),
		MaxInFlight: p.maxIn,
	}
	if s.ByMethod == nil {
		s.ByMethod = map[string]int64{}
	}
	if s.ByFault == nil {
		s.ByFault = map[string]int64{}
	}
	return s
}

// ResetStats zeroes the counters; MaxInFlight restarts from the requests in
// flight now.
func (p *Proxy) ResetStats() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests, p.faults, p.conns = 0, 0, 0
	p.byMethod = map[string]int64{}
	p.byFault = map[string]int64{}
	p.maxIn = p.inFlight.Load()
}

// ServeHTTP handles one request: count, delay, maybe fault, else forward.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.isClosed {
		p.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	p.wg.Add(1)
	defer p.wg.Done()

	// In flight from arrival until the response starts (or the connection
	// is reset): decrementing before the client can see the end of the
	// response means a client that starts its next request only after this
	// one finished is never counted twice.
	n := p.inFlight.Add(1)
	var once sync.Once
	done := func() { once.Do(func() { p.inFlight.Add(-1) }) }
	defer done()
	w = &doneWriter{ResponseWriter: w, done: done}

	p.requests++
	p.byMethod[r.Method]++
	if n > p.maxIn {
		p.maxIn = n
	}
	latency := p.cfg.Latency
	p.mu.Unlock()

	if latency > 0 && !p.wait(r, latency) {
		panic(http.ErrAbortHandler) // client gone or proxy closing: no response
	}

	fault, stallFor := p.decide(r)
	switch fault {
	case FaultNone:
		p.rp.ServeHTTP(w, r)
	case Fault500:
		writeS3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case Fault503:
		writeS3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case Fault429:
		writeS3Error(w, r, http.StatusTooManyRequests, "TooManyRequests", "Too many requests.")
	case FaultReset:
		done()
		reset(w)
	case FaultStall:
		if !p.wait(r, stallFor) {
			panic(http.ErrAbortHandler) // client gone or proxy closing: no response
		}
		http.Error(w, "faultproxy: stalled", http.StatusGatewayTimeout)
	}
}

// decide draws the fault for r (latency already applied).
func (p *Proxy) decide(r *http.Request) (Fault, time.Duration) {
	p.mu.Lock()
	match := p.cfg.Match
	p.mu.Unlock()
	if match != nil && !match(r) { // called unlocked: it may use the Proxy
		return FaultNone, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	stallFor := p.cfg.StallFor
	if stallFor <= 0 {
		stallFor = time.Minute
	}
	f := FaultNone
	if len(p.queue) > 0 {
		f, p.queue = p.queue[0], p.queue[1:]
	} else {
		u := p.rng.Float64()
		for _, c := range []struct {
			rate  float64
			fault Fault
		}{{p.cfg.Err500, Fault500}, {p.cfg.Err503, Fault503}, {p.cfg.Err429, Fault429}, {p.cfg.Reset, FaultReset}, {p.cfg.Stall, FaultStall}} {
			if u < c.rate {
				f = c.fault
				break
			}
			u -= c.rate
		}
	}
	if f != FaultNone {
		p.faults++
		p.byFault[f.String()]++
	}
	return f, stallFor
}

// wait sleeps for d unless the client goes away or the proxy closes; it
// reports whether the full time passed.
func (p *Proxy) wait(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-p.closed:
		return false
	}
}

func writeS3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	// Drain a small request body so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Faultproxy-Fault", code)
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><RequestId>faultproxy</RequestId></Error>`, code, msg)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, body)
	}
}

// reset closes the client connection with SO_LINGER 0, so the client sees a
// TCP RST ("connection reset by peer") rather than a clean EOF.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // closes the connection without a response
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

var _ http.Handler = (*Proxy)(nil)

// doneWriter calls done once, just before the response starts (a final
// status is written), so the in-flight count drops before the client can see
// any of the response.
type doneWriter struct {
	http.ResponseWriter
	done func()
}

func (w *doneWriter) WriteHeader(code int) {
	if code >= 200 {
		w.done()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *doneWriter) Write(b []byte) (int, error) {
	w.done() // an implicit 200
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (used by ReverseProxy and reset) reach
// Flush and Hijack.
func (w *doneWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
