package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// A pipelined submission (issue #15, design (e)) publishes the task record
// and the task message at once and waits for both acks together, instead of
// one round trip after the other (CreateTask, then Enqueue).

// CreateTaskAsync publishes a new task record without waiting: the
// conditional write KeyValue.Create makes (the key's last sequence must be
// 0), as a future. It fails (an *jetstream.APIError, ErrorCode
// JSErrCodeStreamWrongLastSequence) when the key has any entry, a delete
// marker included: CreateTask, which reads the record or writes over the
// marker, settles that case.
//
// enc, when not nil, is t as json.Marshal encodes it, which the caller has
// already (a submission encodes its record once for its facts, its record
// and its task message); nil has t encoded here.
func (b *Bus) CreateTaskAsync(t events.Task, enc []byte) (jetstream.PubAckFuture, error) {
	if !events.ValidToken(t.ID) {
		return nil, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	data, err := encodeTask(t, enc)
	if err != nil {
		return nil, err
	}
	// The publish KeyValue.Create makes (the key's subject must hold no
	// message yet), through the bus's own publisher rather than nats.go's,
	// whose PubAck decoding showed in a submission's profile (asyncpub.go).
	m := &nats.Msg{Subject: taskSubject(t.ID), Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{"0"}}, Data: data}
	f, err := b.apub.publish(m)
	if err != nil {
		return nil, fmt.Errorf("storing task %s: %w", t.ID, err)
	}
	return &future{PubAckFuture: f, b: b}, nil
}

// EnqueueAsync is Enqueue without waiting for the ack; enc is t encoded,
// or nil, as CreateTaskAsync's.
func (b *Bus) EnqueueAsync(t events.Task, enc []byte, source string) (jetstream.PubAckFuture, error) {
	ev, err := taskMessage(t, enc, source)
	if err != nil {
		return nil, err
	}
	// A task due later waits as a scheduled message (delay.go).
	if m, ok := b.delayedMsg(t, ev.ID, &ev); ok {
		f, err := b.js.PublishMsgAsync(m, jetstream.WithStallWait(publishStallWait))
		if err != nil {
			return nil, fmt.Errorf("scheduling task %s: %w", t.ID, err)
		}
		return f, nil
	}
	f, err := b.PublishAsync(events.RunSubject(t.Queue), ev.ID, &ev)
	if err != nil {
		return nil, fmt.Errorf("enqueueing task %s: %w", t.ID, err)
	}
	return f, nil
}

// encodeTask is enc, t's encoding as the caller has it, or t encoded.
func encodeTask(t events.Task, enc []byte) ([]byte, error) {
	if enc != nil {
		return enc, nil
	}
	data, err := t.AppendJSON(nil)
	if err != nil {
		return nil, fmt.Errorf("encoding task %s: %w", t.ID, err)
	}
	return data, nil
}

// taskMessage is the event of a task message: its id is the task id and
// attempt, and so is its Nats-Msg-Id, so a repeated enqueue of the same
// attempt is dropped. Its data is t encoded (enc, or encoded here).
func taskMessage(t events.Task, enc []byte, source string) (events.Event, error) {
	data, err := encodeTask(t, enc)
	if err != nil {
		return events.Event{}, err
	}
	return events.Event{
		ID:              t.ID + ":" + strconv.Itoa(t.Attempt),
		Source:          source,
		Type:            events.TypeTask,
		Subject:         t.ID,
		Time:            time.Now(),
		DataContentType: events.ContentTypeJSON,
		Data:            data,
		TaskID:          t.ID,
		TaskName:        t.Name,
		Attempt:         t.Attempt,
		TraceParent:     t.Trace,
	}, nil
}

// AwaitAck waits for the ack of one async publish: the ack, or the
// publish's error (SurelyNotStored tells whether it was stored), or
// ctx's cause, or ErrAcksLost a little after the publish timeout should
// the future never resolve (as Acks.Wait).
func (b *Bus) AwaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	guard := time.NewTimer(b.cfg.PublishTimeout + acksWaitSlack)
	defer guard.Stop()
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, fmt.Errorf("publishing %s: %w", f.Msg().Subject, err)
	case <-guard.C:
		return nil, fmt.Errorf("publishing %s: %w", f.Msg().Subject, ErrAcksLost)
	case <-ctx.Done():
		return nil, fmt.Errorf("publishing %s: waiting for the ack: %w", f.Msg().Subject, context.Cause(ctx))
	}
}

// TaskExists reports whether err, of a CreateTaskAsync, says the record's
// key holds a message already (a record, or the marker of one taken back):
// the conditional write's refusal.
func TaskExists(err error) bool { return revisionMoved(err) }
