package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// asyncPub is the bus's async JetStream publisher: what nats.go's
// PublishMsgAsync does, on a reply inbox of the bus's own, without the
// per-publish costs that showed in the profile of a run (issue #15,
// docs/ARCHITECTURE.md "Cutting our cost above the floor"): an options
// closure and a timer per publish, and above all encoding/json decoding
// every PubAck. A PubAck is parsed by hand (parsePubAck); anything else
// the server answers (an error, a field this parser does not know) goes to
// encoding/json as before.
//
// It keeps nats.go's contract, which Acks.Wait and AwaitAck are built on:
// each future resolves once, to its PubAck or an error: the server's
// *jetstream.APIError, jetstream.ErrNoStreamResponse after the no-responders
// retries nats.go makes (jetstream.DefaultPubRetryAttempts, after
// jetstream.DefaultPubRetryWait), jetstream.ErrAsyncPublishTimeout when no
// answer came within Config.PublishTimeout, nats.ErrDisconnected for every
// publish in flight when the connection is lost (its answer may never
// come); at most Config.MaxPending publishes are in flight, a publish
// waiting up to its stall wait for room (jetstream.ErrTooManyStalledMsgs).
// The writes on the wire are the same messages with another reply subject.
type asyncPub struct {
	nc      *nats.Conn
	prefix  string // reply subjects are prefix + a sequence number
	max     int
	timeout time.Duration

	mu      sync.Mutex
	sub     *nats.Subscription
	next    uint64
	pending map[uint64]*pubFuture
	room    chan struct{} // closed when a publish leaves a full pending set
	idle    chan struct{} // closed when pending empties (complete)
	stop    chan struct{}
}

func newAsyncPub(nc *nats.Conn, maxPending int, timeout time.Duration) *asyncPub {
	return &asyncPub{nc: nc, max: maxPending, timeout: timeout, pending: make(map[uint64]*pubFuture), stop: make(chan struct{})}
}

// pubFuture is the future of one async publish: a jetstream.PubAckFuture.
type pubFuture struct {
	msg      *nats.Msg // as given: what Msg returns and a retry sends
	reply    string
	id       uint64
	deadline time.Time
	timeout  time.Duration // how long it waits for its answer
	retries  int
	ok       chan *jetstream.PubAck
	err      chan error
}

func (f *pubFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *pubFuture) Err() <-chan error            { return f.err }
func (f *pubFuture) Msg() *nats.Msg               { return f.msg }

// start subscribes to the reply inbox and starts the sweeper of
// timed-out publishes and the watch of the connection; called once, on
// first use.
func (p *asyncPub) startLocked() error {
	if p.sub != nil {
		return nil
	}
	p.prefix = p.nc.NewInbox() + "."
	sub, err := p.nc.Subscribe(p.prefix+"*", p.handle)
	if err != nil {
		return err
	}
	p.sub = sub
	status := p.nc.StatusChanged(nats.RECONNECTING, nats.CLOSED)
	go p.watch(status)
	go p.sweep()
	return nil
}

// publish sends m with a reply subject of p's and returns its future. With
// Config.MaxPending publishes unacknowledged, it waits up to
// publishStallWait for room.
func (p *asyncPub) publish(m *nats.Msg) (*pubFuture, error) {
	return p.publishWithin(m, p.timeout)
}

// publishWithin is publish with a timeout of its own: the publish fails
// with jetstream.ErrAsyncPublishTimeout when no answer came within it
// (and sweepEvery). A synchronous write waits for its answer this way
// (publishSync), without a context and timer of its own.
func (p *asyncPub) publishWithin(m *nats.Msg, timeout time.Duration) (*pubFuture, error) {
	f := &pubFuture{msg: m, timeout: timeout, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	if err := p.register(f); err != nil {
		return nil, err
	}
	if err := p.send(f); err != nil {
		p.mu.Lock()
		p.removeLocked(f.id)
		p.mu.Unlock()
		return nil, err
	}
	return f, nil
}

func (p *asyncPub) send(f *pubFuture) error {
	return p.nc.PublishMsg(&nats.Msg{Subject: f.msg.Subject, Reply: f.reply, Header: f.msg.Header, Data: f.msg.Data})
}

// register gives f a reply subject and a place among the pending, waiting
// up to publishStallWait for room.
func (p *asyncPub) register(f *pubFuture) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		if err := p.startLocked(); err != nil {
			p.mu.Unlock()
			return err
		}
		if p.max > 0 && len(p.pending) >= p.max {
			if p.room == nil {
				p.room = make(chan struct{})
			}
			room := p.room
			p.mu.Unlock()
			if timer == nil {
				timer = time.NewTimer(publishStallWait)
			}
			select {
			case <-room:
				continue
			case <-timer.C:
				return jetstream.ErrTooManyStalledMsgs
			}
		}
		p.next++
		f.id = p.next
		f.reply = p.prefix + strconv.FormatUint(f.id, 10)
		f.deadline = time.Now().Add(f.timeout)
		p.pending[f.id] = f
		p.mu.Unlock()
		return nil
	}
}

// removeLocked forgets the publish id, reporting whether it was pending.
func (p *asyncPub) removeLocked(id uint64) (*pubFuture, bool) {
	f, ok := p.pending[id]
	if !ok {
		return nil, false
	}
	delete(p.pending, id)
	if p.room != nil && len(p.pending) < p.max {
		close(p.room)
		p.room = nil
	}
	if len(p.pending) == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	return f, true
}

// handle takes an answer on the reply inbox.
func (p *asyncPub) handle(m *nats.Msg) {
	if len(m.Subject) <= len(p.prefix) {
		return
	}
	id, err := strconv.ParseUint(m.Subject[len(p.prefix):], 10, 64)
	if err != nil {
		return
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		p.noResponders(id)
		return
	}
	p.mu.Lock()
	f, ok := p.removeLocked(id)
	p.mu.Unlock()
	if !ok {
		return // timed out or failed already
	}
	ack, err := parsePubAck(m.Data)
	if err != nil {
		f.err <- err
		return
	}
	f.ok <- ack
}

// noResponders sends the publish id again after
// jetstream.DefaultPubRetryWait, at most jetstream.DefaultPubRetryAttempts
// times (as nats.go), then fails it with jetstream.ErrNoStreamResponse.
func (p *asyncPub) noResponders(id uint64) {
	p.mu.Lock()
	f, ok := p.pending[id]
	if !ok {
		p.mu.Unlock()
		return
	}
	if f.retries >= jetstream.DefaultPubRetryAttempts {
		p.removeLocked(id)
		p.mu.Unlock()
		f.err <- jetstream.ErrNoStreamResponse
		return
	}
	f.retries++
	f.deadline = time.Now().Add(jetstream.DefaultPubRetryWait + f.timeout)
	p.mu.Unlock()
	time.AfterFunc(jetstream.DefaultPubRetryWait, func() {
		p.mu.Lock()
		_, ok := p.pending[id]
		p.mu.Unlock()
		if !ok {
			return
		}
		if err := p.send(f); err != nil {
			p.fail(id, err)
		}
	})
}

// fail ends the publish id with err, if it is still pending.
func (p *asyncPub) fail(id uint64, err error) {
	p.mu.Lock()
	f, ok := p.removeLocked(id)
	p.mu.Unlock()
	if ok {
		f.err <- err
	}
}

// sweepEvery is how often publishes are checked for a timeout: a publish
// fails between Config.PublishTimeout and that plus sweepEvery after it
// was sent, instead of a timer per publish.
const sweepEvery = 100 * time.Millisecond

// sweep fails the publishes whose answer did not come in time. It runs
// until p is closed and no publish is pending: a publish still in flight
// when the bus closes times out as nats.go's does.
func (p *asyncPub) sweep() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	var late []*pubFuture
	for now := range t.C {
		p.mu.Lock()
		for id, f := range p.pending {
			if now.After(f.deadline) {
				p.removeLocked(id)
				late = append(late, f)
			}
		}
		done := len(p.pending) == 0 && p.closed()
		p.mu.Unlock()
		for i, f := range late {
			f.err <- jetstream.ErrAsyncPublishTimeout
			late[i] = nil
		}
		late = late[:0]
		if done {
			return
		}
	}
}

func (p *asyncPub) closed() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// watch fails every publish in flight when the connection is lost, as
// nats.go does: their answers may never come, and the outcome is unknown
// (nats.ErrDisconnected is no error SurelyNotStored knows). Once the
// connection is closed, the publishes left time out.
func (p *asyncPub) watch(status chan nats.Status) {
	for {
		select {
		case <-p.stop:
			return
		case s, ok := <-status:
			if !ok || s == nats.CLOSED {
				return
			}
			p.failAll(nats.ErrDisconnected)
		}
	}
}

func (p *asyncPub) failAll(err error) {
	p.mu.Lock()
	var out []*pubFuture
	for id := range p.pending {
		f, _ := p.removeLocked(id)
		out = append(out, f)
	}
	p.mu.Unlock()
	for _, f := range out {
		f.err <- err
	}
}

// complete returns a channel closed once no publish is pending.
func (p *asyncPub) complete() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	return p.idle
}

// inFlight is the number of pending publishes.
func (p *asyncPub) inFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// close stops the watch of the connection, and the sweeper once no
// publish is pending.
func (p *asyncPub) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed() {
		close(p.stop)
	}
}

// errInvalidAck is nats.go's error for an answer that is no PubAck.
var errInvalidAck = jetstream.ErrInvalidJSAck

// parsePubAck reads the server's answer to a publish: a PubAck, or the
// error it holds. The common answer, {"stream":"S","seq":N} with maybe
// "domain" and "duplicate":true, is read by hand; any other goes to
// encoding/json, and is read exactly as nats.go reads it.
func parsePubAck(data []byte) (*jetstream.PubAck, error) {
	if ack, ok := scanPubAck(data); ok {
		return ack, nil
	}
	var resp struct {
		Error *jetstream.APIError `json:"error"`
		*jetstream.PubAck
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, errInvalidAck
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if resp.PubAck == nil || resp.Stream == "" {
		return nil, errInvalidAck
	}
	return resp.PubAck, nil
}

// scanPubAck reads a PubAck of the common shape: an object of the keys
// stream, seq, domain and duplicate only, strings without escapes, no
// space. ok is false for anything else (an error, another key, another
// spelling), which parsePubAck then hands to encoding/json.
func scanPubAck(d []byte) (ack *jetstream.PubAck, ok bool) {
	if len(d) < 2 || d[0] != '{' || d[len(d)-1] != '}' {
		return nil, false
	}
	a := &jetstream.PubAck{}
	i, end := 1, len(d)-1
	seen := 0
	for i < end {
		if seen > 0 {
			if d[i] != ',' {
				return nil, false
			}
			i++
		}
		key, j, ok := events.ScanPlainString(d, i)
		if !ok || j >= end || d[j] != ':' {
			return nil, false
		}
		i = j + 1
		switch string(key) { // no allocation: compared in place
		case "stream", "domain":
			s, j, ok := events.ScanPlainString(d, i)
			if !ok {
				return nil, false
			}
			if string(key) == "stream" {
				a.Stream = string(s)
			} else {
				a.Domain = string(s)
			}
			i = j
		case "seq":
			var n uint64
			j := i
			for ; j < end && '0' <= d[j] && d[j] <= '9'; j++ {
				n = n*10 + uint64(d[j]-'0')
			}
			// No digit, a leading zero (not JSON), or past what a uint64
			// surely holds: encoding/json judges.
			if j == i || j-i > 19 || d[i] == '0' && j-i > 1 {
				return nil, false
			}
			a.Sequence, i = n, j
		case "duplicate":
			switch {
			case end-i >= 4 && string(d[i:i+4]) == "true":
				a.Duplicate, i = true, i+4
			case end-i >= 5 && string(d[i:i+5]) == "false":
				a.Duplicate, i = false, i+5
			default:
				return nil, false
			}
		default:
			return nil, false
		}
		seen++
	}
	if a.Stream == "" {
		return nil, false
	}
	return a, true
}

var _ jetstream.PubAckFuture = (*pubFuture)(nil)

// publishSync is nats.go's JetStream PublishMsg without its options and
// with the PubAck read by parsePubAck, sent through the bus's async
// publisher and waited for until deadline or ctx ends: no context, timer,
// response-map entry and channel of nats.go's request for each write (a
// run makes three: its claim, its final fact and its final record). As
// nats.go's, it is sent again after jetstream.DefaultPubRetryWait when
// nobody answered (no stream leader), at most
// jetstream.DefaultPubRetryAttempts times, then fails with
// jetstream.ErrNoStreamResponse; the server's refusal is its
// *jetstream.APIError, wrapped as nats.go wraps it. An answer that did not
// come by deadline, or whose connection was lost after the write was sent,
// is errAnswerLost: the write may or may not be stored.
func (b *Bus) publishSync(ctx context.Context, m *nats.Msg, deadline time.Time) (*jetstream.PubAck, error) {
	f, err := b.apub.publishWithin(m, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	return f.await(ctx)
}

// await waits for f's answer, or for ctx to end.
func (f *pubFuture) await(ctx context.Context) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.ok:
		return ack, nil
	case err := <-f.err:
		if _, ok := errors.AsType[*jetstream.APIError](err); ok {
			return nil, fmt.Errorf("nats: %w", err)
		}
		if errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrDisconnected) {
			return nil, fmt.Errorf("%w: %w", errAnswerLost, err)
		}
		return nil, err
	case <-ctx.Done():
		// The publish stays pending until its timeout: the sweeper ends
		// it, and its buffered channels take the answer unread.
		return nil, ctx.Err()
	}
}

// errAnswerLost is the error of a synchronous write whose answer did not
// come within its wait, or whose connection was lost after it was sent:
// it may or may not be stored (retryWrite asks again when the write is
// idempotent).
var errAnswerLost = errors.New("no answer to the write")
