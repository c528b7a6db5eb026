// Package tcpproxy is a TCP proxy for tests that sits between one client (a replica) and
// a server (PostgreSQL) and can cut the network between them.
//
// Partition stops forwarding in both directions without closing any socket: bytes
// either side sends are held (in the proxy, up to 1 MiB per direction and connection,
// then in the kernel's socket buffers), nothing is answered, and a new connection is
// accepted but not connected upstream, so the client's handshake hangs. Neither side
// sees an error: a client notices only through its own deadlines, as with a cut cable.
//
// A partition ends in one of two ways:
//
//   - Heal resumes forwarding: everything held is delivered in order, then any close
//     that happened meanwhile. This is the adversarial case for fencing: a statement a
//     client sent (and gave up on) before or during the partition reaches the server
//     when it heals, possibly after another client took over. It is also what a short
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

// maxHeld is how much one direction of one connection buffers in the proxy; beyond it
// the proxy stops reading and the kernel's buffers hold the rest.
const maxHeld = 1 << 20

// Proxy forwards connections from its listener to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cond   *sync.Cond // on mu: a pipe's queue, the partition or closed changed
	part   bool
	conns  map[*conn]struct{}
	closed bool
	late   int64 // bytes a partition held that Heal then delivered
	wg     sync.WaitGroup
}

// conn is one proxied connection: client→server and server→client pipes.
type conn struct {
	client, server net.Conn // server is nil until dialed
	up, down       *pipe
	dead           bool // reset: drop everything, forward nothing more
}

// pipe is one direction: what was read from the source and not yet written.
type pipe struct {
	q    []byte
	rerr error // the source's read error (io.EOF: orderly close), after q
}

// Listen starts a proxy on 127.0.0.1 (a free port) that forwards to target (host:port).
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcpproxy listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
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
	p.part = true
	p.cond.Broadcast()
}

// Heal ends a partition and delivers everything held, in order.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.part {
		return
	}
	for c := range p.conns {
		p.late += int64(len(c.up.q) + len(c.down.q))
	}
	p.part = false
	p.cond.Broadcast()
}

// HealReset ends a partition by resetting every connection: nothing held is delivered.
func (p *Proxy) HealReset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.part {
		return
	}
	p.resetAll()
	p.part = false
	p.cond.Broadcast()
}

// Partitioned reports whether the network is cut right now.
func (p *Proxy) Partitioned() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.part
}

// LateBytes counts the bytes that partitions held and Heal then delivered: a test can
// tell that its statements really did arrive late rather than not at all.
func (p *Proxy) LateBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.late
}

// Close stops the proxy and resets every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.resetAll()
	p.cond.Broadcast()
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// resetAll aborts every connection; p.mu held.
func (p *Proxy) resetAll() {
	for c := range p.conns {
		c.dead = true
		abort(c.client)
		if c.server != nil {
			abort(c.server)
		}
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		c := &conn{client: nc, up: &pipe{}, down: &pipe{}}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			abort(nc)
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects one accepted client upstream and forwards both ways.
func (p *Proxy) serve(c *conn) {
	defer p.wg.Done()
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		_ = c.client.Close()
		if c.server != nil {
			_ = c.server.Close()
		}
	}()
	// The client's bytes are read (and held) at once; the upstream connection is made
	// only while the network is up, so a handshake during a partition hangs, as a SYN
	// into a cut network would.
	wg.Add(1)
	go func() { defer wg.Done(); p.read(c, c.up, c.client) }()
	p.mu.Lock()
	for p.part && !c.dead {
		p.cond.Wait()
	}
	dead := c.dead
	p.mu.Unlock()
	if dead {
		return
	}
	server, err := net.Dial("tcp", p.target)
	p.mu.Lock()
	if err == nil && !c.dead {
		c.server = server
	} else {
		c.dead = true
		abort(c.client)
		if server != nil {
			abort(server)
		}
		p.cond.Broadcast()
	}
	dead = c.dead
	p.mu.Unlock()
	if dead {
		return
	}
	wg.Add(3)
	go func() { defer wg.Done(); p.read(c, c.down, c.server) }()
	go func() { defer wg.Done(); p.write(c, c.up, c.server) }()
	go func() { defer wg.Done(); p.write(c, c.down, c.client) }()
}

// read queues what src sends until it ends or the connection is reset.
func (p *Proxy) read(c *conn, pp *pipe, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		for len(pp.q) >= maxHeld && !c.dead {
			p.cond.Wait()
		}
		if c.dead {
			p.mu.Unlock()
			return
		}
		pp.q = append(pp.q, buf[:n]...)
		if err != nil {
			pp.rerr = err
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// write forwards pp's queue to dst while the network is up, then passes on how the
// source ended: an orderly close as a half-close, anything else as a reset.
func (p *Proxy) write(c *conn, pp *pipe, dst net.Conn) {
	for {
		p.mu.Lock()
		for !c.dead && (p.part || (len(pp.q) == 0 && pp.rerr == nil)) {
			p.cond.Wait()
		}
		if c.dead {
			p.mu.Unlock()
			return
		}
		data, rerr := pp.q, pp.rerr
		pp.q = nil
		p.cond.Broadcast() // room for the reader
		p.mu.Unlock()
		if len(data) > 0 {
			if _, err := dst.Write(data); err != nil {
				p.kill(c)
				return
			}
		}
		if rerr != nil {
			if tc, ok := dst.(*net.TCPConn); ok && errors.Is(rerr, io.EOF) {
				_ = tc.CloseWrite()
				return
			}
			p.kill(c)
			return
		}
	}
}

// kill resets one connection both ways.
func (p *Proxy) kill(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.dead = true
	abort(c.client)
	if c.server != nil {
		abort(c.server)
	}
	p.cond.Broadcast()
}

// abort closes c with a reset (linger 0) rather than an orderly FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
