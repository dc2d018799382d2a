package replay_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/qtesting"
	"github.com/qtasks/qtasks-go/plugins/replay"
)

// The invocations of tasks run under test are left out of replays unless
// Filter.IncludeTesting: whether the mark came from the submitter or from
// the testing plugin, and whether the invocation's payload carries the task
// record (broker_add_before) or not (task_executor_args_replace).
func TestFilterLeavesOutTasksUnderTest(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	b := bustest.Open(t, nil)
	mark, err := qtesting.New(qtesting.Config{TaskNames: []string{"fixture"}})
	require.NoError(t, err)
	marker, err := plugins.Local(ctx, b, mark.Spec())
	require.NoError(t, err)
	t.Cleanup(func() { _ = marker.Stop(context.Background()) })
	stamp, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "stamp", Version: "1",
		Triggers: []string{events.BrokerAddBefore, events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stamp.Stop(context.Background()) })

	app, err := executor.New(b, nil)
	require.NoError(t, err)
	for _, name := range []string{"work", "fixture"} {
		executor.MustRegister(app, name, func(context.Context, struct{}) (int, error) { return 1, nil }, nil)
	}
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.Background()) })

	prod := []string{}
	under := map[string]bool{}
	submit := func(name string, opts *executor.SubmitOptions) string {
		sub, err := app.Submit(ctx, name, nil, opts)
		require.NoError(t, err)
		final, err := app.Wait(ctx, sub.ID)
		require.NoError(t, err)
		require.Equal(t, events.StatusSuccess, final.Status)
		return sub.ID
	}
	prod = append(prod, submit("work", nil), submit("work", nil))
	under[submit("work", &executor.SubmitOptions{Extra: qtesting.Extra()})] = true // marked by its submitter
	under[submit("fixture", nil)] = true                                           // marked by the plugin

	read := func(f replay.Filter) (ids []string) {
		t.Helper()
		require.NoError(t, replay.Read(ctx, b, "stamp", f, func(r replay.Record) error {
			ids = append(ids, r.Invocation.TaskID)
			return nil
		}))
		return ids
	}
	twice := func(ids []string) []string {
		var out []string
		for _, id := range ids {
			out = append(out, id, id) // broker_add_before, then task_executor_args_replace
		}
		return out
	}
	require.Equal(t, twice(prod), read(replay.Filter{}), "tasks under test are left out by default")
	all := read(replay.Filter{IncludeTesting: true})
	require.Len(t, all, 8)
	for _, id := range all[4:] {
		require.True(t, under[id])
	}
	// With Since or TaskIDs, tasks are looked up one by one instead of by
	// one scan of the log: same answer.
	require.Equal(t, twice(prod), read(replay.Filter{Since: time.Now().Add(-time.Hour)}))
	require.Equal(t, twice(prod), read(replay.Filter{TaskIDs: all}))
	require.Equal(t, twice(prod)[2:], read(replay.Filter{Last: 2}), "Last counts what the filter keeps")
	require.Len(t, read(replay.Filter{Last: 2, IncludeTesting: true}), 2)

	var buf bytes.Buffer
	n, err := replay.Export(ctx, b, &buf, "stamp", replay.Filter{})
	require.NoError(t, err)
	require.Equal(t, 4, n, "an export leaves them out too")
	for id := range under {
		require.NotContains(t, buf.String(), id)
	}
}
