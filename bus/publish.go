package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// publishStallWait bounds how long an async publish waits for room under
// Config.MaxPending.
const publishStallWait = 10 * time.Second

// asyncPublishOpts are the options of every async publish, made once: an
// option is a closure, and a variadic slice built per call escapes.
var asyncPublishOpts = []jetstream.PublishOpt{jetstream.WithStallWait(publishStallWait)}

// Message builds the NATS message of an event: attributes as headers, data
// as the body, msgID as Nats-Msg-Id when not empty.
func Message(subject, msgID string, ev *events.Event) *nats.Msg {
	m := nats.NewMsg(subject)
	ev.Encode(m.Header)
	if msgID != "" {
		m.Header.Set(events.HeaderMsgID, msgID)
	}
	m.Data = ev.Data
	return m
}

// Publish writes an event to the log and waits for JetStream's ack. A
// republish with the same msgID within the duplicate window is acked
// without being stored again (PubAck.Duplicate).
func (b *Bus) Publish(ctx context.Context, subject, msgID string, ev *events.Event) (*jetstream.PubAck, error) {
	ack, err := b.js.PublishMsg(ctx, Message(subject, msgID, ev))
	if err != nil {
		return nil, fmt.Errorf("publishing %s: %w", subject, err)
	}
	return ack, nil
}

// PublishAsync writes an event to the log without waiting; the returned
// future reports the ack. Acks collects futures to wait on together.
func (b *Bus) PublishAsync(subject, msgID string, ev *events.Event) (jetstream.PubAckFuture, error) {
	// With MaxPending publishes unacknowledged, a burst waits for room
	// rather than failing (nats.go's default is 200 ms), which would fail a
	// task run and have it redelivered.
	f, err := b.js.PublishMsgAsync(Message(subject, msgID, ev), asyncPublishOpts...)
	if err != nil {
		return nil, fmt.Errorf("publishing %s: %w", subject, err)
	}
	return f, nil
}

// PublishTimeout is Config.PublishTimeout: how long an async publish waits
// for its ack.
func (b *Bus) PublishTimeout() time.Duration { return b.cfg.PublishTimeout }

// ShouldRecord reports whether a firing of trigger is written to the log
// under the configured RecordMode.
func (b *Bus) ShouldRecord(trigger string) bool {
	if b.cfg.Record == RecordAll {
		return true
	}
	if t, ok := events.Lookup(trigger); ok && t.Lifecycle {
		return true
	}
	return b.reg.Subscribed(trigger)
}

// Acks tracks async publishes so that a caller can wait until all of them
// are stored: a worker acks a task only once every fact of its run is in the
// log. It is safe for concurrent use.
type Acks struct {
	mu    sync.Mutex
	futs  []jetstream.PubAckFuture
	err   error
	bound time.Duration // the publish timeout of the futures' bus
}

// Add tracks f.
func (a *Acks) Add(f jetstream.PubAckFuture) {
	a.mu.Lock()
	a.futs = append(a.futs, f)
	a.mu.Unlock()
}

// Bound sets the publish timeout Wait counts on (Bus.PublishTimeout);
// DefaultPublishTimeout when never set.
func (a *Acks) Bound(d time.Duration) {
	a.mu.Lock()
	a.bound = d
	a.mu.Unlock()
}

// Fail records an error that Wait will return.
func (a *Acks) Fail(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
}

// ErrAcksLost is returned by Acks.Wait when a publish was neither acked
// nor failed within the bound of its wait: it may or may not be stored.
var ErrAcksLost = errors.New("publish acknowledgement lost")

// acksWaitSlack is how much longer than the publish timeout Acks.Wait
// waits before giving up on a future: each future fails on its own after
// Config.PublishTimeout, so this bound is only reached if one never does.
const acksWaitSlack = 5 * time.Second

// Wait blocks until every tracked publish is acked, and returns the first
// error. Tracked futures are forgotten. It never waits for ever, whatever
// ctx: every async publish times out after Config.PublishTimeout
// (jetstream.ErrAsyncPublishTimeout), and Wait itself gives up
// (ErrAcksLost) a little later should a future never resolve. Then a
// publish may or may not be stored: a run that gets this error is not
// over, and its task message must be redelivered.
func (a *Acks) Wait(ctx context.Context) error {
	a.mu.Lock()
	futs, err, bound := a.futs, a.err, a.bound
	a.futs, a.err = nil, nil
	a.mu.Unlock()
	errs := []error{err}
	if len(futs) == 0 {
		return errors.Join(errs...)
	}
	if bound <= 0 {
		bound = DefaultPublishTimeout
	}
	guard := time.NewTimer(bound + acksWaitSlack)
	defer guard.Stop()
	for _, f := range futs {
		select {
		case <-f.Ok():
		case e := <-f.Err():
			errs = append(errs, fmt.Errorf("publishing %s: %w", f.Msg().Subject, e))
		case <-guard.C:
			return fmt.Errorf("waiting for publish acks: %w", ErrAcksLost)
		case <-ctx.Done():
			return fmt.Errorf("waiting for publish acks: %w", context.Cause(ctx))
		}
	}
	return errors.Join(errs...)
}
