package executor_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// TestDecidedAttempt covers a worker that died after its attempt's final
// fact was stored but before it updated the task record and acked the task
// message: the next delivery must take the logged decision, not run the
// task to a second final fact. Subjects carry no task ids, so the logged
// fact is found by reading the queue's final facts from the record's last
// update, or by the duplicate ack of a rerun's final fact.
func TestDecidedAttempt(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// status and age of the record the dead run left.
		status string
		age    time.Duration
		// msgID: the logged final fact carries its Nats-Msg-Id, so a
		// rerun's final fact is dropped as its duplicate.
		msgID bool
		// runs: how often the task function runs.
		runs int32
	}{
		// The run got as far as status process: the log is read.
		{name: "InProcess", status: events.StatusProcess, msgID: false, runs: 0},
		// It failed before status process (a plugin's veto at intake), long
		// enough ago that the duplicate window has passed: the log is read.
		{name: "BeforeProcessOutsideWindow", status: events.StatusNew, age: bus.DefaultDuplicateWindow + time.Minute, msgID: false, runs: 0},
		// Recently: the task runs again, and its final fact is dropped as a
		// duplicate of the logged one, which stands.
		{name: "BeforeProcessInsideWindow", status: events.StatusNew, msgID: true, runs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			b := bustest.Open(t, nil)
			app := newApp(t, b, nil)
			var runs atomic.Int32
			executor.MustRegister(app, "work", func(context.Context, struct{}) (string, error) {
				runs.Add(1)
				return "ran again", nil
			}, nil)
			sub := submit(t, app, "work", nil, nil)

			// The dead run: it took the message (delivery 1) ...
			cons, err := b.TaskConsumer(ctx, sub.Queue, 5*time.Second, -1)
			require.NoError(t, err)
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			require.NoError(t, err)
			var taken int
			for m := range batch.Messages() {
				taken++
				require.NoError(t, m.Nak()) // ... and is gone: redeliver at once
			}
			require.Equal(t, 1, taken)
			// ... wrote the record ...
			rec, err := b.GetTask(ctx, sub.ID)
			require.NoError(t, err)
			left := rec.Task
			left.Status, left.Worker, left.Run = tc.status, "dead-node", 1
			left.UpdatedAt = time.Now().UTC().Add(-tc.age)
			_, err = b.UpdateTask(ctx, left, rec.Revision)
			require.NoError(t, err)
			// ... and decided the attempt in the log.
			final := left
			final.Status, final.Result = events.StatusSuccess, json.RawMessage(`"logged"`)
			publishFinal(ctx, t, b, final, tc.msgID)

			start(t, app)
			got, err := app.Wait(ctx, sub.ID)
			require.NoError(t, err)
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.JSONEq(t, `"logged"`, string(got.Result), "the logged decision stands")
			require.Equal(t, tc.runs, runs.Load())
			require.Len(t, facts(t, b, events.StorageRemoveFinishedTask, sub.ID), 1, "one final fact per attempt")
			// The message is acked by the second delivery, not failed and
			// delivered again.
			bustest.WaitFor(t, waitLimit, "the task message to be acked", func() bool {
				info, err := cons.Info(ctx)
				return err == nil && info.NumPending == 0 && info.NumAckPending == 0
			})
			info, err := cons.Info(ctx)
			require.NoError(t, err)
			require.Equal(t, uint64(2), info.Delivered.Consumer, "deliveries")
		})
	}
}

// publishFinal writes the final fact of t's attempt as a worker does.
func publishFinal(ctx context.Context, t *testing.T, b *bus.Bus, final events.Task, withMsgID bool) {
	t.Helper()
	model, err := json.Marshal(map[string]any{"model": final})
	require.NoError(t, err)
	data, err := (&events.Fact{Input: model}).AppendJSON(nil)
	require.NoError(t, err)
	id := events.FinalMsgID(final.ID, final.Attempt)
	ev := events.Event{
		ID: id, Source: "qtasks/dead-node", Type: events.TypeTriggerPrefix + events.StorageRemoveFinishedTask,
		Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: data,
		Trigger: events.StorageRemoveFinishedTask, Attempt: final.Attempt, Run: 1,
		Subject: final.ID, TaskID: final.ID, TaskName: final.Name,
	}
	msgID := ""
	if withMsgID {
		msgID = id
	}
	_, err = b.Publish(ctx, events.FactSubject(events.StorageRemoveFinishedTask, final.Queue), msgID, &ev)
	require.NoError(t, err)
}
