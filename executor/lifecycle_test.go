package executor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

type addArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

func newApp(t *testing.T, b *bus.Bus, cfg *executor.Config) *executor.App {
	t.Helper()
	var c executor.Config
	if cfg != nil {
		c = *cfg
	}
	if c.AckWait == 0 {
		c.AckWait = 5 * time.Second
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = 5 * time.Second
	}
	app, err := executor.New(b, &c)
	require.NoError(t, err)
	return app
}

func start(t *testing.T, app *executor.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, app.Stop(ctx))
	})
}

func waitTask(t *testing.T, app *executor.App, id string) events.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := app.Wait(ctx, id)
	require.NoError(t, err)
	return got
}

// taskTriggers returns the trigger names of a task's facts in stream order:
// those of the client (run 0) and those of the workers (runs 1 and up). The
// two interleave, as in QTasks: a worker may take the task before the
// client has fired its after-broker triggers.
func taskTriggers(t *testing.T, b *bus.Bus, id string) (client, worker []string) {
	t.Helper()
	for _, s := range logFactsOf(t, b, id) {
		if s.Event.Run == 0 {
			client = append(client, s.Event.Trigger)
		} else {
			require.NotEmpty(t, client, "a worker fact before the task was stored")
			worker = append(worker, s.Event.Trigger)
		}
	}
	return client, worker
}

func TestTaskEndToEnd(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(ctx context.Context, in addArgs) (int, error) {
		require.NotNil(t, executor.TaskFromContext(ctx))
		return in.A + in.B, nil
	}, nil)
	start(t, app)

	ctx := context.Background()
	sub, err := app.Submit(ctx, "add", addArgs{A: 2, B: 3}, nil)
	require.NoError(t, err)
	got := waitTask(t, app, sub.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	n, err := executor.Result[int](got)
	require.NoError(t, err)
	require.Equal(t, 5, n)

	wantClient := []string{
		events.QTasksAddTaskBeforeBroker, events.BrokerAddBefore, events.StorageAdd, events.BrokerAddAfter, events.QTasksAddTaskAfterBroker,
	}
	want := []string{
		events.StorageAddProcess, events.StorageGet, events.BrokerGet, events.BrokerAddWorker, events.WorkerAdd,
		events.WorkerExecuteBefore, events.BrokerUpdate, events.StorageUpdate, events.WorkerRunTaskBefore,
		events.TaskExecutorMiddlewaresExecute, events.TaskExecutorArgsReplace, events.TaskExecutorBeforeExecute,
		events.TaskExecutorRunTask, events.TaskExecutorAfterExecute, events.TaskExecutorAfterExecuteResultReplace,
		events.TaskExecutorMiddlewaresExecute, events.TaskExecutorDecode, events.TaskExecutorTaskClose,
		events.WorkerRemoveFinishedTask, events.BrokerRemoveFinishedTask, events.StorageRemoveFinishedTask, events.WorkerExecuteAfter,
	}
	bustest.WaitFor(t, 10*time.Second, "all facts", func() bool {
		_, w := taskTriggers(t, b, sub.ID)
		return len(w) >= len(want)
	})
	client, worker := taskTriggers(t, b, sub.ID)
	require.Equal(t, wantClient, client)
	require.Equal(t, want, worker)
}
