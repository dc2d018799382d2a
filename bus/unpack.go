package bus

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Stored is one event of the event log where it is stored. A message holds
// one event alone (binary mode), or, on a phase subject, the packed facts
// of one phase in the CloudEvents JSON batch format (events.PhaseSubject):
// each of those is one Stored, at its index in the message. Every reader of
// the log goes through Unpack, so that a fact reads the same whichever way
// it travelled.
type Stored struct {
	// Seq is the stream sequence of the message that holds the event.
	Seq uint64
	// Index is the event's position in its message: 0 for an event alone.
	Index int
	// Count is how many events its message holds: 1 for an event alone.
	Count int
	// Subject is the event's subject: its message's for an event alone,
	// and for a packed fact the trigger subject it has when it travels
	// alone (events.FactSubject of its trigger and the phase's queue), so
	// that readers filter and check both kinds alike.
	Subject string
	// Phase is the subject of the phase message that holds a packed fact;
	// empty for an event alone.
	Phase string
	// Event is the decoded event; Err is set (and Event partly filled, or
	// empty for a batch that cannot be read) when it is not a valid one.
	Event events.Event
	Err   error
}

// Packed reports whether s is a fact packed in a phase message.
func (s *Stored) Packed() bool { return s.Phase != "" }

// Last reports whether s is the last event of its message: a consumer
// acknowledges the message once its last event is handled.
func (s *Stored) Last() bool { return s.Index >= s.Count-1 }

// Unpack decodes the message stored at seq on subject: the one event of a
// message alone, or every fact of a phase message, in the order they were
// fired. It returns at least one Stored. A phase message is read whole or
// not at all (events.DecodeBatch): one that cannot be read, or holds
// something other than facts of its queue's triggers, is one Stored with
// Err set and the phase subject as its Subject.
func Unpack(seq uint64, subject string, h events.Headers, data []byte) []Stored {
	if !strings.HasPrefix(subject, events.SubjectPhase+".") {
		ev, err := events.Decode(h, data)
		return []Stored{{Seq: seq, Count: 1, Subject: subject, Event: ev, Err: err}}
	}
	bad := func(err error) []Stored {
		return []Stored{{Seq: seq, Count: 1, Subject: subject, Phase: subject, Err: err}}
	}
	if err := events.CheckNotEcho(h); err != nil {
		return bad(err)
	}
	_, queue, err := events.ParsePhaseSubject(subject)
	if err != nil {
		return bad(err)
	}
	if ct := events.HeaderValue(h, events.HeaderContentType); ct != events.ContentTypeBatch {
		return bad(fmt.Errorf("%w: a phase message of content type %q, want %s", events.ErrInvalidEvent, ct, events.ContentTypeBatch))
	}
	evs, err := events.DecodeBatch(data)
	if err != nil {
		return bad(err)
	}
	for i := range evs {
		if t := evs[i].Type; !strings.HasPrefix(t, events.TypeTriggerPrefix) || t[len(events.TypeTriggerPrefix):] != evs[i].Trigger || !events.ValidToken(evs[i].Trigger) {
			return bad(fmt.Errorf("%w: element %d of a phase message is of type %q with trigger %q, not a fact", events.ErrInvalidEvent, i, t, evs[i].Trigger))
		}
	}
	out := make([]Stored, len(evs))
	for i := range evs {
		out[i] = Stored{Seq: seq, Index: i, Count: len(evs), Subject: events.FactSubject(evs[i].Trigger, queue), Phase: subject, Event: evs[i]}
	}
	return out
}

// Delivery is one message of the event log delivered by a durable
// consumer, decoded (Unpack): its events with their positions, and the
// acknowledgement of the message, which covers them all. A consumer acks a
// phase message once it has handled every fact in it.
type Delivery struct {
	Events []Stored
	// Deliveries counts how often JetStream has delivered the message.
	Deliveries int
	msg        jetstream.Msg
}

// Deliver decodes a message a consumer of the event log delivered.
func Deliver(m jetstream.Msg) (*Delivery, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("a message on %s without metadata: %w", m.Subject(), err)
	}
	return &Delivery{
		Events:     Unpack(md.Sequence.Stream, m.Subject(), events.Headers(m.Headers()), m.Data()),
		Deliveries: int(md.NumDelivered), //nolint:gosec // G115: a delivery count, far below 2^63
		msg:        m,
	}, nil
}

// Seq is the message's stream sequence.
func (d *Delivery) Seq() uint64 { return d.Events[0].Seq }

// Subject is the message's subject (a phase subject for packed facts).
func (d *Delivery) Subject() string { return d.msg.Subject() }

// Ack acknowledges the message (with an AckAll consumer, every message up
// to it).
func (d *Delivery) Ack() error { return d.msg.Ack() }

// Nak asks for the message again.
func (d *Delivery) Nak() error { return d.msg.Nak() }

// Term stops the message's redelivery.
func (d *Delivery) Term() error { return d.msg.Term() }
