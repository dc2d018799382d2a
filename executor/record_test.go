package executor_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// What the README says of the record, checked: the intake triggers' patches
// change the task (its priority and arguments on broker_add_worker, its
// extra on worker_execute_before and storage_update) and the final record
// keeps them; task_executor_args_replace changes only the call.
func TestRecordKeepsIntakeChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	type seen struct {
		Kw    map[string]any
		Extra map[string]json.RawMessage
	}
	got := make(chan seen, 1)
	executor.MustRegister(app, "look", func(ctx context.Context, kw map[string]any) (int, error) {
		got <- seen{kw, executor.TaskFromContext(ctx).Extra}
		return 1, nil
	}, nil)
	patches := map[string]map[string]any{
		events.BrokerAddWorker:         {"priority": 7, "kw": map[string]any{"intake": 1}},
		events.WorkerExecuteBefore:     {"model": map[string]any{"extra": map[string]any{"a": "x"}}},
		events.StorageUpdate:           {"kw": map[string]any{"mapping": map[string]any{"extra": map[string]any{"b": "y"}}}},
		events.TaskExecutorArgsReplace: {"kw": map[string]any{"call_only": 1}},
	}
	triggers := make([]string, 0, len(patches))
	for trig := range patches {
		triggers = append(triggers, trig)
	}
	r, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "changer", Version: "1", Triggers: triggers,
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(patches[c.Trigger])
		}),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	start(t, app)

	task := submit(t, app, "look", map[string]any{"submitted": 1}, nil)
	final := waitTask(t, app, task.ID)
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)

	in := recv(t, got, "the task's call")
	require.Equal(t, map[string]any{"submitted": 1.0, "intake": 1.0, "call_only": 1.0}, in.Kw)
	require.JSONEq(t, `"x"`, string(in.Extra["a"]), "worker_execute_before's change reaches the task")
	require.JSONEq(t, `"y"`, string(in.Extra["b"]), "storage_update's change reaches the task")

	for _, rec := range []events.Task{final, finalModels(t, b, task.ID, 1)[0]} {
		require.Equal(t, 7, rec.Priority, "broker_add_worker's priority is in the final record")
		require.JSONEq(t, `{"submitted":1,"intake":1}`, string(rec.Kw), "intake changes kept, the call's own not")
		require.JSONEq(t, `"x"`, string(rec.Extra["a"]))
		require.JSONEq(t, `"y"`, string(rec.Extra["b"]))
	}
}
