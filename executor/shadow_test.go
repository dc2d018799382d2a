package executor_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// A shadow is asked alongside the plugin it shadows, not after it answers:
// the live plugin here answers only once its shadow has been invoked, well
// within its own timeout, so the chain is not held for the shadow's whole
// call on top of the plugin's. Asked only after the live plugin answered,
// the shadow would never be invoked in time, and the live call would time
// out.
func TestShadowAskedAlongsideItsPlugin(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	shadowAsked := make(chan struct{})
	var asked sync.Once
	startPlugin(t, b, plugins.Spec{
		Name: "live", Version: "1", Triggers: []string{events.TaskExecutorArgsReplace}, Timeout: 5 * time.Second,
		Plugin: plugins.Func(func(ctx context.Context, _ *plugins.Call) (*plugins.Patch, error) {
			select {
			case <-shadowAsked:
				return plugins.MergePatch(map[string]any{"kw": map[string]any{"b": 10}})
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}),
	})
	startPlugin(t, b, plugins.Spec{
		Name: "live-next", Version: "2", Mode: plugins.Shadow, ShadowOf: "live",
		Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			asked.Do(func() { close(shadowAsked) })
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"b": 20}})
		}),
	})
	start(t, app)

	task := submit(t, app, "add", addArgs{A: 1, B: 2}, nil)
	got := waitTask(t, app, task.ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.JSONEq(t, `11`, string(got.Result), "the live plugin's patch, not the shadow's")

	f := oneFact(t, b, events.TaskExecutorArgsReplace, task.ID)
	require.Len(t, f.Calls, 2)
	require.Equal(t, "live", f.Calls[0].Plugin)
	require.Equal(t, events.OutcomeApplied, f.Calls[0].Outcome, f.Calls[0].Reason)
	require.Equal(t, "live-next", f.Calls[1].Plugin)
	require.Equal(t, events.OutcomeShadow, f.Calls[1].Outcome)
	require.True(t, f.Calls[1].Shadow)
}
