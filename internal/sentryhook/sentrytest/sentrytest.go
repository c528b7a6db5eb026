// Package sentrytest is a local stand-in for Sentry's ingestion endpoint for tests: it
// accepts POST /api/<project>/envelope/, decodes each envelope's items and keeps the
// events and check-ins that arrive (tests cannot reach sentry.io).
package sentrytest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is the stand-in.
type Server struct {
	*httptest.Server
	// Key is the public key of DSN.
	Key string

	mu       sync.Mutex
	events   []Event
	checkIns []CheckIn
	raw      [][]byte // every event item's payload, as sent
	bad      []string // what could not be decoded
	hang     chan struct{}
}

// Event is an error event as it arrived.
type Event struct {
	EventID     string                    `json:"event_id"`
	Level       string                    `json:"level"`
	Message     string                    `json:"message"`
	Release     string                    `json:"release"`
	Environment string                    `json:"environment"`
	ServerName  string                    `json:"server_name"`
	Fingerprint []string                  `json:"fingerprint"`
	Tags        map[string]string         `json:"tags"`
	Contexts    map[string]map[string]any `json:"contexts"`
	// Exception and Breadcrumbs: Sentry takes a list or {"values": list}; both decode.
	Exception   values[Exception]  `json:"exception"`
	Breadcrumbs values[Breadcrumb] `json:"breadcrumbs"`
	Raw         string             `json:"-"`
}

// Breadcrumb is one breadcrumb.
type Breadcrumb struct {
	Category string         `json:"category"`
	Message  string         `json:"message"`
	Data     map[string]any `json:"data"`
}

// values is a list sent either bare or as {"values": […]}.
type values[T any] struct{ Values []T }

func (v *values[T]) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		return json.Unmarshal(b, &v.Values)
	}
	var w struct {
		Values []T `json:"values"`
	}
	err := json.Unmarshal(b, &w)
	v.Values = w.Values
	return err
}

// Exception is one error of the chain.
type Exception struct {
	Type       string `json:"type"`
	Value      string `json:"value"`
	Stacktrace *struct {
		Frames []struct {
			Function string `json:"function"`
			Module   string `json:"module"`
			AbsPath  string `json:"abs_path"`
			Lineno   int    `json:"lineno"`
			InApp    bool   `json:"in_app"`
		} `json:"frames"`
	} `json:"stacktrace"`
	Mechanism *struct {
		Type    string `json:"type"`
		Handled *bool  `json:"handled"`
	} `json:"mechanism"`
}

// CheckIn is a Crons check-in as it arrived.
type CheckIn struct {
	CheckInID     string  `json:"check_in_id"`
	MonitorSlug   string  `json:"monitor_slug"`
	Status        string  `json:"status"`
	Duration      float64 `json:"duration"`
	Release       string  `json:"release"`
	Environment   string  `json:"environment"`
	MonitorConfig *struct {
		Schedule struct {
			Type  string `json:"type"`
			Value int64  `json:"value"`
			Unit  string `json:"unit"`
		} `json:"schedule"`
		CheckInMargin int64 `json:"checkin_margin"`
		MaxRuntime    int64 `json:"max_runtime"`
	} `json:"monitor_config"`
	At time.Time `json:"-"`
}

// New starts a server; it is closed when the test ends.
func New(t testing.TB) *Server {
	s := &Server{Key: "0123456789abcdef0123456789abcdef"}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(func() {
		s.Unhang()
		s.Close()
	})
	return s
}

// DSN points the SDK at this server, project 42.
func (s *Server) DSN() string {
	return "http://" + s.Key + "@" + strings.TrimPrefix(s.URL, "http://") + "/42"
}

// Hang makes every request wait until Unhang (a Sentry that accepts and never answers).
func (s *Server) Hang() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang == nil {
		s.hang = make(chan struct{})
	}
}

// Unhang releases the waiting requests.
func (s *Server) Unhang() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	hang := s.hang
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
	}
	if r.Method != http.MethodPost || r.URL.Path != "/api/42/envelope/" {
		s.fail(fmt.Sprintf("unexpected %s %s", r.Method, r.URL.Path))
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			s.fail("gzip: " + err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		s.fail(err.Error())
		return
	}
	if err := s.decode(b); err != nil {
		s.fail(err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{}`))
}

func (s *Server) fail(msg string) {
	s.mu.Lock()
	s.bad = append(s.bad, msg)
	s.mu.Unlock()
}

// decode reads an envelope: a header line, then items of a header line and a payload
// (of the header's length, or up to the next newline).
func (s *Server) decode(b []byte) error {
	r := bufio.NewReader(bytes.NewReader(b))
	if _, err := r.ReadBytes('\n'); err != nil {
		return fmt.Errorf("envelope header: %w", err)
	}
	for {
		hl, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(hl)) == 0 {
			if err != nil {
				return nil
			}
			continue
		}
		var ih struct {
			Type   string `json:"type"`
			Length *int   `json:"length"`
		}
		if err := json.Unmarshal(hl, &ih); err != nil {
			return fmt.Errorf("item header %q: %w", hl, err)
		}
		var payload []byte
		if ih.Length != nil {
			payload = make([]byte, *ih.Length)
			if _, err := io.ReadFull(r, payload); err != nil {
				return fmt.Errorf("item payload: %w", err)
			}
			_, _ = r.ReadByte() // the newline after it
		} else {
			payload, _ = r.ReadBytes('\n')
			payload = bytes.TrimRight(payload, "\n")
		}
		now := time.Now()
		switch ih.Type {
		case "event":
			var e Event
			if err := json.Unmarshal(payload, &e); err != nil {
				return fmt.Errorf("event: %w", err)
			}
			e.Raw = string(payload)
			s.mu.Lock()
			s.events = append(s.events, e)
			s.raw = append(s.raw, payload)
			s.mu.Unlock()
		case "check_in":
			var c CheckIn
			if err := json.Unmarshal(payload, &c); err != nil {
				return fmt.Errorf("check_in: %w", err)
			}
			c.At = now
			s.mu.Lock()
			s.checkIns = append(s.checkIns, c)
			s.raw = append(s.raw, payload)
			s.mu.Unlock()
		}
	}
}

// Events returns the events so far.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// CheckIns returns the check-ins so far, in arrival order.
func (s *Server) CheckIns() []CheckIn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CheckIn(nil), s.checkIns...)
}

// Raw is every event and check-in payload as sent, joined.
func (s *Server) Raw() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(bytes.Join(s.raw, []byte("\n")))
}

// Errors lists what the server could not decode or did not expect.
func (s *Server) Errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bad...)
}

// Wait polls until cond holds or within passes; it reports whether cond held.
func (s *Server) Wait(within time.Duration, cond func(s *Server) bool) bool {
	end := time.Now().Add(within)
	for {
		if cond(s) {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
