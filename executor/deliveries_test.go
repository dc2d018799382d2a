package executor_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A task whose runs never finish (here: every worker that takes it is
// stopped mid-run) is delivered at most MaxDeliveries times: the next
// delivery ends it in error, with a reason, without running it. Below the
// bound, an interrupted run is resumed as before (TestShutdown).
func TestDeliveryBound(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	var sub events.Task
	for i := range 2 {
		app := newApp(t, b, &executor.Config{GracePeriod: 100 * time.Millisecond, MaxDeliveries: 2})
		started := make(chan struct{})
		executor.MustRegister(app, "long", func(ctx context.Context, _ struct{}) (string, error) {
			close(started)
			<-ctx.Done()
			return "", context.Cause(ctx)
		}, nil)
		start(t, app)
		if i == 0 {
			sub = submit(t, app, "long", nil, nil)
		}
		recv(t, started, "the task to start")
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		require.NoError(t, app.Stop(ctx))
		cancel()
	}
	// Both runs were interrupted: delivery 3 is past the bound.
	reg := prometheus.NewRegistry()
	last := newApp(t, b, &executor.Config{MaxDeliveries: 2, Metrics: reg})
	var ran atomic.Bool
	executor.MustRegister(last, "long", func(context.Context, struct{}) (string, error) {
		ran.Store(true)
		return "ran", nil
	}, nil)
	start(t, last)
	got := waitTask(t, last, sub.ID)
	require.Equal(t, events.StatusError, got.Status)
	require.Equal(t, "deliveries exhausted", got.Reason)
	require.Contains(t, got.Error, "delivered 3 times, more than the limit of 2")
	require.Equal(t, 3, got.Run)
	require.False(t, ran.Load(), "a task past its bound is not run again")
	require.InDelta(t, 1.0, counter(t, reg, "qtasks_task_deliveries_exhausted_total"), 0)
	final := finalModels(t, b, sub.ID, 1)
	require.Len(t, final, 1)
	require.Equal(t, events.StatusError, final[0].Status)
	waitQueueEmpty(t, b)
	// Resumed once (run 2), then ended: no run 3 fired anything but the
	// final fact.
	require.Len(t, facts(t, b, events.BrokerRunningOlderTasks, sub.ID), 1)
}

// What can be checked at submission is: arguments and extra too large for
// the facts of a run are refused with ErrTooLarge, and nothing is stored
// or queued.
func TestSubmitPayloadLimit(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "echo", func(_ context.Context, in map[string]string) (string, error) { return in["s"], nil }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	big := strings.Repeat("x", events.MaxPayloadSize)
	for name, c := range map[string]struct {
		input any
		opts  *executor.SubmitOptions
	}{
		"Arguments": {map[string]string{"s": big}, nil},
		"Extra":     {nil, &executor.SubmitOptions{Extra: map[string]any{"note": big}}},
		"Together":  {map[string]string{"s": big[:events.MaxPayloadSize/2]}, &executor.SubmitOptions{Extra: map[string]any{"note": big[:events.MaxPayloadSize/2]}}},
	} {
		_, err := app.Submit(ctx, "echo", c.input, c.opts)
		require.ErrorIs(t, err, events.ErrTooLarge, name)
	}
	info, err := b.TaskStream().Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing queued")
	require.Empty(t, bustest.Events(t, b, events.SubjectTrigger+"."+events.StorageAdd+".>"), "nothing stored")
}
