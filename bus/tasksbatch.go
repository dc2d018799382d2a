package bus

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// createOpts make an async publish a KV create: stored only if the key's
// subject holds no message yet, as KeyValue.Create.
var createOpts = []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithStallWait(publishStallWait)}

// CreateTaskAsync stores a new task record without waiting, for a batch
// of submissions whose acks are awaited together: the future's ack
// sequence is the record's revision. It fails (TaskExists) when the key
// holds any message, a record or the marker of one taken back, where
// CreateTask would make the record again over a marker: a batch leaves
// that case to CreateTask.
func (b *Bus) CreateTaskAsync(t events.Task) (jetstream.PubAckFuture, error) {
	if !events.ValidToken(t.ID) {
		return nil, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encoding task %s: %w", t.ID, err)
	}
	m := nats.NewMsg(taskSubject(t.ID))
	m.Data = data
	f, err := b.js.PublishMsgAsync(m, createOpts...)
	if err != nil {
		return nil, fmt.Errorf("storing task %s: %w", t.ID, err)
	}
	return f, nil
}

// TaskExists reports whether err, of a CreateTaskAsync, says the record's
// key holds a message already.
func TaskExists(err error) bool { return revisionMoved(err) }

// EnqueueAsync is Enqueue without waiting: the future reports the ack.
func (b *Bus) EnqueueAsync(t events.Task, source string) (jetstream.PubAckFuture, error) {
	ev, err := taskMessage(t, source)
	if err != nil {
		return nil, err
	}
	f, err := b.PublishAsync(events.RunSubject(t.Queue), ev.ID, &ev)
	if err != nil {
		return nil, fmt.Errorf("enqueueing task %s: %w", t.ID, err)
	}
	return f, nil
}

// taskMessage is the task message of t's attempt (Enqueue): its id, the
// task id and attempt, is its Nats-Msg-Id, so a repeated enqueue of the
// same attempt is dropped.
func taskMessage(t events.Task, source string) (events.Event, error) {
	data, err := json.Marshal(t)
	if err != nil {
		return events.Event{}, fmt.Errorf("encoding task %s: %w", t.ID, err)
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
