package executor_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// An observer that was not running while tasks ran receives, once started,
// every fact of its triggers for those tasks, in stream order.
func TestObserverCatchesUp(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) {
		return in.A + in.B, nil
	}, nil)
	start(t, app)

	const tasks = 5
	ids := map[string]bool{}
	for i := range tasks {
		sub := submit(t, app, "add", addArgs{A: i, B: 1}, nil)
		ids[sub.ID] = true
	}
	for id := range ids {
		require.Equal(t, events.StatusSuccess, waitTask(t, app, id).Status)
		finalModels(t, b, id, 1) // every fact of interest is stored
	}
	triggers := []string{events.TaskExecutorRunTask, events.StorageRemoveFinishedTask}
	var want []uint64
	for _, s := range bustest.Events(t, b, events.FactSubject(triggers[0], "*"), events.FactSubject(triggers[1], "*")) {
		want = append(want, s.Seq)
	}
	require.Len(t, want, 2*tasks)

	type seen struct {
		seq     uint64
		trigger string
		task    string
		status  string
	}
	var (
		mu    sync.Mutex
		calls []seen
		all   = make(chan struct{})
	)
	startPlugin(t, b, plugins.Spec{
		Name: "audit", Version: "1", Mode: plugins.Observer, Triggers: triggers,
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			s := seen{seq: c.Seq, trigger: c.Trigger, task: c.TaskID}
			if c.Trigger == events.StorageRemoveFinishedTask {
				var p struct {
					Model events.Task `json:"model"`
				}
				if err := c.Decode(&p); err != nil {
					return nil, err
				}
				s.status = p.Model.Status
			}
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, s)
			if len(calls) == len(want) {
				close(all)
			}
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})
	recv(t, all, "the observer to catch up")

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, calls, 2*tasks)
	perTask := map[string][]string{}
	for i, c := range calls {
		require.Equal(t, want[i], c.seq, "call %d", i)
		if i > 0 {
			require.Greater(t, c.seq, calls[i-1].seq)
		}
		require.True(t, ids[c.task], "call %d is for task %s", i, c.task)
		perTask[c.task] = append(perTask[c.task], c.trigger)
		if c.trigger == events.StorageRemoveFinishedTask {
			require.Equal(t, events.StatusSuccess, c.status)
		}
	}
	require.Len(t, perTask, tasks)
	for id, trs := range perTask {
		require.Equal(t, triggers, trs, "task %s", id)
	}
}
