package executor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// TestDelayedTaskAcrossRestart: a task submitted with RunIn waits in the
// task stream as a scheduled message (not on the run subject, held by no
// worker), survives a restart of the server and the app on the same data,
// and runs at its due time, not before and within events.DelayTolerance
// after.
func TestDelayedTaskAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() (*bus.Bus, *executor.App, <-chan time.Time) {
		b := bustest.Open(t, &bus.Config{DataDir: dir})
		app := newApp(t, b, nil)
		ran := make(chan time.Time, 4)
		executor.MustRegister(app, "later", func(_ context.Context, _ struct{}) (string, error) {
			ran <- time.Now()
			return "done", nil
		}, nil)
		return b, app, ran
	}
	b, app, _ := open() // stopped before it is due: the first app runs nothing
	require.True(t, b.SchedulesDelays(), "nats-server %s should have message schedules", "2.12+")
	start(t, app)
	const delay = 4 * time.Second
	sub := submit(t, app, "later", nil, &executor.SubmitOptions{RunIn: delay})
	due := sub.NotBefore
	require.WithinDuration(t, sub.CreatedAt.Add(delay), due, time.Millisecond)

	// The submission's facts say when it is due.
	var in struct {
		TaskStatus events.Task `json:"task_status"`
	}
	require.NoError(t, json.Unmarshal(oneFact(t, b, events.StorageAdd, sub.ID).Input, &in))
	require.True(t, due.Equal(in.TaskStatus.NotBefore), "storage_add's fact says due %v, want %v", in.TaskStatus.NotBefore, due)

	// It waits as a scheduled message, not on the run subject.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	delayed, err := b.Delayed(ctx, sub.Queue, sub.ID)
	require.NoError(t, err)
	require.True(t, delayed)
	queued, err := b.QueuedTaskIDs(ctx, sub.Queue)
	require.NoError(t, err)
	require.False(t, queued[sub.ID], "a delayed task must not be on the run subject before it is due")

	// Restart everything on the same data before it is due.
	require.NoError(t, app.Stop(ctx))
	b.Close()
	require.True(t, time.Now().Before(due), "the restart must happen before the task is due; the machine is too slow for this test")
	b, app, ran := open()
	start(t, app)

	at := recv(t, ran, "the delayed task to run")
	require.False(t, at.Before(due), "ran %v before its due time %v", due.Sub(at), due)
	require.Less(t, at.Sub(due), events.DelayTolerance, "ran %v after its due time", at.Sub(due))
	got := waitTask(t, app, sub.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	require.Equal(t, 1, got.Run, "one delivery: the worker was not handed the task before it was due")
	waitQueueEmpty(t, b)
}
