package bustest

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
)

// Proxy is a loopback TCP proxy between NATS clients and a server, for
// faults the server itself cannot be made to show on cue: a reply lost on
// the way back (Hold then Cut), a connection that breaks, a server that
// cannot be reached (Refuse). The bytes that pass are real NATS traffic;
// nothing is decoded.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   []net.Conn
	hold    chan struct{} // closed when server-to-client traffic may flow
	refuse  bool
	accepts int
	holdOn  []byte // Hold when a client sends this
}

// NewProxy forwards 127.0.0.1:<random port> to target (host:port, or a
// nats:// URL) until the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	if len(target) > 7 && target[:7] == "nats://" {
		target = target[7:]
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(tb.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listener: %v", err)
	}
	p := &Proxy{ln: ln, target: target, hold: make(chan struct{})}
	close(p.hold)
	go p.accept()
	tb.Cleanup(func() {
		_ = ln.Close()
		p.Cut()
		p.Release()
	})
	return p
}

// URL is the proxy's address for a NATS client.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Accepts is how many client connections the proxy has taken.
func (p *Proxy) Accepts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepts
}

// Hold stops passing the server's bytes to clients (they wait in the
// proxy) until Release. What clients send still reaches the server.
func (p *Proxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.hold:
		p.hold = make(chan struct{})
	default:
	}
}

// HoldOn makes the proxy Hold as soon as a client sends bytes containing
// s (a subject, say), before they reach the server: the server's answer to
// them, and everything after, is then held for sure. Empty s turns it off.
func (p *Proxy) HoldOn(s string) {
	p.mu.Lock()
	p.holdOn = []byte(s)
	p.mu.Unlock()
}

// Release lets the server's bytes flow again.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.hold:
	default:
		close(p.hold)
	}
}

// Cut closes every connection through the proxy: what the server sent and
// the proxy holds is lost, as when a server dies after storing a message
// and before its acknowledgement left. Clients reconnect through the proxy.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Refuse makes the proxy close new connections at once (a server down)
// until Accept; with Cut it is an outage.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	p.refuse = true
	p.mu.Unlock()
}

// Accept undoes Refuse.
func (p *Proxy) Accept() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		if !refuse {
			p.accepts++
		}
		p.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		// Not the test's context: the proxy serves until Close, which
		// may come in a Cleanup, after that context has ended.
		var d net.Dialer
		s, err := d.DialContext(context.Background(), "tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.forth(c, s)
		go p.back(c, s)
	}
}

// forth copies a client's bytes to the server, holding the way back first
// when they contain the HoldOn pattern.
func (p *Proxy) forth(c, s net.Conn) {
	defer func() { _ = s.Close(); _ = c.Close() }()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the previous read, for a pattern cut in two
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			pat := p.holdOn
			p.mu.Unlock()
			if len(pat) > 0 {
				seen := append(tail, buf[:n]...) //nolint:gocritic // appendAssign: tail is rebuilt from seen's end below
				if bytes.Contains(seen, pat) {
					p.HoldOn("")
					p.Hold()
				}
				tail = append(tail[:0], seen[max(0, len(seen)-len(pat)):]...)
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// back copies the server's bytes to the client, waiting while held.
func (p *Proxy) back(c, s net.Conn) {
	defer func() { _ = s.Close(); _ = c.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hold := p.hold
			p.mu.Unlock()
			<-hold
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // the server closed, or the proxy cut
			return
		}
	}
}
