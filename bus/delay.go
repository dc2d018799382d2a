package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Headers of JetStream message schedules (ADR-51).
const (
	headerSchedule       = "Nats-Schedule"
	headerScheduleTarget = "Nats-Schedule-Target"
)

// SchedulesDelays reports whether the task stream holds delayed tasks as
// scheduled messages: it does on nats-server 2.12 and later. On an older
// server a delayed task is queued at once, and the worker that receives it
// hands it back (a negative acknowledgement with the remaining delay)
// until it is due.
func (b *Bus) SchedulesDelays() bool {
	return b.tasks != nil && b.tasks.CachedInfo().Config.AllowMsgSchedules
}

// delayedMsg is t's task message scheduled for t.NotBefore on its delay
// subject, with the message id a direct enqueue would have had (a repeated
// enqueue of the attempt is dropped as before), and false when t is due too
// soon to be worth a schedule or the server has no message schedules;
// Enqueue (EnqueueAfter) and EnqueueAsync share it.
func (b *Bus) delayedMsg(t events.Task, msgID string, ev *events.Event) (*nats.Msg, bool) {
	if time.Until(t.NotBefore) < events.MinScheduleLead || !b.SchedulesDelays() {
		return nil, false
	}
	m := Message(events.DelaySubject(t.Queue, t.ID), msgID, ev)
	// RFC 3339 with the fraction: the server parses it so, and a due time
	// rounded down to the second would be early.
	m.Header.Set(headerSchedule, "@at "+t.NotBefore.UTC().Format(time.RFC3339Nano))
	m.Header.Set(headerScheduleTarget, events.RunSubject(t.Queue))
	return m, true
}

// Delayed reports whether task id of queue waits in the task stream as a
// scheduled message (its due time not reached).
func (b *Bus) Delayed(ctx context.Context, queue, id string) (bool, error) {
	if !events.ValidToken(queue) || !events.ValidToken(id) {
		return false, nil
	}
	_, err := b.tasks.GetLastMsgForSubject(ctx, events.DelaySubject(queue, id))
	switch {
	case err == nil:
		return true, nil
	case isNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("looking for delayed task %s: %w", id, err)
}

func isNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrMsgNotFound)
}
