package bus

import (
	"context"
	"errors"
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

// A batch of submissions (executor.SubmitMany) makes the first attempt of
// each write without waiting (CreateTaskAsync, EnqueueAsync), waits for
// the attempts' answers together (AwaitAttempts), and asks again, one
// write at a time, what did not get through (CreateTaskAfter,
// EnqueueAfter): retryWrite takes the first attempt's answer as its own
// first attempt's and goes on as it does for one write, so that a batch
// rides out a leader election as Submit does ("Writes ride out a leader
// election", ARCHITECTURE.md).

// AwaitAttempts waits for the answers of futs, the first attempts of
// writes that may be asked again (CreateTaskAsync, EnqueueAsync), as
// retryWrite waits for one attempt's: while answers come in, and up to
// its attempt wait after the last one, for writes of one stream answered
// in order, and a publish timeout and a slack at most (as AwaitAck). It
// returns each future's ack or error; one whose answer did not come by
// then (its stream's leader died with it) gets an error wrapping
// ErrAcksLost, and one still open when ctx ends context.Cause's: its
// outcome is unknown.
func (b *Bus) AwaitAttempts(ctx context.Context, futs []jetstream.PubAckFuture) ([]*jetstream.PubAck, []error) {
	acks := make([]*jetstream.PubAck, len(futs))
	errs := make([]error, len(futs))
	quiet := time.NewTimer(writeAttemptWait)
	defer quiet.Stop()
	// Each future fails on its own after the publish timeout; the guard
	// bounds the whole wait should answers trickle in.
	guard := time.NewTimer(b.cfg.PublishTimeout + acksWaitSlack)
	defer guard.Stop()
	var stop error
	for i, f := range futs {
		if stop == nil {
			select {
			case acks[i] = <-f.Ok():
				quiet.Reset(writeAttemptWait)
				continue
			case errs[i] = <-f.Err():
				quiet.Reset(writeAttemptWait)
				continue
			case <-quiet.C:
				stop = fmt.Errorf("no answer within %v: %w", writeAttemptWait, ErrAcksLost)
			case <-guard.C:
				stop = ErrAcksLost
			case <-ctx.Done():
				stop = fmt.Errorf("waiting for the ack: %w", context.Cause(ctx))
			}
		}
		select { // an answer already in is taken
		case acks[i] = <-f.Ok():
		case errs[i] = <-f.Err():
		default:
			errs[i] = fmt.Errorf("publishing %s: %w", f.Msg().Subject, stop)
		}
	}
	return acks, errs
}

// CreateTaskAfter is CreateTask for the record t, encoded as enc (or nil,
// as CreateTaskAsync's), whose first attempt, a CreateTaskAsync, ended
// with first (from AwaitAttempts): asked again within ctx as CreateTask
// is, a record that holds exactly what it writes is taken for its own, and
// an error leaves the outcome unknown when an earlier attempt's was.
func (b *Bus) CreateTaskAfter(ctx context.Context, t events.Task, enc []byte, first error) (TaskRecord, bool, error) {
	return b.createTask(ctx, t, enc, firstAttempt(first))
}

// EnqueueAfter is Enqueue for t, encoded as enc (or nil), whose first
// attempt, an EnqueueAsync, ended with first (from AwaitAttempts; nil when
// there was none, as for Enqueue): asked again within ctx, a copy dropped
// by its Nats-Msg-Id.
// A delayed task's scheduled message is asked again the same way.
func (b *Bus) EnqueueAfter(ctx context.Context, t events.Task, enc []byte, source string, first error) error {
	ev, err := taskMessage(t, enc, source)
	if err != nil {
		return err
	}
	m, delayed := b.delayedMsg(t, ev.ID, &ev)
	if !delayed {
		m = Message(events.RunSubject(t.Queue), ev.ID, &ev)
	}
	first = firstAttempt(first)
	err = b.retryWrite(ctx, true, func(a writeAttempt) error {
		if a.n == 1 && first != nil {
			return first
		}
		_, err := b.publishSync(a.ctx, m, a.deadline)
		return err
	})
	if err != nil {
		return fmt.Errorf("enqueueing task %s: %w", t.ID, err)
	}
	return nil
}

// firstAttempt is the error of an async first attempt as retryWrite reads
// an attempt's: an answer that will not come (the publish timed out, its
// waiter gave up on it, or its connection was lost after it was sent) is
// an attempt that ran out of its wait, as a synchronous attempt would
// have, and is asked again; anything else is as it is.
func firstAttempt(err error) error {
	if errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, ErrAcksLost) || errors.Is(err, nats.ErrDisconnected) {
		return fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
	}
	return err
}
