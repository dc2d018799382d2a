package executor_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

func TestShutdown(t *testing.T) {
	t.Parallel()

	// Stop lets a task in flight finish within the grace period, then
	// records worker_stop.
	t.Run("Graceful", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		app := newApp(t, b, &executor.Config{GracePeriod: waitLimit})
		started, release := make(chan struct{}), make(chan struct{})
		executor.MustRegister(app, "long", func(ctx context.Context, _ struct{}) (string, error) {
			close(started)
			select {
			case <-release:
				return "done", nil
			case <-ctx.Done():
				return "", context.Cause(ctx)
			}
		}, nil)
		start(t, app)
		sub := submit(t, app, "long", nil, nil)
		recv(t, started, "the task to start")

		stopped := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			stopped <- app.Stop(ctx)
		}()
		// Stop has begun (it has fired broker_stop) and waits for the task.
		bustest.WaitFor(t, waitLimit, "Stop to begin", func() bool {
			return len(facts(t, b, events.BrokerStop, app.NodeID())) > 0
		})
		select {
		case err := <-stopped:
			t.Fatalf("Stop returned (%v) while a task was in flight", err)
		default:
		}
		require.Empty(t, facts(t, b, events.WorkerStop, app.NodeID()))
		close(release)
		require.NoError(t, recv(t, stopped, "Stop to return"))

		got, err := app.Get(context.Background(), sub.ID)
		require.NoError(t, err)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.JSONEq(t, `"done"`, string(got.Result))
		// Stop returns once its facts are stored; the task's final fact
		// comes first.
		final := facts(t, b, events.StorageRemoveFinishedTask, sub.ID)
		require.Len(t, final, 1)
		stop := facts(t, b, events.WorkerStop, app.NodeID())
		require.Len(t, stop, 1)
		require.Greater(t, stop[0].Seq, final[0].Seq)
		for _, trig := range []string{events.StorageStop, events.GlobalConfigStop} {
			require.Len(t, facts(t, b, trig, app.NodeID()), 1, trig)
		}
		// Stop is idempotent.
		require.NoError(t, app.Stop(context.Background()))
	})

	// A task still running when the grace period ends is cancelled with
	// ErrStop and not decided: its message goes back to the queue, and the
	// next worker resumes it (broker_running_older_tasks).
	t.Run("GraceExpires", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		first := newApp(t, b, &executor.Config{GracePeriod: 200 * time.Millisecond})
		started := make(chan struct{})
		cause := make(chan error, 1)
		executor.MustRegister(first, "long", func(ctx context.Context, _ struct{}) (string, error) {
			close(started)
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return "", context.Cause(ctx)
		}, nil)
		start(t, first)
		sub := submit(t, first, "long", nil, nil)
		recv(t, started, "the task to start")
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		require.NoError(t, first.Stop(ctx))
		require.ErrorIs(t, recv(t, cause, "the task's context to end"), executor.ErrStop)
		got, err := first.Get(ctx, sub.ID)
		require.NoError(t, err)
		require.Equal(t, events.StatusProcess, got.Status, "an interrupted task is not decided")
		require.Empty(t, facts(t, b, events.StorageRemoveFinishedTask, sub.ID))

		reg := prometheus.NewRegistry()
		second := newApp(t, b, &executor.Config{Metrics: reg})
		executor.MustRegister(second, "long", func(_ context.Context, _ struct{}) (string, error) {
			return "resumed", nil
		}, nil)
		start(t, second)
		got = waitTask(t, second, sub.ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.JSONEq(t, `"resumed"`, string(got.Result))
		require.Equal(t, 1, got.Attempt)
		require.Equal(t, second.NodeID(), got.Worker)
		resumed := facts(t, b, events.BrokerRunningOlderTasks, sub.ID)
		require.Len(t, resumed, 1)
		require.Equal(t, 2, resumed[0].Event.Run)
		require.InDelta(t, 1.0, counter(t, reg, "qtasks_task_resumptions_total"), 0)
		require.Len(t, finalModels(t, b, sub.ID, 1), 1)
	})
}

// A worker whose slots are all taken (tasks running, tasks held) stops
// within its grace period: held tasks are handed back without being
// started, running ones are cancelled at the end of the grace period.
func TestShutdownSaturated(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	first := newApp(t, b, &executor.Config{Concurrency: 1, Prefetch: 1, GracePeriod: 200 * time.Millisecond})
	started := make(chan string, 2)
	executor.MustRegister(first, "long", func(ctx context.Context, _ struct{}) (string, error) {
		started <- executor.TaskFromContext(ctx).ID
		<-ctx.Done()
		return "", context.Cause(ctx)
	}, nil)
	start(t, first)
	running := submit(t, first, "long", nil, nil)
	require.Equal(t, running.ID, recv(t, started, "the first task to start"))
	held := submit(t, first, "long", nil, nil)
	held2 := submit(t, first, "long", nil, nil) // waits in the queue
	bustest.WaitFor(t, waitLimit, "the worker to hold a task", func() bool { return executor.Held(first) == 1 })

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		stopped <- first.Stop(ctx)
	}()
	require.NoError(t, recv(t, stopped, "Stop to return"))
	select {
	case id := <-started:
		t.Fatalf("task %s was started during shutdown", id)
	default:
	}

	second := newApp(t, b, nil)
	executor.MustRegister(second, "long", func(_ context.Context, _ struct{}) (string, error) {
		return "resumed", nil
	}, nil)
	start(t, second)
	for _, id := range []string{running.ID, held.ID, held2.ID} {
		got := waitTask(t, second, id)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.Equal(t, second.NodeID(), got.Worker)
	}
}
