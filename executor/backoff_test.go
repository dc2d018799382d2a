package executor_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// flaky registers a task that fails until its third call, and returns the
// times of its calls.
func flaky(app *executor.App) func() []time.Time {
	var mu sync.Mutex
	var calls []time.Time
	executor.MustRegister(app, "flaky", func(_ context.Context, _ struct{}) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) < 3 {
			return "", errors.New("not yet")
		}
		return "ok", nil
	}, &executor.TaskOptions{Retry: 2})
	return func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), calls...)
	}
}

// TestDefaultRetryBackoff: with no plugin, the three attempts of a flaky
// task are spread by at least the default backoff's least delays
// (events.DefaultRetryBackoff.MinDelay), each attempt waits without a
// worker (one delivery each), and each final record says its delay.
func TestDefaultRetryBackoff(t *testing.T) {
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	calls := flaky(app)
	start(t, app)
	sub := submit(t, app, "flaky", nil, nil)
	got := waitTask(t, app, sub.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	require.Equal(t, 3, got.Attempt)
	c := calls()
	require.Len(t, c, 3)
	for n := 1; n <= 2; n++ {
		least := events.DefaultRetryBackoff.MinDelay(n)
		require.GreaterOrEqual(t, c[n].Sub(c[n-1]), least, "attempt %d started %v after attempt %d, want at least %v", n+1, c[n].Sub(c[n-1]), n, least)
	}
	models := finalModels(t, b, sub.ID, 3)
	for i, m := range models[:2] {
		n := i + 1
		require.Equal(t, events.StatusRetry, m.Status)
		d := time.Duration(m.DelayMS) * time.Millisecond
		require.GreaterOrEqual(t, d, events.DefaultRetryBackoff.MinDelay(n), "attempt %d's delay", n)
		require.LessOrEqual(t, d, events.DefaultRetryBackoff.Delay(n, 1), "attempt %d's delay", n)
	}
	require.Equal(t, 1, got.Run, "the last attempt was handed to a worker once: it waited in JetStream, not with a worker")
}

// TestRetryBackoffPluginOverrides: a plugin on worker_task_error_retry that
// sets model.delay_ms replaces the default backoff (here: no delay).
func TestRetryBackoffPluginOverrides(t *testing.T) {
	b := bustest.Open(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "no-backoff", Version: "1.0.0", Triggers: []string{events.WorkerTaskErrorRetry},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var in struct {
				Model events.Task `json:"model"`
			}
			if err := c.Decode(&in); err != nil {
				return nil, err
			}
			// The plugin sees the default in the payload.
			if in.Model.DelayMS < events.DefaultRetryBackoff.MinDelay(in.Model.Attempt).Milliseconds() {
				return nil, errors.New("no default delay in the payload")
			}
			return plugins.MergePatch(map[string]any{"model": map[string]any{"delay_ms": 0}})
		}),
	})
	require.NoError(t, err)
	app := newApp(t, b, nil)
	flaky(app)
	start(t, app)
	sub := submit(t, app, "flaky", nil, nil)
	got := waitTask(t, app, sub.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	for _, m := range finalModels(t, b, sub.ID, 3)[:2] {
		require.Equal(t, events.StatusRetry, m.Status)
		require.Zero(t, m.DelayMS, "the plugin's delay replaces the default")
	}
}
