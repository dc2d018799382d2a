package executor_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// The final record is written against the revision the run last wrote,
// without reading it first; when someone else wrote the record meanwhile,
// the run reads it again and decides from what it finds, in the same
// delivery.
func TestFinalRecordAfterConcurrentWrite(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	// touch rewrites the running task's record as it is: a newer revision
	// with the same content.
	executor.MustRegister(app, "touch", func(ctx context.Context, _ struct{}) (int, error) {
		rec, err := b.GetTask(ctx, executor.TaskFromContext(ctx).ID)
		if err != nil {
			return 0, err
		}
		_, err = b.UpdateTask(ctx, rec.Task, rec.Revision)
		return 1, err
	}, nil)
	// advance moves the record to a later attempt while this one runs:
	// the run's final record must not overwrite it.
	executor.MustRegister(app, "advance", func(ctx context.Context, _ struct{}) (int, error) {
		rec, err := b.GetTask(ctx, executor.TaskFromContext(ctx).ID)
		if err != nil {
			return 0, err
		}
		next := rec.Task
		next.Attempt, next.Status = next.Attempt+1, events.StatusNew
		_, err = b.UpdateTask(ctx, next, rec.Revision)
		return 2, err
	}, nil)
	start(t, app)

	got := waitTask(t, app, submit(t, app, "touch", nil, nil).ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.JSONEq(t, `1`, string(got.Result))

	sub := submit(t, app, "advance", nil, nil)
	final := finalModels(t, b, sub.ID, 1)[0]
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	waitQueueEmpty(t, b)
	rec, err := b.GetTask(context.Background(), sub.ID)
	require.NoError(t, err)
	require.Equal(t, 2, rec.Task.Attempt, "the later attempt's record stands")
	require.Equal(t, events.StatusNew, rec.Task.Status)

	// Each task message was delivered once: the conflicts were settled by
	// the run that met them, not by a redelivery.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cons, err := b.JetStream().Consumer(ctx, bus.StreamTasks, "workers-"+executor.DefaultQueue)
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.Delivered.Consumer)
}
