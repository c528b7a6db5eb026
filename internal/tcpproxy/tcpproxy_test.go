package tcpproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream is a line server: it echoes each line back and records what it received.
type upstream struct {
	ln      net.Listener
	mu      sync.Mutex
	got     []string
	eofs    int
	accepts int
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.accepts++
			u.mu.Unlock()
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						u.mu.Lock()
						if errors.Is(err, io.EOF) {
							u.eofs++
						}
						u.mu.Unlock()
						return
					}
					u.mu.Lock()
					u.got = append(u.got, strings.TrimSpace(line))
					u.mu.Unlock()
					if _, err := c.Write([]byte("echo " + line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return u
}

func (u *upstream) accepted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.accepts
}

func (u *upstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.got...)
}

func newProxy(t *testing.T, u *upstream) *Proxy {
	t.Helper()
	p, err := Listen(u.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

func send(t *testing.T, c net.Conn, line string) {
	t.Helper()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("write %q: %v", line, err)
	}
}

// expectLine reads one line within d.
func expectLine(t *testing.T, c net.Conn, r *bufio.Reader, want string, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read, want %q: %v", want, err)
	}
	if strings.TrimSpace(got) != want {
		t.Fatalf("got %q, want %q", strings.TrimSpace(got), want)
	}
}

// expectSilence asserts nothing arrives for d (the connection stays open).
func expectSilence(t *testing.T, c net.Conn, r *bufio.Reader, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	got, err := r.ReadString('\n')
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("during the partition: read %q, %v; want a timeout", got, err)
	}
}

func TestForwardsBothWays(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t, u)
	c, r := dial(t, p)
	send(t, c, "a")
	expectLine(t, c, r, "echo a", 5*time.Second)
}

// Held bytes and held connections are delivered in order when the partition heals.
func TestPartitionHoldsThenHealDelivers(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t, u)
	c, r := dial(t, p)
	send(t, c, "before")
	expectLine(t, c, r, "echo before", 5*time.Second)

	p.Partition()
	if !p.Partitioned() {
		t.Fatal("not partitioned")
	}
	send(t, c, "held1") // a write succeeds locally, as on a cut network
	send(t, c, "held2")
	c2, r2 := dial(t, p) // the TCP handshake completes, the upstream one does not
	send(t, c2, "new")
	expectSilence(t, c, r, 300*time.Millisecond)
	expectSilence(t, c2, r2, 50*time.Millisecond)
	if got := u.received(); len(got) != 1 {
		t.Fatalf("upstream received %v during the partition, want only [before]", got)
	}

	p.Heal()
	expectLine(t, c, r, "echo held1", 5*time.Second)
	expectLine(t, c, r, "echo held2", 5*time.Second)
	expectLine(t, c2, r2, "echo new", 5*time.Second)
	send(t, c, "after")
	expectLine(t, c, r, "echo after", 5*time.Second)
	// held1, held2 and new went up late. (The echo of new is not counted: it was
	// written after the heal.)
	if n, want := p.LateBytes(), int64(len("held1\nheld2\nnew\n")); n != want {
		t.Errorf("LateBytes %d, want %d", n, want)
	}
}

// A close during the partition reaches the server after what was sent before it.
func TestHealDeliversCloseAfterHeldBytes(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t, u)
	c, r := dial(t, p)
	send(t, c, "x")
	expectLine(t, c, r, "echo x", 5*time.Second)
	p.Partition()
	send(t, c, "last words")
	_ = c.Close()
	time.Sleep(100 * time.Millisecond) // let the proxy read the held bytes and the EOF
	if got := u.received(); len(got) != 1 {
		t.Fatalf("upstream received %v during the partition", got)
	}
	p.Heal()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u.mu.Lock()
		got, eofs := append([]string(nil), u.got...), u.eofs
		u.mu.Unlock()
		if eofs == 1 {
			if len(got) != 2 || got[1] != "last words" {
				t.Fatalf("upstream received %v, want [x, last words] then EOF", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream saw no EOF after heal (received %v)", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// HealReset drops what was held: the server never sees it, the client gets a reset.
func TestHealResetDropsHeld(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t, u)
	c, r := dial(t, p)
	send(t, c, "before")
	expectLine(t, c, r, "echo before", 5*time.Second)
	p.Partition()
	send(t, c, "dropped")
	expectSilence(t, c, r, 100*time.Millisecond)
	p.HealReset()
	if n := p.LateBytes(); n != 0 {
		t.Errorf("LateBytes %d after HealReset, want 0", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after HealReset: read %q, %v; want the connection reset", line, err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := u.received(); len(got) != 1 {
		t.Fatalf("upstream received %v, want only [before]", got)
	}
	// The proxy forwards again for new connections.
	c2, r2 := dial(t, p)
	send(t, c2, "fresh")
	expectLine(t, c2, r2, "echo fresh", 5*time.Second)
}

// Close during a partition releases everything without waiting for a heal.
func TestCloseDuringPartition(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t, u)
	c, _ := dial(t, p)
	send(t, c, "x")
	p.Partition()
	dial(t, p)
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung during a partition")
	}
}

// A connection made during a partition is not connected upstream until the heal (the
// server sees no new session, as behind a cut cable), and then it is.
func TestPartitionHoldsNewConnectionsUpstream(t *testing.T) {
	u := newUpstream(t)
	p := newProxy(t, u)
	p.Partition()
	c, r := dial(t, p)
	send(t, c, "new")
	expectSilence(t, c, r, 300*time.Millisecond)
	if n := u.accepted(); n != 0 {
		t.Fatalf("upstream accepted %d connections during the partition, want 0", n)
	}
	p.Heal()
	expectLine(t, c, r, "echo new", 5*time.Second)
	if n := u.accepted(); n != 1 {
		t.Fatalf("upstream accepted %d connections after the heal, want 1", n)
	}
}
