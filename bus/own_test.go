package bus_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// The executor's own deduplicated events are checked against what a
// duplicate ack points at. A genuine repeat is a duplicate; a message on
// another subject holding the id (a plugin may publish any id on its own
// subjects) is a forgery: an alert is recorded and the event is written
// anyway. A dead letter of a dead letter is never written.
func TestPublishOwn(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.Open(t, nil)
	dl := events.DeadLetter{Stream: bus.StreamTasks, Sequence: 7, Subject: events.RunSubject("default"), Reason: "bad"}
	id := "dead:executor:" + bus.StreamTasks + ":7"

	// A forger takes the id of the executor's next dead letter.
	forged := events.Event{
		ID: id, Source: "qtasks/plugin/mallory", Type: events.TypeDeadLetter, Plugin: "mallory",
		Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: []byte(`{"reason":"nothing to see"}`),
	}
	fack, err := b.Publish(ctx, events.DeadSubject("mallory"), id, &forged)
	require.NoError(t, err)

	require.NoError(t, b.DeadLetter(ctx, "executor", "qtasks/node-1", dl))
	own := bustest.Events(t, b, events.DeadSubject("executor"))
	require.Len(t, own, 1, "the executor's dead letter is written despite the forgery")
	var got events.DeadLetter
	require.NoError(t, json.Unmarshal(own[0].Event.Data, &got))
	require.Equal(t, dl, got)
	require.Equal(t, uint64(1), b.Forgeries())
	alerts := bustest.Events(t, b, events.AlertSubject("node-1"))
	require.Len(t, alerts, 1)
	require.Equal(t, events.TypeAlert, alerts[0].Event.Type)
	require.NoError(t, alerts[0].Err)
	var a events.Alert
	require.NoError(t, json.Unmarshal(alerts[0].Event.Data, &a))
	require.Equal(t, events.Alert{
		Kind: events.AlertForgedMsgID, Stream: bus.StreamEvents, Sequence: fack.Sequence,
		Subject: events.DeadSubject("mallory"), MsgID: id, Want: events.DeadSubject("executor"), Reason: a.Reason,
	}, a)

	// A genuine repeat of an event of its own is a duplicate, no forgery.
	dl2 := dl
	dl2.Sequence = 8
	require.NoError(t, b.DeadLetter(ctx, "executor", "qtasks/node-1", dl2))
	require.NoError(t, b.DeadLetter(ctx, "executor", "qtasks/node-1", dl2))
	require.Len(t, bustest.Events(t, b, events.DeadSubject("executor")), 2)
	require.Equal(t, uint64(1), b.Forgeries())

	// A dead letter is never dead-lettered.
	require.NoError(t, b.DeadLetter(ctx, "sink", "qtasks/bus", events.DeadLetter{
		Stream: bus.StreamEvents, Sequence: own[0].Seq, Subject: events.DeadSubject("executor"), Reason: "never acked",
	}))
	require.Empty(t, bustest.Events(t, b, events.DeadSubject("sink")))
}
