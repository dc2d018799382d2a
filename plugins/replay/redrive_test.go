package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/plugins/replay/internal/testplugin"
)

// scale multiplies the task's numeric result by factor on
// task_executor_run_task.
func scale(version string, factor int) plugins.Spec {
	return plugins.Spec{
		Name: "scale", Version: version, Triggers: []string{events.TaskExecutorRunTask},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var in struct {
				Result int `json:"result"`
			}
			if err := c.Decode(&in); err != nil {
				return nil, err
			}
			return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: in.Result * factor})
		}),
	}
}

// veto fails every odd result, under policy fail.
var veto = plugins.Spec{
	Name: "veto", Version: "1", Triggers: []string{events.TaskExecutorAfterExecuteResultReplace},
	Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
		var in struct {
			Result int `json:"result"`
		}
		if err := c.Decode(&in); err != nil {
			return nil, err
		}
		if in.Result%2 == 1 {
			return nil, errors.New("odd result")
		}
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	}),
}

// recordRuns runs tasks n = 1..count on a fresh live bus with the scale v1
// plugin (x2) in-process, and returns the bus, the task ids by n and the
// count of task function calls.
func recordRuns(t *testing.T, count int) (*bus.Bus, map[int]string, *atomic.Int64) {
	t.Helper()
	return recordRunsOn(t, count, nil)
}

// recordRunsOn is recordRuns on a bus opened with cfg.
func recordRunsOn(t *testing.T, count int, cfg *bus.Config) (*bus.Bus, map[int]string, *atomic.Int64) {
	t.Helper()
	ctx := ctxFor(t)
	b := bustest.Open(t, cfg)
	r, err := plugins.Local(ctx, b, scale("1", 2))
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	app, err := executor.New(b, nil)
	require.NoError(t, err)
	calls := &atomic.Int64{}
	require.NoError(t, executor.Register(app, "calc", func(_ context.Context, in calcIn) (int, error) {
		calls.Add(1)
		return in.N, nil
	}, nil))
	require.NoError(t, app.Start(ctx))
	ids := map[int]string{}
	for n := 1; n <= count; n++ {
		task, err := app.Submit(ctx, "calc", map[string]int{"n": n}, nil)
		require.NoError(t, err)
		ids[n] = task.ID
	}
	for n := 1; n <= count; n++ {
		task, err := app.Wait(ctx, ids[n])
		require.NoError(t, err)
		require.Equal(t, events.StatusSuccess, task.Status)
		got, err := executor.Result[int](task)
		require.NoError(t, err)
		require.Equal(t, 2*n, got)
	}
	require.NoError(t, app.Stop(ctx))
	require.EqualValues(t, count, calls.Load())
	return b, ids, calls
}

func readOnly(t *testing.T, b *bus.Bus) *bus.Bus {
	t.Helper()
	return bustest.Connect(t, b, &bus.Config{ReadOnly: true})
}

func result(t *testing.T, raw json.RawMessage) int {
	t.Helper()
	var n int
	require.NoError(t, json.Unmarshal(raw, &n), "%s", raw)
	return n
}

// Test 4: re-driving past runs through a changed chain shows the changed
// final outcome, and no task function runs.
func TestRedriveShowsChangedOutcome(t *testing.T) {
	t.Parallel()
	const count = 6
	b, ids, calls := recordRuns(t, count)
	ro := readOnly(t, b)
	before := snapshot(t, b)
	all := make([]string, 0, count)
	for n := 1; n <= count; n++ {
		all = append(all, ids[n])
	}
	ctx := ctxFor(t)

	// Today's chain with scale v2 (x3) in place of v1.
	v2 := scale("2", 3)
	rep, err := replay.Redrive(ctx, ro, replay.RedriveOptions{TaskIDs: all, Candidates: []replay.Candidate{{Spec: &v2}}})
	require.NoError(t, err)
	require.Equal(t, count, rep.Totals.Changed, rep.Totals)
	require.True(t, rep.Changed())
	require.True(t, rep.Changed())
	for i, run := range rep.Runs {
		n := i + 1
		require.Equal(t, ids[n], run.TaskID)
		require.Equal(t, "calc", run.TaskName)
		require.Equal(t, events.StatusSuccess, run.Recorded.Status)
		require.Equal(t, 2*n, result(t, run.Recorded.Result))
		require.Equal(t, events.StatusSuccess, run.Redriven.Status)
		require.Equal(t, 3*n, result(t, run.Redriven.Result), "the new factor, carried to the final record")
		var runTask *replay.TriggerResult
		for j := range run.Triggers {
			if run.Triggers[j].Trigger == events.TaskExecutorRunTask {
				runTask = &run.Triggers[j]
			}
		}
		require.NotNil(t, runTask)
		require.Equal(t, replay.Different, runTask.Status)
		require.Equal(t, []replay.CallResult{{Plugin: "scale", Version: "2", Source: replay.SourceCandidate, Outcome: events.OutcomeApplied}}, runTask.Calls)
		require.Equal(t, "/result", runTask.Diff[0].Path)
	}

	// A new plugin that vetoes odd results, beside the recorded scale v1.
	rep, err = replay.Redrive(ctx, ro, replay.RedriveOptions{TaskIDs: all, Candidates: []replay.Candidate{{Spec: &veto}}})
	require.NoError(t, err)
	for i, run := range rep.Runs {
		n := i + 1
		// scale v1 is played back from the recording: 2n is even.
		require.False(t, run.Changed, "n=%d: %+v", n, run.Redriven)
	}
	// With the candidates alone, scale is gone: the result is n, and odd
	// ones are vetoed.
	rep, err = replay.Redrive(ctx, ro, replay.RedriveOptions{TaskIDs: all, Only: true, Candidates: []replay.Candidate{{Spec: &veto}}})
	require.NoError(t, err)
	require.Equal(t, count, rep.Totals.Changed)
	for i, run := range rep.Runs {
		n := i + 1
		if n%2 == 1 {
			require.Equal(t, events.StatusError, run.Redriven.Status, "n=%d", n)
			require.Contains(t, run.Redriven.Reason, "plugin veto failed on task_executor_after_execute_result_replace (error): odd result")
			last := run.Triggers[len(run.Triggers)-1]
			require.Equal(t, replay.CandidateError, last.Status)
		} else {
			require.Equal(t, events.StatusSuccess, run.Redriven.Status)
			require.Equal(t, n, result(t, run.Redriven.Result))
		}
	}

	// Nothing changed: nothing to report.
	rep, err = replay.Redrive(ctx, ro, replay.RedriveOptions{TaskIDs: append(all, all[0])})
	require.NoError(t, err)
	require.Equal(t, count, rep.Totals.Runs, "duplicates are re-driven once")
	require.Equal(t, count, rep.Totals.Unchanged)
	require.False(t, rep.Changed())
	require.Contains(t, rep.Runs[0].Triggers[0].Calls[0].Source, replay.SourceRecorded)

	// An unknown task is reported missing.
	rep, err = replay.Redrive(ctx, ro, replay.RedriveOptions{TaskIDs: []string{"no-such-task"}})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Totals.Missing)
	require.Contains(t, rep.Runs[0].Error, "no facts")

	require.EqualValues(t, count, calls.Load(), "no task function ran again")
	require.Equal(t, before, snapshot(t, b), "the live server is unchanged")
}

// Re-driving through a candidate process: a changed argument shows in the
// firing's diff, but the recorded result stands, since the task function
// does not run again.
func TestRedriveWithProcessCandidate(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	before := snapshot(t, h.b)
	calls := h.calls.Load()
	var id7, id8 string
	for id, n := range h.n {
		switch n {
		case 7:
			id7 = id
		case 8:
			id8 = id
		}
	}
	c := candidate(t, "--version", "2")
	c.Name = testplugin.Name
	var seen []string
	rep, err := replay.Redrive(ctxFor(t), h.ro, replay.RedriveOptions{
		TaskIDs:    []string{id7, id8},
		Candidates: []replay.Candidate{c},
		Mask:       []string{"/kw/stamp"},
		OnRun:      func(r replay.RunReport) { seen = append(seen, r.TaskID) },
	})
	require.NoError(t, err)
	require.Equal(t, []string{id7, id8}, seen)
	require.Equal(t, 2, rep.Totals.Unchanged)
	require.Equal(t, 1, rep.Totals.TriggersDifferent)
	r7 := rep.Runs[0]
	require.Equal(t, 14, result(t, r7.Redriven.Result))
	require.Len(t, r7.Notes, 1)
	require.Contains(t, r7.Notes[0], "arguments changed at task_executor_args_replace")
	var args replay.TriggerResult
	for _, tr := range r7.Triggers {
		if tr.Trigger == testplugin.Trigger {
			args = tr
		}
	}
	require.Equal(t, replay.Different, args.Status)
	require.Equal(t, []replay.DiffOp{{Op: replay.OpReplace, Path: "/kw/double", Old: json.RawMessage("14"), Value: json.RawMessage("15")}}, args.Diff)
	require.Equal(t, replay.SourceCandidate, args.Calls[0].Source)
	require.Equal(t, "2", args.Calls[0].Version)
	for _, tr := range rep.Runs[1].Triggers {
		require.Equal(t, replay.Identical, tr.Status)
	}
	require.Contains(t, summary(t, rep), "task_executor_args_replace #0: different")
	require.Equal(t, calls, h.calls.Load())
	require.Equal(t, before, snapshot(t, h.b))
}

func summary(t *testing.T, r *replay.RedriveReport) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, r.WriteSummary(&b))
	require.NoError(t, r.WriteJSON(&b))
	return b.String()
}

// Test 5: a shadow plugin's patches are in the log and never applied; its
// divergence rate is computed, and kept running.
func TestShadowDivergenceRate(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	b := bustest.Open(t, nil)
	live, err := plugins.Local(ctx, b, testplugin.Spec(&testplugin.Plugin{Version: "1"}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = live.Stop(context.Background()) })
	shadow := testplugin.Spec(&testplugin.Plugin{Version: "2"})
	shadow.Name, shadow.Mode, shadow.ShadowOf = "stamp-v2", plugins.Shadow, testplugin.Name
	sr, err := plugins.Start(ctx, b, shadow)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sr.Stop(context.Background()) })

	app, err := executor.New(b, nil)
	require.NoError(t, err)
	require.NoError(t, executor.Register(app, "calc", func(_ context.Context, in calcIn) (int, error) {
		return in.Double, nil
	}, nil))
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.Background()) })
	runTasks := func(from, to int) {
		ids := map[int]string{}
		for n := from; n <= to; n++ {
			task, err := app.Submit(ctx, "calc", map[string]int{"n": n}, nil)
			require.NoError(t, err)
			ids[n] = task.ID
		}
		for n := from; n <= to; n++ {
			task, err := app.Wait(ctx, ids[n])
			require.NoError(t, err)
			got, err := executor.Result[int](task)
			require.NoError(t, err)
			require.Equal(t, 2*n, got, "n=%d: the live plugin's answer, never the shadow's", n)
		}
	}
	runTasks(1, 40)
	// Every shadow patch is in the log: stored before the facts of the
	// firing, which are stored before the task's final record.
	patches := func() int { return len(bustest.Events(t, b, events.SubjectPatch+".stamp-v2.>")) }
	require.Equal(t, 40, patches())

	tracker, err := replay.NewShadowTracker(readOnly(t, b), replay.ShadowOptions{Shadow: "stamp-v2", Mask: []string{"/kw/stamp"}})
	require.NoError(t, err)
	st, err := tracker.Update(ctx)
	require.NoError(t, err)
	require.Equal(t, testplugin.Name, st.ShadowOf)
	require.Equal(t, 40, st.Compared)
	require.Equal(t, 5, st.Different, "n = 7, 14, 21, 28, 35")
	require.Equal(t, 35, st.Identical)
	require.InDelta(t, 5.0/40, st.Rate, 1e-9)
	require.Equal(t, []string{"2"}, st.ShadowVersions)
	require.Equal(t, []string{"1"}, st.LiveVersions)
	require.Len(t, st.Samples, 5)
	require.Equal(t, "/kw/double", st.Samples[0].Diff[0].Path)

	// Running: the next update reads only the new facts.
	runTasks(41, 60)
	require.Equal(t, 60, patches())
	st, err = tracker.Update(ctx)
	require.NoError(t, err)
	require.Equal(t, 60, st.Compared)
	require.Equal(t, 8, st.Different, "and 42, 49, 56")
	require.Equal(t, st, tracker.Stats())

	// Without the mask, the stamps differ everywhere.
	st, err = replay.Shadow(ctx, b, replay.ShadowOptions{Shadow: "stamp-v2", ShadowOf: testplugin.Name, Since: time.Time{}})
	require.NoError(t, err)
	require.Equal(t, 60, st.Different)
	require.Contains(t, shadowSummary(t, &st), "divergence rate 1.0000")

	_, err = replay.Shadow(ctx, b, replay.ShadowOptions{Shadow: "nobody"})
	require.ErrorContains(t, err, "not registered as a shadow")
}

func shadowSummary(t *testing.T, s *replay.ShadowStats) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, s.WriteSummary(&b))
	require.NoError(t, s.WriteJSON(&b))
	return b.String()
}

// A task whose record has expired is still re-driven: its facts are read
// from the creation time RedriveOptions.CreatedAt gives (the projection's,
// in the CLI); a task with a record does not need it.
func TestRedriveExpiredRecord(t *testing.T) {
	t.Parallel()
	b, ids, _ := recordRuns(t, 2)
	ctx := ctxFor(t)
	rec, err := b.GetTask(ctx, ids[1])
	require.NoError(t, err)
	require.NoError(t, b.DeleteTask(ctx, ids[1], rec.Revision))
	var asked []string
	rep, err := replay.Redrive(ctx, readOnly(t, b), replay.RedriveOptions{
		TaskIDs: []string{ids[1], ids[2]},
		CreatedAt: func(_ context.Context, id string) (time.Time, bool) {
			asked = append(asked, id)
			return rec.Task.CreatedAt, true
		},
	})
	require.NoError(t, err)
	require.Equal(t, []string{ids[1]}, asked)
	require.Len(t, rep.Runs, 2)
	for i, run := range rep.Runs {
		require.Empty(t, run.Error, "task %d", i+1)
		require.Equal(t, events.StatusSuccess, run.Recorded.Status)
		require.False(t, run.Changed)
	}
}
