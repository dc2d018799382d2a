package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Stored is an event as stored in the log, with its stream sequence. Err is
// set (and Event partly filled) when the message is not a valid event.
type Stored struct {
	Seq     uint64
	Subject string
	Event   events.Event
	Err     error
}

// ReadLog calls fn for every message of the event log matching subjects
// (all when none), in stream order, from sequence from (1 for the start) up
// to the last message stored when ReadLog was called. It uses an ephemeral
// ordered consumer and holds nothing in memory.
func (b *Bus) ReadLog(ctx context.Context, from uint64, subjects []string, fn func(Stored) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	return b.readLog(ctx, from, cfg, fn)
}

// ReadLogSince is ReadLog from the first message stored at or after since
// (by the server's clock).
func (b *Bus) ReadLogSince(ctx context.Context, since time.Time, subjects []string, fn func(Stored) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}
	return b.readLog(ctx, 1, cfg, fn)
}

// TaskClockSkew is how far apart the clocks of the processes sharing a bus
// may be: lookups that start from a time a process wrote into a task record
// start this much earlier.
const TaskClockSkew = time.Minute

// TaskIDTime is when a task with a time-ordered id (a UUIDv7, which the
// executor gives tasks submitted without an idempotency key) was made; zero
// for any other id.
func TaskIDTime(id string) time.Time {
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		return time.Time{}
	}
	sec, nsec := u.Time().UnixTime()
	return time.Unix(sec, nsec)
}

// TaskEvents calls fn for every event of task id on subjects (all when
// none), in stream order, reading the log from since less TaskClockSkew.
// Since is a time written into the task's record before the events sought
// (its creation, or the start of a run); zero reads from the time a
// time-ordered id tells (TaskIDTime), else from the start of the log.
// Subjects do not carry task ids, so the server filters by subject and
// TaskEvents by the taskid attribute: the cost is that of reading every
// matching event since then.
func (b *Bus) TaskEvents(ctx context.Context, id string, since time.Time, subjects []string, fn func(Stored) error) error {
	if since.IsZero() {
		since = TaskIDTime(id)
	}
	read := func(s Stored) error {
		if s.Err != nil || s.Event.TaskID != id {
			return nil
		}
		return fn(s)
	}
	if since.IsZero() {
		return b.ReadLog(ctx, 1, subjects, read)
	}
	return b.ReadLogSince(ctx, since.Add(-TaskClockSkew), subjects, read)
}

func (b *Bus) readLog(ctx context.Context, from uint64, cfg jetstream.OrderedConsumerConfig, fn func(Stored) error) error {
	info, err := b.events.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading event log: %w", err)
	}
	last := info.State.LastSeq
	if last == 0 || from > last {
		return nil
	}
	c, err := b.js.OrderedConsumer(ctx, StreamEvents, cfg)
	if err != nil {
		return fmt.Errorf("reading event log: %w", err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading event log: %w", err)
	}
	// An ordered consumer is ephemeral but lingers until its inactivity
	// threshold; frequent readers would pile them up against the server's
	// consumer limit.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = b.js.DeleteConsumer(dctx, StreamEvents, ci.Name)
	}()
	if ci.NumPending == 0 {
		return nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("reading event log: %w", err)
	}
	defer it.Stop()
	for {
		m, err := nextWithin(ctx, it, 30*time.Second)
		if err != nil {
			return err
		}
		if m == nil {
			return errors.New("reading event log: no message within 30s")
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading event log: %w", err)
		}
		if md.Sequence.Stream > last {
			return nil // appended after the read started
		}
		ev, derr := events.Decode(events.Headers(m.Headers()), m.Data())
		if err := fn(Stored{Seq: md.Sequence.Stream, Subject: m.Subject(), Event: ev, Err: derr}); err != nil {
			return err
		}
		// NumPending counts matching messages after this one; messages
		// appended after the call started are left for the next read.
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return nil
		}
	}
}

// nextWithin returns the next message, or nil when none comes within d.
func nextWithin(ctx context.Context, it jetstream.MessagesContext, d time.Duration) (jetstream.Msg, error) {
	type r struct {
		m   jetstream.Msg
		err error
	}
	ch := make(chan r, 1)
	go func() {
		m, err := it.Next()
		ch <- r{m, err}
	}()
	select {
	case x := <-ch:
		if errors.Is(x.err, jetstream.ErrMsgIteratorClosed) {
			return nil, nil
		}
		return x.m, x.err
	case <-time.After(d):
		it.Stop()
		return nil, nil
	case <-ctx.Done():
		it.Stop()
		return nil, context.Cause(ctx)
	}
}

// ErrNoMessage is returned by Event when the log has no message at the
// sequence.
var ErrNoMessage = errors.New("no message in the event log")

// Event returns the event stored at stream sequence seq.
func (b *Bus) Event(ctx context.Context, seq uint64) (Stored, error) {
	m, err := b.events.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Stored{}, fmt.Errorf("%w: sequence %d", ErrNoMessage, seq)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("reading event %d: %w", seq, err)
	}
	ev, derr := events.Decode(events.Headers(m.Header), m.Data)
	return Stored{Seq: m.Sequence, Subject: m.Subject, Event: ev, Err: derr}, nil
}
