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
	mu   sync.Mutex
	futs []jetstream.PubAckFuture
	err  error
}

// Add tracks f.
func (a *Acks) Add(f jetstream.PubAckFuture) {
	a.mu.Lock()
	a.futs = append(a.futs, f)
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

// Wait blocks until every tracked publish is acked, and returns the first
// error. Tracked futures are forgotten.
func (a *Acks) Wait(ctx context.Context) error {
	a.mu.Lock()
	futs, err := a.futs, a.err
	a.futs, a.err = nil, nil
	a.mu.Unlock()
	errs := []error{err}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case e := <-f.Err():
			errs = append(errs, fmt.Errorf("publishing %s: %w", f.Msg().Subject, e))
		case <-ctx.Done():
			return fmt.Errorf("waiting for publish acks: %w", context.Cause(ctx))
		}
	}
	return errors.Join(errs...)
}
