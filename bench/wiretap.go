package main

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/qtasks/qtasks-go/bus"
)

// wiretap counts, for -count, every message the server routes in the
// account of a run's connections, by kind: what a task stores (per stream),
// its requests (JetStream API calls, direct gets, pull requests, acks) and
// the answers it gets. A core subscription on ">" sees them all, JetStream's
// replies to a client's inbox included: the per-task table of issue #15's
// "count before you cut". It costs the server a delivery per message, so a
// run with -count reports counts, not CPU.
type wiretap struct {
	nc  *nats.Conn
	sub *nats.Subscription
	mu  sync.Mutex
	n   map[string]int
	b   map[string]int
}

func startWiretap(b *bus.Bus) (*wiretap, error) {
	nc, err := b.Dial(nats.Name("bench-wiretap"))
	if err != nil {
		return nil, err
	}
	w := &wiretap{nc: nc, n: map[string]int{}, b: map[string]int{}}
	w.sub, err = nc.Subscribe(">", func(m *nats.Msg) {
		k := tapKind(m)
		size := len(m.Data) + headerSize(m.Header)
		w.mu.Lock()
		w.n[k]++
		w.b[k] += size
		w.mu.Unlock()
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = w.sub.SetPendingLimits(-1, -1)
	return w, nc.Flush()
}

// headerSize is the size of h as NATS writes it.
func headerSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// tapKind names what a message is from its subject, reply and headers.
func tapKind(m *nats.Msg) string {
	s := m.Subject
	tok := strings.Split(s, ".")
	switch {
	case strings.HasPrefix(m.Reply, "$JS.ACK."):
		// A delivery keeps its stored subject; the ack subject names the
		// stream and the consumer.
		r := strings.Split(m.Reply, ".")
		return "delivered: " + strings.Join(r[2:min(len(r), 4)], "/") + " " + strings.Join(tok[:min(len(tok), 3)], ".")
	case strings.HasPrefix(s, "$JS.ACK."):
		c := strings.Join(tok[2:min(len(tok), 4)], "/")
		switch {
		case len(m.Data) == 0 || bytes.Equal(m.Data, []byte("+ACK")):
			return "request: ack " + c
		case bytes.HasPrefix(m.Data, []byte("+WPI")):
			return "request: ack progress (heartbeat) " + c
		default:
			return "request: " + string(m.Data[:min(len(m.Data), 5)]) + " " + c
		}
	case strings.HasPrefix(s, "$JS.API.DIRECT.GET."):
		return "request: direct get " + tok[4]
	case strings.HasPrefix(s, "$JS.API.CONSUMER.MSG.NEXT."):
		return "request: pull (MSG.NEXT)"
	case strings.HasPrefix(s, "$JS.API."):
		return "request: JS API " + strings.Join(tok[2:min(len(tok), 4)], ".")
	case strings.HasPrefix(s, "$JS.EVENT."):
		return "advisory " + strings.Join(tok[2:min(len(tok), 5)], ".")
	case strings.HasPrefix(s, "$KV."):
		return "stored: KV " + tok[1]
	case strings.Contains(tok[0], "INBOX"):
		switch {
		case m.Header.Get("Status") == "100":
			return "reply: pull heartbeat / flow control"
		case m.Header.Get("Status") != "":
			return "reply: status " + m.Header.Get("Status")
		case bytes.HasPrefix(m.Data, []byte(`{"stream"`)):
			return "reply: PubAck"
		case m.Header.Get("Nats-Stream") != "":
			return "reply: direct get"
		default:
			return "reply: other"
		}
	case len(tok) >= 2 && (tok[0] == "floor" || tok[0] == "qtasks"):
		return "stored: " + strings.Join(tok[:min(len(tok), 3)], ".")
	default:
		return "other " + tok[0]
	}
}

// report logs the counts per task of n tasks, and stops the tap.
func (w *wiretap) report(h *Harness, key string, n int) {
	_ = w.nc.Flush()
	_ = w.sub.Unsubscribe()
	w.nc.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	h.logf("    %s: messages the server routed, per task (%d tasks)", key, n)
	for _, k := range slices.Sorted(maps.Keys(w.n)) {
		h.logf("      %-45s %7.2f msgs %8.0f B", k, float64(w.n[k])/float64(n), float64(w.b[k])/float64(n))
	}
}
