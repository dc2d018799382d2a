package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// ErrTaskNotFound is returned for an unknown task id.
var ErrTaskNotFound = errors.New("task not found")

// TaskRecord is a task's current record with its KV revision, for
// compare-and-set updates.
type TaskRecord struct {
	Task     events.Task
	Revision uint64
}

// CreateTask stores a new task record. If a record with the same id exists
// (an idempotent resubmission), it returns that record and created=false.
func (b *Bus) CreateTask(ctx context.Context, t events.Task) (rec TaskRecord, created bool, err error) {
	if !events.ValidToken(t.ID) {
		return rec, false, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return rec, false, fmt.Errorf("encoding task %s: %w", t.ID, err)
	}
	rev, err := b.taskKV.Create(ctx, t.ID, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		rec, err = b.GetTask(ctx, t.ID)
		return rec, false, err
	}
	if err != nil {
		return rec, false, fmt.Errorf("storing task %s: %w", t.ID, err)
	}
	return TaskRecord{Task: t, Revision: rev}, true, nil
}

// GetTask returns a task's current record.
func (b *Bus) GetTask(ctx context.Context, id string) (TaskRecord, error) {
	if !events.ValidToken(id) {
		return TaskRecord{}, fmt.Errorf("%w: invalid id %q", ErrTaskNotFound, id)
	}
	if b.taskKV == nil {
		return TaskRecord{}, fmt.Errorf("%w: %s (this connection cannot read task records)", ErrTaskNotFound, id)
	}
	e, err := b.taskKV.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return TaskRecord{}, fmt.Errorf("%w: %s", ErrTaskNotFound, id)
	}
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	var t events.Task
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return TaskRecord{}, fmt.Errorf("decoding task %s: %w", id, err)
	}
	return TaskRecord{Task: t, Revision: e.Revision()}, nil
}

// DeleteTask removes a task's record if it is still at revision rev; a
// later CreateTask may make it again.
func (b *Bus) DeleteTask(ctx context.Context, id string, rev uint64) error {
	if !events.ValidToken(id) {
		return fmt.Errorf("%w: invalid id %q", ErrTaskNotFound, id)
	}
	if err := b.taskKV.Delete(ctx, id, jetstream.LastRevision(rev)); err != nil {
		if revisionMoved(err) {
			return fmt.Errorf("%w: %s", ErrConflict, id)
		}
		return fmt.Errorf("deleting task %s: %w", id, err)
	}
	return nil
}

// ErrConflict is returned by UpdateTask when the record changed since it was
// read.
var ErrConflict = errors.New("task record changed concurrently")

// UpdateTask writes t if the record is still at revision rev.
func (b *Bus) UpdateTask(ctx context.Context, t events.Task, rev uint64) (uint64, error) {
	if !events.ValidToken(t.ID) {
		return 0, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return 0, fmt.Errorf("encoding task %s: %w", t.ID, err)
	}
	var n uint64
	switch t.Status {
	case events.StatusSuccess, events.StatusError, events.StatusCancel:
		n, err = b.updateWithTTL(ctx, t.ID, data, rev)
	default:
		n, err = b.taskKV.Update(ctx, t.ID, data, rev)
	}
	if err != nil {
		if revisionMoved(err) {
			return 0, fmt.Errorf("%w: %s", ErrConflict, t.ID)
		}
		return 0, fmt.Errorf("updating task %s: %w", t.ID, err)
	}
	return n, nil
}

// revisionMoved reports whether a conditional write of a record failed
// because the record is no longer at the revision given.
func revisionMoved(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		errors.Is(err, jetstream.ErrKeyExists)
}

// updateWithTTL is KeyValue.Update for a finished record: the same
// conditional publish on the key's subject, with the record's expiry.
func (b *Bus) updateWithTTL(ctx context.Context, id string, data []byte, rev uint64) (uint64, error) {
	if b.cfg.FinishedTaskTTL <= 0 {
		return b.taskKV.Update(ctx, id, data, rev)
	}
	m := nats.NewMsg("$KV." + BucketTasks + "." + id)
	m.Data = data
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(b.cfg.FinishedTaskTTL))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// WatchTask sends a task's record each time it changes, starting with the
// current one, until ctx ends.
func (b *Bus) WatchTask(ctx context.Context, id string) (<-chan events.Task, error) {
	if !events.ValidToken(id) {
		return nil, fmt.Errorf("%w: invalid id %q", ErrTaskNotFound, id)
	}
	w, err := b.taskKV.Watch(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("watching task %s: %w", id, err)
	}
	out := make(chan events.Task, 4)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case u, ok := <-w.Updates():
				if !ok {
					return
				}
				if u == nil || u.Operation() != jetstream.KeyValuePut {
					continue
				}
				var t events.Task
				if json.Unmarshal(u.Value(), &t) != nil {
					continue
				}
				select {
				case out <- t:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Enqueue puts a task on its queue for a worker. The message id is the task
// id and attempt, so a repeated enqueue of the same attempt is dropped.
func (b *Bus) Enqueue(ctx context.Context, t events.Task, source string) error {
	data, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encoding task %s: %w", t.ID, err)
	}
	ev := events.Event{
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
	}
	if _, err := b.Publish(ctx, events.RunSubject(t.Queue), ev.ID, &ev); err != nil {
		return fmt.Errorf("enqueueing task %s: %w", t.ID, err)
	}
	return nil
}

// TaskConsumer returns the durable pull consumer workers of queue share.
// ackWait is how long a silent worker keeps a task before it is redelivered
// to another; maxDeliver bounds redeliveries (-1 for no bound).
func (b *Bus) TaskConsumer(ctx context.Context, queue string, ackWait time.Duration, maxDeliver int) (jetstream.Consumer, error) {
	if !events.ValidToken(queue) {
		return nil, fmt.Errorf("queue name %q: must be a valid NATS subject token", queue)
	}
	c, err := b.js.CreateOrUpdateConsumer(ctx, StreamTasks, jetstream.ConsumerConfig{
		Durable:       "workers-" + queue,
		Description:   "qtasks workers of queue " + queue,
		FilterSubject: events.RunSubject(queue),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("creating worker consumer for queue %s: %w", queue, err)
	}
	return c, nil
}
