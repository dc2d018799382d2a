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

// ReadLog is the one reader of the event log: it calls fn for every event
// whose subject matches one of subjects (all when none), in stream order,
// from the message at sequence from (1 for the start) up to the last
// message stored when ReadLog was called. An event's subject is the one it
// has alone (Stored.Subject): facts packed in phase messages are unpacked
// and filtered like facts alone, so that a reader of a trigger's facts
// finds all of them however they travelled. Only the phase messages that
// may hold such facts are read: none for lifecycle triggers' facts, which
// always travel alone, those of its queue for a queue's facts. It uses an ephemeral ordered
// consumer and holds one message in memory.
func (b *Bus) ReadLog(ctx context.Context, from uint64, subjects []string, fn func(Stored) error) error {
	f := newLogFilter(subjects)
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.server, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	return b.readLog(ctx, from, cfg, f, fn)
}

// ReadLogSince is ReadLog from the first message stored at or after since
// (by the server's clock).
func (b *Bus) ReadLogSince(ctx context.Context, since time.Time, subjects []string, fn func(Stored) error) error {
	f := newLogFilter(subjects)
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.server, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}
	return b.readLog(ctx, 1, cfg, f, fn)
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
			return nil //nolint:nilerr // an event that does not decode names no task: skipped as another task's
		}
		return fn(s)
	}
	if since.IsZero() {
		return b.ReadLog(ctx, 1, subjects, read)
	}
	return b.ReadLogSince(ctx, since.Add(-TaskClockSkew), subjects, read)
}

func (b *Bus) readLog(ctx context.Context, from uint64, cfg jetstream.OrderedConsumerConfig, f logFilter, fn func(Stored) error) error {
	info, err := b.events.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading event log: %w", err)
	}
	last := info.State.LastSeq
	if last == 0 || from > last {
		return nil
	}
	return b.readMessages(ctx, cfg, last, func(seq uint64, m jetstream.Msg) error {
		for _, s := range Unpack(seq, m.Subject(), events.Headers(m.Headers()), m.Data()) {
			if !f.keep(&s) {
				continue
			}
			if err := fn(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// readMessages calls fn for every message the ordered consumer cfg
// delivers, raw, in stream order, up to sequence last: the one loop over
// the log's messages, under ReadLog (which unpacks them) and VerifyLog
// (which hashes them as stored).
func (b *Bus) readMessages(ctx context.Context, cfg jetstream.OrderedConsumerConfig, last uint64, fn func(seq uint64, m jetstream.Msg) error) error {
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
		if err := fn(md.Sequence.Stream, m); err != nil {
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
			return nil, nil //nolint:nilnil // documented: nil when none comes
		}
		return x.m, x.err
	case <-time.After(d):
		it.Stop()
		return nil, nil //nolint:nilnil // documented: nil when none comes
	case <-ctx.Done():
		it.Stop()
		return nil, context.Cause(ctx)
	}
}

// ErrNoMessage is returned by Message and Event when the log has no
// message at the sequence.
var ErrNoMessage = errors.New("no message in the event log")

// Message returns the events of the message stored at stream sequence seq
// (Unpack); with subject set, of the first message at or after seq on
// subject.
func (b *Bus) Message(ctx context.Context, seq uint64, subject string) ([]Stored, error) {
	var opts []jetstream.GetMsgOpt
	if subject != "" {
		opts = append(opts, jetstream.WithGetMsgSubject(subject))
	}
	m, err := b.events.GetMsg(ctx, seq, opts...)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: sequence %d", ErrNoMessage, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("reading event %d: %w", seq, err)
	}
	return Unpack(m.Sequence, m.Subject, events.Headers(m.Header), m.Data), nil
}

// Event returns the event stored alone at stream sequence seq; a phase
// message there is a Stored whose Err says so.
func (b *Bus) Event(ctx context.Context, seq uint64) (Stored, error) {
	ss, err := b.Message(ctx, seq, "")
	if err != nil {
		return Stored{}, err
	}
	if len(ss) > 1 || ss[0].Packed() {
		s := ss[0]
		s.Subject, s.Event, s.Err = s.Phase, events.Event{}, fmt.Errorf("%w: message %d holds packed facts, not one event", events.ErrInvalidEvent, seq)
		return s, nil
	}
	return ss[0], nil
}
