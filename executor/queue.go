package executor

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// storeAndQueue stores a submitted task's record and queues its task
// message, after publishing the facts of the submission's phase so far; enc
// is t encoded (fireBefore's). It returns the record that stands and created=false when another submission
// with the same idempotency key stored one first (this one is then not
// queued, and rec is the first one's).
//
// Its errors are Submit's: a plain error means the task was not queued (a
// record stored without a task message is taken back, or left to the
// janitor when that fails too), an *OutcomeUnknownError that it may be.
//
// With pipelined (a submission whose key Submit generated: no other
// submission can share its task id), the record, the task message and the
// facts go out at once and every ack is awaited once (issue #15, design
// (e)); otherwise the record is stored first, so that of two submissions
// racing with one key only the one that stored it queues a task message
// (both would carry the same message id, and the loser's might be the one
// stored).
func (a *App) storeAndQueue(ctx context.Context, f *firing, t *events.Task, enc []byte, pipelined bool) (rec bus.TaskRecord, created bool, err error) {
	f.flush()
	if !pipelined {
		if rec, created, err = a.b.CreateTask(ctx, *t); err != nil || !created {
			return rec, created, err
		}
		if err := a.b.Enqueue(ctx, *t, a.source); err != nil {
			return rec, true, a.notQueued(ctx, t, rec, err)
		}
		return rec, true, nil
	}
	cfut, cerr := a.b.CreateTaskAsync(*t, enc)
	qfut, qerr := a.b.EnqueueAsync(*t, enc, a.source)
	if qerr == nil {
		_, errs := a.b.AwaitAttempts(ctx, []jetstream.PubAckFuture{qfut})
		qerr = errs[0]
	}
	if qerr != nil {
		// Asked again as the keyed path's Enqueue is, within ctx (no
		// stream leader yet, an answer lost): a batch's rule too.
		qerr = a.b.EnqueueAfter(ctx, *t, enc, a.source, qerr)
	}
	if cerr == nil {
		// Awaited whatever ctx (AwaitAck is bounded): what the record is
		// decides the answer.
		var pa *jetstream.PubAck
		if pa, cerr = a.b.AwaitAck(context.WithoutCancel(ctx), cfut); cerr == nil {
			rec = bus.TaskRecord{Task: *t, Revision: pa.Sequence}
		}
	}
	switch {
	case qerr != nil && cerr == nil:
		return rec, true, a.notQueued(ctx, t, rec, qerr)
	case qerr != nil:
		if !bus.SurelyNotStored(qerr) {
			return rec, true, &OutcomeUnknownError{TaskID: t.ID, IdempotencyKey: t.IdempotencyKey, Err: fmt.Errorf("submitting %s: %w", t.Name, qerr)}
		}
		// Neither stored, as far as is known: not queued. A record stored
		// all the same (its ack lost) is ended by the janitor (janitor.go).
		return rec, true, errors.Join(qerr, cerr)
	case cerr != nil:
		// The task is queued; its record is not known to be stored. The
		// conditional write refused means a record exists: a worker made
		// it from the task message (it got there first), or this very
		// write was stored and its ack lost. Anything else: store it now,
		// so that Get finds the task from the moment Submit returns.
		r, _, err := a.b.CreateTask(context.WithoutCancel(ctx), *t)
		if err != nil {
			return rec, true, &OutcomeUnknownError{
				TaskID: t.ID, IdempotencyKey: t.IdempotencyKey,
				Err: fmt.Errorf("submitting %s: task queued, its record not stored: %w", t.Name, errors.Join(cerr, err)),
			}
		}
		return r, true, nil
	}
	return rec, true, nil
}

// notQueued answers a submission whose record is stored (at rec) and whose
// task message failed with err.
func (a *App) notQueued(ctx context.Context, t *events.Task, rec bus.TaskRecord, err error) error {
	if !bus.SurelyNotStored(err) {
		// The task message may be stored (its ack lost, or ctx ended
		// while waiting for it): the task may run. The record stays, so
		// that a retry with the key finds it and queues it again, which
		// JetStream drops if it is a duplicate.
		return &OutcomeUnknownError{TaskID: t.ID, IdempotencyKey: t.IdempotencyKey, Err: fmt.Errorf("submitting %s: %w", t.Name, err)}
	}
	// A record with no task message would never run, and a resubmission
	// of its idempotency key would return it as accepted: take it back.
	if derr := a.b.DeleteTask(context.WithoutCancel(ctx), t.ID, rec.Revision); derr != nil {
		err = errors.Join(err, fmt.Errorf("taking back the record of the unqueued task %s (the janitor will end it): %w", t.ID, derr))
	}
	return err
}
