package executor_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// The metrics count what the log says happened: a success, a retried
// failure, a task no worker registers, and a plugin that answers every
// invocation with no change.
func TestMetrics(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	reg := prometheus.NewRegistry()
	app := newApp(t, b, &executor.Config{Metrics: reg})
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	executor.MustRegister(app, "boom", func(context.Context, struct{}) (int, error) { return 0, errors.New("boom") },
		&executor.TaskOptions{Retry: 1})
	startPlugin(t, b, plugins.Spec{
		Name: "watcher", Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) { return nil, nil }), //nolint:nilnil // no patch: the Plugin contract's "no change"
	})
	start(t, app)

	ids := []string{
		submit(t, app, "add", addArgs{A: 1, B: 2}, nil).ID,
		submit(t, app, "boom", struct{}{}, nil).ID,
		submit(t, app, "ghost-"+t.Name(), struct{}{}, nil).ID, // a name nobody registers
	}
	require.Equal(t, events.StatusSuccess, waitTask(t, app, ids[0]).Status)
	require.Equal(t, events.StatusError, waitTask(t, app, ids[1]).Status) // after its retry
	require.Equal(t, events.StatusError, waitTask(t, app, ids[2]).Status)

	q := executor.DefaultQueue
	finished := func(task, status string) func() float64 {
		return func() float64 { return counter(t, reg, "qtasks_tasks_finished_total", q, task, status) }
	}
	// The final record is written before the counter moves: wait for it.
	for _, w := range []struct {
		name string
		got  func() float64
		want float64
	}{
		{"add success", finished("add", events.StatusSuccess), 1},
		{"boom retry", finished("boom", events.StatusRetry), 1},
		{"boom error", finished("boom", events.StatusError), 1},
		{"unregistered error", finished("(unregistered)", events.StatusError), 1},
		{"running back to 0", func() float64 { return gauge(t, reg, "qtasks_tasks_running") }, 0},
	} {
		bustest.WaitFor(t, waitLimit, w.name, func() bool { return w.got() == w.want })
	}
	require.InDelta(t, 1.0, counter(t, reg, "qtasks_tasks_submitted_total", q, "add"), 0)
	require.InDelta(t, 1.0, counter(t, reg, "qtasks_tasks_submitted_total", q, "boom"), 0)
	require.InDelta(t, 1.0, counter(t, reg, "qtasks_tasks_submitted_total", q, "(unregistered)"), 0,
		"a name the app does not register gets no label of its own")
	// add ran once, boom twice (the retry is its own attempt); the unknown
	// task never reached a function.
	require.Equal(t, uint64(3), histogramCount(t, reg, "qtasks_task_run_seconds"))
	// task_executor_args_replace fired for the three runs that reached the
	// executor: add, boom, boom#2.
	require.InDelta(t, 3.0, counter(t, reg, "qtasks_plugin_calls_total", "watcher", events.TaskExecutorArgsReplace, string(events.OutcomeNoChange)), 0)
	require.Equal(t, uint64(3), histogramCount(t, reg, "qtasks_plugin_call_seconds"))

	// A second app on the same registry would report the same series.
	_, err := executor.New(b, &executor.Config{Metrics: reg})
	require.Error(t, err)
}

// counter is the value of the counter name whose label values are values
// (in any order), 0 if there is none. Counts are whole numbers, exact in a
// float64: the tests compare them with InDelta's delta 0.
func counter(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, lp := range m.GetLabel() {
				got = append(got, lp.GetValue())
			}
			if slices.Equal(sorted(got), sorted(values)) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// histogramCount is the number of observations of histogram name, summed
// over its label values.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}
