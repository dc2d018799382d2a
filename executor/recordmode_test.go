package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// With recording reduced to the lifecycle facts and no plugins, most
// triggers are neither recorded nor sent to anyone: the task must still see
// and keep exactly what was submitted, and its result must come out as when
// every trigger is recorded.
func TestLifecycleRecording(t *testing.T) {
	t.Parallel()

	type seen struct {
		Args     []json.RawMessage          `json:"args"`
		Kw       map[string]json.RawMessage `json:"kw"`
		Priority int                        `json:"priority"`
		Extra    map[string]json.RawMessage `json:"extra"`
	}
	for _, mode := range []bus.RecordMode{bus.RecordLifecycle, bus.RecordAll} {
		t.Run(map[bus.RecordMode]string{bus.RecordLifecycle: "Lifecycle", bus.RecordAll: "All"}[mode], func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, &bus.Config{Record: mode})
			app := newApp(t, b, nil)
			executor.MustRegister(app, "echo", func(ctx context.Context, in executor.Input) (seen, error) {
				tc := executor.TaskFromContext(ctx)
				return seen{Args: in.Args, Kw: in.Kw, Priority: tc.Priority, Extra: tc.Extra}, nil
			}, &executor.TaskOptions{Tags: []string{"t1"}, Extra: map[string]any{"reg": "r"}})
			executor.MustRegister(app, "nothing", func(context.Context, struct{}) (*int, error) { return nil, nil }, nil) //nolint:nilnil // a nil result on purpose: the task's result is null
			executor.MustRegister(app, "spaced", func(context.Context, struct{}) (int, error) { return 1, nil },
				&executor.TaskOptions{MiddlewaresAfter: []executor.MiddlewareAfter{
					func(context.Context, *executor.TaskContext, json.RawMessage) (json.RawMessage, error) {
						return json.RawMessage(" [ 1 ,\n 2 ] "), nil
					},
				}})
			executor.MustRegister(app, "broken", func(context.Context, struct{}) (int, error) { return 1, nil },
				&executor.TaskOptions{MiddlewaresAfter: []executor.MiddlewareAfter{
					func(context.Context, *executor.TaskContext, json.RawMessage) (json.RawMessage, error) {
						return json.RawMessage("{not json"), nil
					},
				}})
			require.NoError(t, executor.RegisterSeq(app, "count", func(context.Context, struct{}) iter.Seq2[int, error] {
				return func(yield func(int, error) bool) {
					for i := range 3 {
						if !yield(i+1, nil) {
							return
						}
					}
				}
			}, nil))
			executor.MustRegister(app, "flaky", func(ctx context.Context, _ struct{}) (string, error) {
				if executor.TaskFromContext(ctx).Attempt == 1 {
					return "", errors.New("first attempt fails")
				}
				return "ok", nil
			}, &executor.TaskOptions{Retry: 1})
			start(t, app)

			prio := 4
			sub := submit(t, app, "echo", map[string]any{"k": "v"}, &executor.SubmitOptions{
				Args: []any{1, "two"}, Priority: &prio, Tags: []string{"t2"}, Extra: map[string]any{"sub": 1},
			})
			got := waitTask(t, app, sub.ID)
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.JSONEq(t, `{"args":[1,"two"],"kw":{"k":"v"},"priority":4,"extra":{"reg":"r","sub":1}}`, string(got.Result))
			require.JSONEq(t, `[1,"two"]`, string(got.Args))
			require.JSONEq(t, `{"k":"v"}`, string(got.Kw))
			require.Equal(t, 4, got.Priority)
			require.Equal(t, []string{"t1", "t2"}, got.Tags)
			require.Len(t, got.Extra, 2)
			// The final fact, recorded in every mode, holds the same record.
			final := finalModels(t, b, sub.ID, 1)[0]
			require.Equal(t, string(got.Result), string(final.Result))

			got = waitTask(t, app, submit(t, app, "nothing", nil, nil).ID)
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.Nil(t, got.Result, "a null result is no result")

			got = waitTask(t, app, submit(t, app, "spaced", nil, nil).ID)
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.Equal(t, `[1,2]`, string(got.Result), "compact, as if read back from a payload")

			got = waitTask(t, app, submit(t, app, "broken", nil, nil).ID)
			require.Equal(t, events.StatusError, got.Status)
			require.Contains(t, got.Error, "encoding payload of "+events.TaskExecutorDecode)

			got = waitTask(t, app, submit(t, app, "count", nil, nil).ID)
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.Equal(t, `[1,2,3]`, string(got.Result))

			sub = submit(t, app, "flaky", nil, nil)
			got = waitTask(t, app, sub.ID)
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.Equal(t, 2, got.Attempt)
			finals := finalModels(t, b, sub.ID, 2)
			require.Equal(t, events.StatusRetry, finals[0].Status)
			require.Equal(t, sub.ID+"#2", finals[0].RetryChild)

			if mode == bus.RecordLifecycle {
				client, worker := taskTriggers(t, b, sub.ID)
				for _, trig := range append(client, worker...) {
					tr, ok := events.Lookup(trig)
					require.True(t, ok, trig)
					require.True(t, tr.Lifecycle, "%s recorded in lifecycle mode", trig)
				}
			}
		})
	}
}

// With recording reduced to the lifecycle facts, a mutator's patch still
// reaches the task, and the firings it took part in are recorded.
func TestLifecycleRecordingPatched(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, &bus.Config{Record: bus.RecordLifecycle})
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	ctx := context.Background()
	for _, spec := range []plugins.Spec{
		{
			Name: "args", Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
			Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
				return plugins.MergePatch(map[string]any{"kw": map[string]any{"b": 10}})
			}),
		},
		{
			Name: "result", Version: "1", Triggers: []string{events.TaskExecutorAfterExecuteResultReplace},
			Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
				var p struct {
					Result int `json:"result"`
				}
				if err := c.Decode(&p); err != nil {
					return nil, err
				}
				return plugins.MergePatch(map[string]any{"result": p.Result * 100})
			}),
		},
		{
			Name: "quiet", Version: "1", Triggers: []string{events.WorkerRemoveFinishedTask},
			Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) { return nil, nil }), //nolint:nilnil // no patch: the Plugin contract's "no change"
		},
	} {
		r, err := plugins.Local(ctx, b, spec)
		require.NoError(t, err)
		t.Cleanup(func() { _ = r.Stop(context.Background()) })
	}
	start(t, app)

	got := waitTask(t, app, submit(t, app, "add", addArgs{A: 1, B: 2}, nil).ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.JSONEq(t, `1100`, string(got.Result), "(1+10)*100")
	require.JSONEq(t, `{"a":1,"b":2}`, string(got.Kw), "the record keeps the submitted kw")

	finalModels(t, b, got.ID, 1)
	fact := oneFact(t, b, events.TaskExecutorArgsReplace, got.ID)
	require.JSONEq(t, `{"args":[],"kw":{"a":1,"b":10}}`, string(fact.Output))
	fact = oneFact(t, b, events.WorkerRemoveFinishedTask, got.ID)
	require.Equal(t, events.OutcomeNoChange, fact.Calls[0].Outcome)
	require.Empty(t, facts(t, b, events.TaskExecutorRunTask, got.ID), "no plugin, not recorded")
}
