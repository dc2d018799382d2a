package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// BucketControl holds what operators decided and workers must obey: the
// task attempts cancelled (key cancel.<task id>) and the queues paused (key
// pause.<queue>). Workers watch it. Only executors and operators write it.
const BucketControl = "qtasks_control"

// Control key prefixes.
const (
	controlCancel = "cancel."
	controlPause  = "pause."
)

// ErrNoControl is returned by the control methods of a bus that does not
// own the streams (a plugin's, or a read-only one).
var ErrNoControl = errors.New("this bus cannot act as an operator (a plugin's or read-only bus)")

// Mark is a control entry: who decided, why and when. For a cancel, Attempt
// is the attempt cancelled.
type Mark struct {
	Attempt int       `json:"attempt,omitempty"`
	By      string    `json:"by"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// ControlUpdate is one change of the control bucket, as a watcher sees it.
type ControlUpdate struct {
	// Cancel is the task id of a cancel mark, Pause the queue of a pause
	// mark; one of them is set.
	Cancel, Pause string
	// Mark is the entry; nil when it was removed.
	Mark *Mark
	// Revision is the change's revision in the bucket. Of two changes of
	// the same key, the one with the higher revision is the later: a
	// worker that applied its own app's change at once (executor's
	// applyControl) ignores the watch's late delivery of an older one.
	Revision uint64
}

func (b *Bus) control() (jetstream.KeyValue, error) {
	if b.ctlKV == nil {
		return nil, ErrNoControl
	}
	return b.ctlKV, nil
}

// SetCancel marks attempt m.Attempt of task id cancelled.
func (b *Bus) SetCancel(ctx context.Context, id string, m Mark) error {
	_, err := b.putMark(ctx, controlCancel+id, m)
	return err
}

// ClearCancel removes task id's cancel mark, if any.
func (b *Bus) ClearCancel(ctx context.Context, id string) error {
	_, err := b.deleteMark(ctx, controlCancel+id)
	return err
}

// SetPause pauses queue and returns the change's revision in the bucket
// (ControlUpdate.Revision).
func (b *Bus) SetPause(ctx context.Context, queue string, m Mark) (uint64, error) {
	return b.putMark(ctx, controlPause+queue, m)
}

// ClearPause resumes queue and returns the change's revision in the bucket
// (ControlUpdate.Revision).
func (b *Bus) ClearPause(ctx context.Context, queue string) (uint64, error) {
	return b.deleteMark(ctx, controlPause+queue)
}

// Paused returns queue's pause mark, or nil when it is not paused. A
// value that is no mark (decodeMark) is an error, not a pause.
func (b *Bus) Paused(ctx context.Context, queue string) (*Mark, error) {
	if _, err := b.control(); err != nil {
		return nil, err
	}
	raw, err := b.kvGet(ctx, BucketControl, controlPause+queue)
	if err != nil {
		return nil, fmt.Errorf("reading the pause of queue %s: %w", queue, err)
	}
	if raw == nil || raw.Deleted {
		return nil, nil //nolint:nilnil // documented: nil when the queue is not paused
	}
	if err := raw.echo(); err != nil {
		return nil, fmt.Errorf("reading the pause of queue %s: %w: %w", queue, ErrNotMark, err)
	}
	m, err := decodeMark(raw.Value)
	if err != nil {
		return nil, fmt.Errorf("reading the pause of queue %s: %w", queue, err)
	}
	return &m, nil
}

// ErrNotMark is Paused's error for a control value that is not a mark as
// executors write it: one of JetStream's answers that a plugin had the
// server write there, or an echo (kv.go). Workers take no pause from it.
var ErrNotMark = errors.New("not a control mark")

// decodeMark reads a control value: a mark as putMark writes it, with who
// decided (by) and when (at), and no field a mark does not have, not one
// of JetStream's answers that a plugin had the server write there (kv.go).
// The caller has refused an echo (kvEcho).
func decodeMark(data []byte) (Mark, error) {
	var m Mark
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return Mark{}, fmt.Errorf("%w: %w", ErrNotMark, err)
	}
	if d.More() {
		return Mark{}, fmt.Errorf("%w: data after the mark", ErrNotMark)
	}
	if m.By == "" || m.At.IsZero() {
		return Mark{}, fmt.Errorf("%w: a mark says who decided (by) and when (at)", ErrNotMark)
	}
	return m, nil
}

func (b *Bus) putMark(ctx context.Context, key string, m Mark) (uint64, error) {
	kv, err := b.control()
	if err != nil {
		return 0, err
	}
	data, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	rev, err := kv.Put(ctx, key, data)
	if err != nil {
		return 0, fmt.Errorf("writing control %s: %w", key, err)
	}
	return rev, nil
}

// deleteMark removes key and returns the revision of its delete marker.
func (b *Bus) deleteMark(ctx context.Context, key string) (uint64, error) {
	if _, err := b.control(); err != nil {
		return 0, err
	}
	rev, err := b.kvDelete(ctx, BucketControl, key, 0)
	if err != nil {
		return 0, fmt.Errorf("removing control %s: %w", key, err)
	}
	return rev, nil
}

// WatchControl calls fn with every entry of the control bucket, then with
// every change, until ctx ends; ready is closed once the entries present at
// the start were all passed to fn. fn is called from one goroutine.
func (b *Bus) WatchControl(ctx context.Context, fn func(ControlUpdate)) (ready <-chan struct{}, err error) {
	if _, err := b.control(); err != nil {
		return nil, err
	}
	updates, err := b.watchKV(ctx, BucketControl, ">")
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", BucketControl, err)
	}
	ch := make(chan struct{})
	go func() {
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-updates:
				if e == nil { // the entries present at the start are all in
					if initial {
						initial = false
						close(ch)
					}
					continue
				}
				var u ControlUpdate
				switch key := e.Key; {
				case len(key) > len(controlCancel) && key[:len(controlCancel)] == controlCancel:
					u.Cancel = key[len(controlCancel):]
				case len(key) > len(controlPause) && key[:len(controlPause)] == controlPause:
					u.Pause = key[len(controlPause):]
				default:
					continue
				}
				if !e.Deleted {
					m, err := decodeMark(e.Value)
					if err == nil {
						err = e.echo()
					}
					if err != nil {
						// Not written by an executor or an operator: the
						// worker keeps what the key held before (a queue
						// paused stays paused, one running keeps running).
						b.log.WarnContext(ctx, "ignoring a control entry that is not a mark", "key", e.Key, "revision", e.Revision, "err", err)
						continue
					}
					u.Mark = &m
				}
				u.Revision = e.Revision
				fn(u)
			}
		}
	}()
	return ch, nil
}

// RecordAction writes an operator's action to the log (on
// events.OperatorSubject of its queue) and waits until it is stored.
func (b *Bus) RecordAction(ctx context.Context, source string, a events.OperatorAction) (uint64, error) {
	if err := a.Check(); err != nil {
		return 0, err
	}
	data, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	ev := events.Event{
		ID: "op:" + uuid.NewString(), Source: source, Type: events.TypeOperator, Time: time.Now().UTC(),
		DataContentType: events.ContentTypeJSON, Data: data, TaskID: a.TaskID, Attempt: a.Attempt,
	}
	ev.Subject = a.TaskID
	if ev.Subject == "" {
		ev.Subject = a.Queue
	}
	ack, err := b.Publish(ctx, events.OperatorSubject(a.Queue), "", &ev)
	if err != nil {
		return 0, fmt.Errorf("recording the %s in the log: %w", a.Action, err)
	}
	return ack.Sequence, nil
}
