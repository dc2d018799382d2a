package executor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

type xy struct {
	X int `json:"x"`
	Y int `json:"y"`
}

// Plugin A (named for task_executor_args_replace) adds x=1; plugin B
// (global) sees x=1 and adds y=x+1; the task function receives both.
func TestChaining(t *testing.T) {
	t.Parallel()
	for _, local := range []bool{false, true} {
		t.Run(map[bool]string{false: "Consumers", true: "Local"}[local], func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, nil)
			app := newApp(t, b, nil)
			got := make(chan xy, 1)
			executor.MustRegister(app, "sum", func(_ context.Context, in xy) (int, error) {
				got <- in
				return in.X + in.Y, nil
			}, nil)
			ctx := context.Background()
			run := plugins.Start
			if local {
				run = plugins.Local
			}
			a, err := run(ctx, b, plugins.Spec{
				Name: "a", Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
				Plugin: plugins.Func(func(_ context.Context, _ *plugins.Call) (*plugins.Patch, error) {
					return plugins.MergePatch(map[string]any{"kw": map[string]any{"x": 1}})
				}),
			})
			require.NoError(t, err)
			t.Cleanup(func() { _ = a.Stop(ctx) })
			// B is global: it must be asked only on returnable triggers, and it
			// changes only args_replace.
			bp, err := run(ctx, b, plugins.Spec{
				Name: "b", Version: "1",
				Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
					if c.Trigger != events.TaskExecutorArgsReplace {
						return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
					}
					var p struct {
						Kw map[string]int `json:"kw"`
					}
					if err := c.Decode(&p); err != nil {
						return nil, err
					}
					return plugins.JSONPatch(plugins.Op{Op: "add", Path: "/kw/y", Value: p.Kw["x"] + 1})
				}),
			})
			require.NoError(t, err)
			t.Cleanup(func() { _ = bp.Stop(ctx) })
			require.Equal(t, []string{"a", "b"}, names(b.Registry().Chain(events.TaskExecutorArgsReplace)))
			start(t, app)

			sub, err := app.Submit(ctx, "sum", map[string]any{}, nil)
			require.NoError(t, err)
			final := waitTask(t, app, sub.ID)
			require.Equal(t, events.StatusSuccess, final.Status, final.Error)
			select {
			case in := <-got:
				require.Equal(t, xy{X: 1, Y: 2}, in)
			case <-time.After(10 * time.Second):
				t.Fatal("task not called")
			}
			// The log holds both invocations and both patches of args_replace.
			inv := bustest.EventsOf(t, b, sub.ID, events.SubjectInvoke+".*."+events.TaskExecutorArgsReplace)
			pat := bustest.EventsOf(t, b, sub.ID, events.SubjectPatch+".*."+events.TaskExecutorArgsReplace)
			require.Len(t, inv, 2)
			require.Len(t, pat, 2)
			require.Equal(t, "a", inv[0].Event.Plugin)
			require.Equal(t, "b", inv[1].Event.Plugin)
			require.JSONEq(t, `{"args":[],"kw":{"x":1}}`, string(inv[1].Event.Data))
			require.Equal(t, inv[0].Event.ID, pat[0].Event.Invocation)
			require.Equal(t, events.ContentTypeJSONPatch, pat[1].Event.DataContentType)
			fact := oneFact(t, b, events.TaskExecutorArgsReplace, sub.ID)
			require.JSONEq(t, `{"args":[],"kw":{"x":1,"y":2}}`, string(fact.Output))
			require.Len(t, fact.Calls, 2)
			require.Equal(t, events.OutcomeApplied, fact.Calls[0].Outcome)
			require.Equal(t, events.OutcomeApplied, fact.Calls[1].Outcome)
		})
	}
}

func names(ps []events.PluginInfo) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}
