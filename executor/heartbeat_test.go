package executor_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A run longer than the ack wait is kept in progress (the worker's one
// heartbeat ticker covers the runs under way): its task message is not
// redelivered to the other worker of the queue, and the task runs once.
func TestLongRunIsNotRedelivered(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	var runs atomic.Int32
	apps := make([]*executor.App, 2)
	for i := range apps {
		apps[i] = newApp(t, b, &executor.Config{AckWait: time.Second})
		executor.MustRegister(apps[i], "long", func(ctx context.Context, _ struct{}) (string, error) {
			runs.Add(1)
			select {
			case <-time.After(3500 * time.Millisecond):
				return "done", nil
			case <-ctx.Done():
				return "", context.Cause(ctx)
			}
		}, nil)
		start(t, apps[i])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	task, err := apps[0].Submit(ctx, "long", struct{}{}, nil)
	require.NoError(t, err)
	got := waitTask(t, apps[0], task.ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.Equal(t, 1, got.Run, "one run")
	require.Equal(t, int32(1), runs.Load(), "the task function ran once")
}
