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

// Message builds the NATS message of an event: attributes as headers, data
// as the body, msgID as Nats-Msg-Id when not empty.
func Message(subject, msgID string, ev *events.Event) *nats.Msg {
	// Sized for a fact's headers (twelve, the trace's and the message
	// id's): the map is made once rather than grown past eight on the way
	// (1256 rather than 1608 bytes; a larger size costs more than it saves).
	m := &nats.Msg{Subject: subject, Header: make(nats.Header, 14)}
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
//
// A publish with a msgID whose ack does not come within an attempt's wait
// (its stream's leader died with it) is sent again under the same id, as
// is any publish the server answered that nobody stored (no leader yet),
// until ctx ends or, when ctx has no deadline, Config.PublishTimeout
// (retryWrite). One without a msgID is not sent again after a lost ack: a
// second copy would be stored.
func (b *Bus) Publish(ctx context.Context, subject, msgID string, ev *events.Event) (*jetstream.PubAck, error) {
	m := Message(subject, msgID, ev)
	var ack *jetstream.PubAck
	err := b.retryWrite(ctx, msgID != "", func(a writeAttempt) error {
		var err error
		ack, err = b.publishSync(a.ctx, m, a.deadline)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("publishing %s: %w", subject, err)
	}
	return ack, nil
}

// The attempts of a synchronous write (retryWrite). A write sent to a
// stream leader that dies is never answered: the followers drop it until
// one of them is elected (0.1-5 s, up to 20 s on a loaded machine). Waiting
// for that answer held submissions for their whole deadline after every
// leader kill; asking again finds the new leader.
const (
	// writeAttemptWait is how long the first attempt waits for its answer;
	// each further one waits a quarter longer, up to writeAttemptWaitMax,
	// so that a write that is only slow (a loaded server) is not sent ever
	// more often. A request sent before the election is lost however long
	// it waits: the shorter the wait, the sooner the new leader is asked.
	writeAttemptWait    = time.Second
	writeAttemptWaitMax = 4 * time.Second
	// writeRetryPause is the pause after an answer that nobody stored the
	// write (no leader yet), doubled up to writeRetryPauseMax.
	writeRetryPause    = 100 * time.Millisecond
	writeRetryPauseMax = time.Second
)

// retryWrite runs write, an attempt of a synchronous JetStream write
// (attempt counts from 1), until it succeeds, fails for good, or the bound
// ends: ctx's deadline, else Config.PublishTimeout. An attempt gets its own
// deadline (writeAttemptWait, growing) if idempotent, and is tried again
// when it runs out of it (a second copy is dropped by its Nats-Msg-Id or
// refused by its expected sequence; write recognises its own earlier
// attempt then); one that is not idempotent waits for its answer until
// the bound. An attempt the server answered without storing it (no
// stream leader, a cluster not available, the connection reconnecting) is
// tried again after a pause. Any other error ends it.
//
// The error returned is the last attempt's, except that when an earlier
// attempt's outcome was unknown, an error that says the write surely was
// not stored is not returned as such (SurelyNotStored is false for it).
//
// A write whose first attempt was made by the caller, asynchronously (a
// pipelined record create or task message, a run's claim), goes on here
// with write answering that attempt's error as attempt 1 (firstAttempt),
// so that it is read by the same rules as a synchronous one's.
func (b *Bus) retryWrite(ctx context.Context, idempotent bool, write func(a writeAttempt) error) error {
	unknown := false
	// Neither the bound nor an attempt's wait is a context of its own: an
	// attempt is given its deadline as a time (writeAttempt), and makes a
	// context of it only if what it calls needs one. A synchronous publish
	// (publishSync) does not: a run makes three of these writes (its
	// claim, its final fact and its final record).
	bound, hasDeadline := ctx.Deadline()
	if !hasDeadline {
		bound = time.Now().Add(b.cfg.PublishTimeout)
	}
	ended := func() bool { return ctx.Err() != nil || !time.Now().Before(bound) }
	wait, pause := writeAttemptWait, writeRetryPause
	for attempt := 1; ; attempt++ {
		// A write that may not be sent again after a lost answer waits for
		// its answer the whole bound, as it did before attempts had a wait.
		dl := bound
		if idempotent {
			if w := time.Now().Add(wait); w.Before(dl) {
				dl = w
			}
		}
		err := write(writeAttempt{ctx: ctx, deadline: dl, hasDeadline: hasDeadline, bound: bound, n: attempt})
		timedOut := !time.Now().Before(dl) && !ended()
		switch {
		case err == nil:
			return nil
		case ended():
			return unknownAfter(err, unknown)
		case idempotent && (timedOut || errors.Is(err, errAnswerLost) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)):
			unknown = true
			wait = min(wait*5/4, writeAttemptWaitMax)
			continue
		case !storedByNobody(err):
			return unknownAfter(err, unknown)
		}
		if time.Until(bound) < pause+writeAttemptWait {
			// Too little time left for an attempt to be answered: an
			// attempt cut short by the deadline would turn a sure "not
			// stored" into an unknown outcome.
			return unknownAfter(err, unknown)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return unknownAfter(err, unknown)
		}
		pause = min(2*pause, writeRetryPauseMax)
	}
}

// writeAttempt is one attempt of a synchronous write (retryWrite): the
// caller's context, the time by which its answer must come, and its
// number, counting from 1.
type writeAttempt struct {
	ctx         context.Context //nolint:containedctx // an attempt's arguments, passed down at once, never kept
	deadline    time.Time
	hasDeadline bool      // ctx has a deadline of its own
	bound       time.Time // the write's bound: ctx's deadline, or Config.PublishTimeout from its start
	n           int
}

// context is the attempt's context for a call that needs one: ctx, ended
// at the attempt's deadline.
func (a writeAttempt) context() (context.Context, context.CancelFunc) {
	if a.hasDeadline && !a.deadline.Before(a.bound) {
		return a.ctx, func() {}
	}
	return context.WithDeadline(a.ctx, a.deadline)
}

// storedByNobody reports whether err says that a write was not stored
// for a reason that may pass within seconds: no stream leader to answer
// (during an election), a cluster not available, a connection
// reconnecting (with no reconnect buffer, a write fails at once then).
func storedByNobody(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.As(err, &apiErr) && apiErr.Code == 503
}

// unknownAfter is err, hidden from SurelyNotStored when an earlier attempt
// of the same write may have been stored.
func unknownAfter(err error, unknown bool) error {
	if !unknown || !SurelyNotStored(err) {
		return err
	}
	return &outcomeUnknownError{err: err}
}

// outcomeUnknownError is the error of a write whose last attempt was
// surely not stored while an earlier one may have been. It does not unwrap
// to its cause, so that SurelyNotStored is false for it.
type outcomeUnknownError struct{ err error }

func (e *outcomeUnknownError) Error() string {
	return e.err.Error() + " (after an attempt whose outcome is unknown)"
}

// PublishAsync writes an event to the log without waiting; the returned
// future reports the ack. Acks collects futures to wait on together.
func (b *Bus) PublishAsync(subject, msgID string, ev *events.Event) (jetstream.PubAckFuture, error) {
	// With MaxPending publishes unacknowledged, a burst waits for room
	// rather than failing (nats.go's default is 200 ms), which would fail a
	// task run and have it redelivered.
	f, err := b.apub.publish(Message(subject, msgID, ev))
	if err != nil {
		return nil, fmt.Errorf("publishing %s: %w", subject, err)
	}
	return &future{PubAckFuture: f, b: b}, nil
}

// future is an async publish of this bus: Acks.Wait can send its message
// again when the server answers that nobody stored it.
type future struct {
	jetstream.PubAckFuture
	b *Bus
}

// again sends f's message once more, as a new publish.
func (f *future) again() (*future, error) {
	g, err := f.b.apub.publish(f.Msg())
	if err != nil {
		return nil, err
	}
	return &future{PubAckFuture: g, b: f.b}, nil
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
//
// A publish of Bus.PublishAsync that the server answered nobody stored (no
// stream leader, during an election) is sent again after a pause, within
// the bound: it cannot be stored twice. One whose ack is lost is not: a
// fact carries no Nats-Msg-Id (PROTOCOL.md §5), and a second copy would
// repeat its ce-id in the log (ARCHITECTURE.md, "Writes ride out a leader
// election").
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
	resend := time.Now().Add(bound) // no publish is sent again after this
	pause := writeRetryPause
	for _, f := range futs {
		for f != nil {
			select {
			case <-f.Ok():
				f = nil
			case e := <-f.Err():
				g := (*future)(nil)
				if bf, ok := f.(*future); ok && storedByNobody(e) && time.Until(resend) > pause {
					t := time.NewTimer(pause)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						return fmt.Errorf("waiting for publish acks: %w", context.Cause(ctx))
					}
					pause = min(2*pause, writeRetryPauseMax)
					var aerr error
					if g, aerr = bf.again(); aerr != nil {
						e = aerr
					}
				}
				if g == nil {
					errs = append(errs, fmt.Errorf("publishing %s: %w", f.Msg().Subject, e))
					f = nil
				} else {
					f = g
				}
			case <-guard.C:
				return fmt.Errorf("waiting for publish acks: %w", ErrAcksLost)
			case <-ctx.Done():
				return fmt.Errorf("waiting for publish acks: %w", context.Cause(ctx))
			}
		}
	}
	return errors.Join(errs...)
}
