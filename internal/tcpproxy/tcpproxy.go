// Package tcpproxy is a TCP proxy for tests that sits between one client (a replica) and
// a server (PostgreSQL) and can cut the network between them.
//
// Partition stops forwarding in both directions without closing any socket: bytes
// either side sends are held (first in the proxy's buffer, then in the kernel's socket
// buffers, which is backpressure), nothing is answered, and a new connection is accepted
// but not connected upstream, so the client's handshake hangs. Neither side sees an
// error: a client notices only through its own deadlines, as with a cut cable.
//
// A partition ends in one of two ways:
//
//   - Heal resumes forwarding: everything held is delivered in order, then any close
//     that happened meanwhile. This is the adversarial case for fencing: a statement a
//     client sent (and gave up on) before or during the partition reaches the server
//     after it, possibly after another client took over. It is also what a short
//     partition looks like (TCP retransmits until the path comes back).
//   - HealReset drops everything held and resets every connection (RST both ways). This
//     is what a partition longer than TCP's retransmission timeout ends in: the peers'
//     kernels gave up, and nothing held ever arrives.
//
// Limits: the proxy's kernel acknowledges what the peers send, so TCP-level timeouts on
// either side (tcp_user_timeout, keepalives) do not fire during a partition; only
// application-level silence (statement deadlines, idle_session_timeout,
// idle_in_transaction_session_timeout) does. Use it to test those, not TCP settings.
package tcpproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Proxy forwards connections from its listener to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	part   *partition // nil while forwarding
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// partition is one cut; done is closed when it ends, reset says how.
type partition struct {
	done  chan struct{}
	reset bool
}

// Listen starts a proxy on 127.0.0.1 (a free port) that forwards to target (host:port).
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcpproxy listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port; point the client there.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Partition cuts the network: from now on no byte is forwarded either way and new
// connections hang, until Heal or HealReset. Partitioning twice is a no-op.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.part == nil {
		p.part = &partition{done: make(chan struct{})}
	}
}

// Heal ends a partition and delivers everything held, in order.
func (p *Proxy) Heal() { p.heal(false) }

// HealReset ends a partition by resetting every connection: nothing held is delivered.
func (p *Proxy) HealReset() { p.heal(true) }

func (p *Proxy) heal(reset bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	part := p.part
	if part == nil {
		return
	}
	p.part = nil
	if reset {
		// Close before waking the pumps, so that none of them writes what it holds.
		for c := range p.conns {
			abort(c)
		}
		clear(p.conns)
	}
	part.reset = reset
	close(part.done)
}

// Partitioned reports whether the network is cut right now.
func (p *Proxy) Partitioned() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.part != nil
}

// Close stops the proxy and resets every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		abort(c)
	}
	clear(p.conns)
	if p.part != nil {
		p.part.reset = true
		close(p.part.done)
		p.part = nil
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// gate blocks while the network is cut; false means the connection was reset meanwhile
// (or the proxy closed) and what the caller holds must be dropped.
func (p *Proxy) gate() bool {
	p.mu.Lock()
	part, closed := p.part, p.closed
	p.mu.Unlock()
	if closed {
		return false
	}
	if part == nil {
		return true
	}
	<-part.done
	return !part.reset
}

// track registers c so a reset or Close can abort it; false if the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		if !p.track(c) {
			abort(c)
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects one accepted client upstream and pumps both ways.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	// A connection made during a partition is not connected upstream until it heals:
	// the client's handshake hangs, as a SYN into a cut network would.
	if !p.gate() {
		abort(client)
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(server) {
		if server != nil {
			abort(server)
		}
		abort(client)
		return
	}
	defer p.untrack(server)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(server, client) }()
	go func() { defer wg.Done(); p.pump(client, server) }()
	wg.Wait()
	_ = client.Close()
	_ = server.Close()
}

// pump copies src to dst, holding each chunk while the network is cut. EOF from src is
// passed on as a half-close after everything before it.
func (p *Proxy) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := src.Read(buf)
		if !p.gate() {
			abort(src)
			abort(dst)
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				abort(src)
				abort(dst)
				return
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			abort(src)
			abort(dst)
			return
		}
	}
}

// abort closes c with a reset (linger 0) rather than an orderly FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
