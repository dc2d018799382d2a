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

// A task record left new with no task message (a submission whose enqueue
// failed and whose record could not be taken back, or a record created after
// its Submit gave up) never ran and never expired. The janitor ends it, with
// a final fact; a record whose task message is waiting is left alone.
func TestJanitorEndsTasksNeverQueued(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	now := time.Now().UTC()
	record := func(id string) events.Task {
		task := events.Task{
			ID: id, Name: "add", Queue: executor.DefaultQueue, Status: events.StatusNew, Attempt: 1,
			Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":1,"b":2}`), CreatedAt: now, UpdatedAt: now,
		}
		_, created, err := b.CreateTask(ctx, task)
		require.NoError(t, err)
		require.True(t, created)
		return task
	}
	// Queued, but not to run for an hour: its message waits in the queue.
	waiting := record("waiting")
	waiting.NotBefore = now.Add(time.Hour)
	require.NoError(t, b.Enqueue(ctx, waiting, "test"))
	orphan := record("orphan")

	app := newApp(t, b, &executor.Config{OrphanAge: 2 * time.Second})
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, app)
	got := waitTask(t, app, orphan.ID)
	require.Equal(t, events.StatusError, got.Status)
	require.Equal(t, executor.OrphanReason, got.Reason)
	require.Len(t, finalModels(t, b, orphan.ID, 1), 1, "the end is in the log")

	rec, err := b.GetTaskLatest(ctx, waiting.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusNew, rec.Task.Status, "a task whose message waits is no orphan")
}

// A KV create sent while the connection was down waited in the client's
// reconnect buffer and was stored after the reconnect, long after its
// Submit had failed: a record nobody would queue. The bus has no reconnect
// buffer: the write fails at once, and nothing is stored later.
func TestNoWriteOutlivesItsCaller(t *testing.T) {
	t.Parallel()
	srv := bustest.Open(t, nil)
	p := bustest.NewProxy(t, srv.ClientURL())
	b := bustest.Open(t, &bus.Config{URL: p.URL()})
	p.Refuse()
	p.Cut()
	bustest.WaitFor(t, waitLimit, "the connection to drop", func() bool { return !b.ConnStats().Connected })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, _, err := b.CreateTask(ctx, events.Task{ID: "late", Name: "add", Queue: executor.DefaultQueue, Status: events.StatusNew, Attempt: 1})
	cancel()
	require.Error(t, err)
	p.Accept()
	bustest.WaitFor(t, waitLimit, "the reconnection", func() bool { return b.ConnStats().Reconnects == 1 })
	ctx, cancel = context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.Conn().FlushWithContext(ctx))
	_, err = srv.GetTaskLatest(ctx, "late")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
}
