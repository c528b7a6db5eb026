package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// replica is one bg-worker process slot: a name (its WORKER_ID), an HTTP address and the
// environment; a killed replica can be started again in the same slot.
type replica struct {
	name  string
	addr  string // HTTP_ADDR
	env   []string
	color string

	mu      sync.Mutex
	cur     *proc
	ready   bool // answered /readyz at least once
	started int  // processes started in this slot
}

// proc is one process of a replica.
type proc struct {
	r       *replica
	cmd     *exec.Cmd
	pid     int
	done    chan struct{} // closed after Wait
	logDone chan struct{} // closed when its output is drained
	state   *os.ProcessState

	mu       sync.Mutex
	killed   bool // SIGKILLed by the demo
	stopping bool // SIGTERMed by the demo
}

// start runs a new process for the replica; its output goes to out line by line, and
// exits is told when it ends.
func (r *replica) start(bin string, out *console, exits chan<- *proc) (*proc, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run")
	cmd.Env = r.env
	cmd.Stdout = pw
	cmd.Stderr = pw
	// Own process group: the terminal's Ctrl-C reaches only the demo, which stops the
	// replicas first and the servers last. SIGKILL if the demo dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", r.name, err)
	}
	pw.Close()
	p := &proc{r: r, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), logDone: make(chan struct{})}
	go func() {
		defer close(p.logDone)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			out.line(r.name, r.color, shortenLogLine(sc.Text()))
		}
	}()
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
		select {
		case exits <- p:
		default: // nobody listens any more (shutting down); the buffer is generous
		}
	}()
	r.mu.Lock()
	r.cur = p
	r.started++
	r.mu.Unlock()
	return p, nil
}

// current is the replica's latest process (nil before the first start).
func (r *replica) current() *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// running reports whether the replica's latest process is still running.
func (r *replica) running() bool {
	p := r.current()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (r *replica) wasReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

// waitReady polls /readyz until it answers 200, the process exits, or timeout.
func (r *replica) waitReady(ctx context.Context, p *proc, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.mu.Lock()
				r.ready = true
				r.mu.Unlock()
				return nil
			}
			err = fmt.Errorf("/readyz answered %s", resp.Status)
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%s)", r.name, p.state)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s: %v", r.name, timeout, err)
		}
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (the demo's "the leader died" event).
func (p *proc) kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	_ = p.cmd.Process.Kill()
}

// terminate sends SIGTERM (a clean shutdown).
func (p *proc) terminate() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
}

func (p *proc) expectedExit() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killed || p.stopping
}

func (p *proc) wasKilled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killed
}
