package bus

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// PublishOwn writes one of the executor's own deduplicated events (a final
// fact, a dead letter): ev on subject with Nats-Msg-Id msgID, where
// JetStream's duplicate window spans the whole event log, plugin subjects
// included. A duplicate ack is taken only if the message it points at is
// the executor's own: on subject, with ev's id and type. Anything else is a
// forgery (a plugin published its own message under the id first, to have
// it taken for the executor's or to silence it): it is logged, counted
// (Forgeries), recorded as an alert event (events.TypeAlert, on
// events.AlertSubject, which no plugin may write), and ev is written again
// under msgID plus a random suffix that nobody can predict. The returned
// ack is then that write's, not a duplicate.
//
// source is the writer's CloudEvents source ("qtasks/<node id>"); the
// alert goes to the alert subject of its last part.
func (b *Bus) PublishOwn(ctx context.Context, source, subject, msgID string, ev *events.Event) (*jetstream.PubAck, error) {
	ack, err := b.Publish(ctx, subject, msgID, ev)
	if err != nil || !ack.Duplicate {
		return ack, err
	}
	if b.cfg.Plugin != "" {
		// A plugin's connection may not read the log by sequence; its
		// dedup ids are on its own subjects, which only it writes.
		return ack, nil
	}
	s, err := b.Event(ctx, ack.Sequence)
	if err != nil {
		return nil, fmt.Errorf("publishing %s: checking the message its id is taken by: %w", subject, err)
	}
	reason := ""
	switch {
	case s.Subject != subject:
		reason = fmt.Sprintf("message %d on %s holds the id of an event of %s", s.Seq, s.Subject, subject)
	case s.Err != nil:
		reason = fmt.Sprintf("message %d on %s holds the id and is not a valid event: %v", s.Seq, s.Subject, s.Err)
	case s.Event.ID != ev.ID || s.Event.Type != ev.Type:
		reason = fmt.Sprintf("message %d on %s holds the id with id %q and type %q, want %q and %q", s.Seq, s.Subject, s.Event.ID, s.Event.Type, ev.ID, ev.Type)
	default:
		return ack, nil // ours: a genuine duplicate
	}
	b.forgeries.Add(1)
	b.log.ErrorContext(ctx, "forgery detected: a message the executor did not write occupies the id of one it writes",
		"msg_id", msgID, "want_subject", subject, "seq", s.Seq, "subject", s.Subject, "reason", reason)
	b.Alert(ctx, source, events.Alert{
		Kind: events.AlertForgedMsgID, Stream: StreamEvents, Sequence: s.Seq, Subject: s.Subject,
		MsgID: msgID, Want: subject, Reason: reason,
	})
	// The id is taken for the duplicate window: write the event under one
	// nobody can predict. Two runs racing to write the same final fact may
	// now both be stored; the task record's compare-and-set decides.
	ack, err = b.Publish(ctx, subject, msgID+":"+uuid.NewString(), ev)
	if err != nil {
		return nil, err
	}
	return ack, nil
}

// Alert records an alert event (events.TypeAlert) on the alert subject of
// source's last part ("qtasks/node-1" → qtasks.alert.node-1). It is best
// effort: a failure to record is logged, the detection was logged already.
func (b *Bus) Alert(ctx context.Context, source string, a events.Alert) {
	data, err := jsonMarshal(a)
	if err != nil {
		b.log.ErrorContext(ctx, "recording alert", "err", err)
		return
	}
	key := source[strings.LastIndexByte(source, '/')+1:]
	if !events.ValidToken(key) {
		key = "unknown"
	}
	ev := events.Event{
		ID:              "alert:" + a.Kind + ":" + uuid.NewString(),
		Source:          source,
		Type:            events.TypeAlert,
		Time:            time.Now(),
		DataContentType: events.ContentTypeJSON,
		Data:            data,
	}
	if _, err := b.Publish(context.WithoutCancel(ctx), events.AlertSubject(key), "", &ev); err != nil {
		b.log.ErrorContext(ctx, "recording alert", "kind", a.Kind, "seq", a.Sequence, "err", err)
	}
}

// Forgeries is how many forged messages this bus detected since it was
// opened: ids of the executor's own events taken by other messages, and
// patches on one plugin's subject naming another's invocation.
func (b *Bus) Forgeries() uint64 { return b.forgeries.Load() }
