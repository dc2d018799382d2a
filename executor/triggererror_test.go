package executor_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// A task that returns PluginError fires task_executor_run_task_trigger_error
// (QTASKS-SPEC §2.6 E): a plugin that patches /result decides the task's
// result; with no plugin, or none that patches, the task fails with the
// reason.
func TestTaskPluginTriggerError(t *testing.T) {
	t.Parallel()

	type triggerErrorPayload struct {
		Reason string         `json:"reason"`
		Kw     map[string]int `json:"kw"`
	}
	setup := func(t *testing.T, answer func() (*plugins.Patch, error)) (*executor.App, func() events.Task, <-chan triggerErrorPayload) {
		t.Helper()
		b := bustest.Open(t, nil)
		app := newApp(t, b, nil)
		executor.MustRegister(app, "helpme", func(ctx context.Context, _ struct{}) (int, error) {
			return 0, executor.PluginError(ctx, "need help", map[string]any{"k": 1})
		}, nil)
		seen := make(chan triggerErrorPayload, 1)
		if answer != nil {
			startPlugin(t, b, plugins.Spec{
				Name: "helper", Version: "1", Triggers: []string{events.TaskExecutorRunTaskTriggerError},
				Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
					var p triggerErrorPayload
					if err := c.Decode(&p); err != nil {
						return nil, err
					}
					seen <- p
					return answer()
				}),
			})
		}
		start(t, app)
		run := func() events.Task {
			sub := submit(t, app, "helpme", nil, nil)
			return waitTask(t, app, sub.ID)
		}
		return app, run, seen
	}

	t.Run("Handled", func(t *testing.T) {
		t.Parallel()
		app, run, seen := setup(t, func() (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"result": 42})
		})
		got := run()
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		n, err := executor.Result[int](got)
		require.NoError(t, err)
		require.Equal(t, 42, n)
		require.Equal(t, triggerErrorPayload{Reason: "need help", Kw: map[string]int{"k": 1}}, recv(t, seen, "the plugin's call"))

		b := app.Bus()
		fact := oneFact(t, b, events.TaskExecutorRunTaskTriggerError, got.ID)
		require.Empty(t, fact.Failed)
		require.Len(t, fact.Calls, 1)
		require.Equal(t, events.OutcomeApplied, fact.Calls[0].Outcome)
		require.JSONEq(t, `42`, string(readJSON(t, fact.Output, "result")))

		// Execution goes on as after a normal return: no run_task, then
		// after_execute, result_replace, after-middlewares, decode, close.
		w := workerTriggers(t, b, got.ID)
		require.NotContains(t, w, events.TaskExecutorRunTask)
		i := slices.Index(w, events.TaskExecutorRunTaskTriggerError)
		require.Positive(t, i, "trigger error fact in %v", w)
		require.Equal(t, []string{
			events.TaskExecutorRunTaskTriggerError, events.TaskExecutorAfterExecute, events.TaskExecutorAfterExecuteResultReplace,
			events.TaskExecutorMiddlewaresExecute, events.TaskExecutorDecode, events.TaskExecutorTaskClose,
		}, w[i:i+6])
		require.JSONEq(t, `{"result":42}`, string(oneFact(t, b, events.TaskExecutorDecode, got.ID).Input))
		closeIn := oneFact(t, b, events.TaskExecutorTaskClose, got.ID).Input
		require.Equal(t, events.StatusSuccess, readString(t, closeIn, "status"))
		final := finalModels(t, b, got.ID, 1)[0]
		require.Equal(t, events.StatusSuccess, final.Status)
		require.JSONEq(t, `42`, string(final.Result))
	})

	unhandled := func(t *testing.T, app *executor.App, got events.Task) {
		t.Helper()
		require.Equal(t, events.StatusError, got.Status)
		require.Equal(t, "need help", got.Error)
		require.Contains(t, got.Reason, events.TaskExecutorRunTaskTriggerError)
		_, err := executor.Result[int](got)
		var te *executor.TaskError
		require.ErrorAs(t, err, &te)
		require.Equal(t, "need help", te.Message)

		b := app.Bus()
		final := finalModels(t, b, got.ID, 1)[0]
		require.Equal(t, events.StatusError, final.Status)
		require.Equal(t, "need help", final.Error)
		require.Equal(t, got.Reason, final.Reason)
		require.Empty(t, final.Result)
		w := workerTriggers(t, b, got.ID)
		require.Contains(t, w, events.TaskExecutorRunTaskTriggerError)
		require.NotContains(t, w, events.TaskExecutorAfterExecute)
		require.NotContains(t, w, events.TaskExecutorDecode)
		closeIn := oneFact(t, b, events.TaskExecutorTaskClose, got.ID).Input
		require.Equal(t, events.StatusError, readString(t, closeIn, "status"))
	}

	t.Run("NoPlugin", func(t *testing.T) {
		t.Parallel()
		app, run, _ := setup(t, nil)
		got := run()
		unhandled(t, app, got)
		fact := oneFact(t, app.Bus(), events.TaskExecutorRunTaskTriggerError, got.ID)
		require.Empty(t, fact.Calls)
		require.JSONEq(t, `{"reason":"need help","kw":{"k":1},"result":null}`, string(fact.Input))
	})

	t.Run("PluginDeclines", func(t *testing.T) {
		t.Parallel()
		app, run, seen := setup(t, func() (*plugins.Patch, error) { return nil, nil }) //nolint:nilnil // no patch: the Plugin contract's "no change"
		got := run()
		recv(t, seen, "the plugin's call")
		unhandled(t, app, got)
		fact := oneFact(t, app.Bus(), events.TaskExecutorRunTaskTriggerError, got.ID)
		require.Len(t, fact.Calls, 1)
		require.Equal(t, events.OutcomeNoChange, fact.Calls[0].Outcome)
	})
}

// readJSON returns the member key of the JSON object doc.
func readJSON(t *testing.T, doc json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc, &m), "%s", doc)
	v, ok := m[key]
	require.True(t, ok, "no %q in %s", key, doc)
	return v
}

// readString returns the string member key of the JSON object doc.
func readString(t *testing.T, doc json.RawMessage, key string) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(readJSON(t, doc, key), &s))
	return s
}
