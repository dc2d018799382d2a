package projections_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// TestProjectSchedulesAndDelays: the projection shows a delayed task
// waiting with its due time (delayed_tasks), and a schedule's events (who
// added and paused it, each tick with its task), live and rebuilt alike.
func TestProjectSchedulesAndDelays(t *testing.T) {
	b := bustest.Open(t, nil)
	app := newApp(t, b)
	ctx := ctxFor(t)
	// No worker: the delayed task stays new.
	due := time.Now().Add(time.Hour).UTC()
	sub, err := app.Submit(ctx, "later", nil, &executor.SubmitOptions{RunAt: due})
	require.NoError(t, err)
	_, err = app.AddSchedule(ctx, events.Schedule{Name: "tick", Task: "later", EveryMS: 1000}, executor.Action{By: "alice", Reason: "demo"})
	require.NoError(t, err)
	s := executor.NewScheduler(app)
	require.NoError(t, s.Start(ctx))
	bustest.WaitFor(t, waitLimit, "a tick", func() bool {
		for _, e := range bustest.Events(t, b, events.ScheduleSubject("tick")) {
			if e.Event.TaskID != "" {
				return true
			}
		}
		return false
	})
	require.NoError(t, s.Stop(ctx))
	_, err = app.PauseSchedule(ctx, "tick", executor.Action{By: "bob"})
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	end := logEnd(t, b)
	bustest.WaitFor(t, waitLimit, "the projector to catch up", func() bool { return p.LastSeq() >= end })
	live := openDB(t, path, true)

	delayed, err := live.DelayedTasks(ctx, 0)
	require.NoError(t, err)
	require.Len(t, delayed, 1)
	require.Equal(t, sub.ID, delayed[0].ID)
	require.Equal(t, events.StatusNew, delayed[0].Status)
	require.True(t, due.Equal(delayed[0].DueAt), "due %v, projected %v", due, delayed[0].DueAt)

	evs, err := live.ScheduleEvents(ctx, "tick", 0, 0)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(evs), 3)
	require.Equal(t, events.ScheduleAdd, evs[0].Action)
	require.Equal(t, "alice", evs[0].By)
	require.Equal(t, "demo", evs[0].Reason)
	require.JSONEq(t, `{"name":"tick","task":"later","every_ms":1000,"catch_up":"skip"}`, string(evs[0].Spec))
	require.Equal(t, events.ScheduleTick, evs[1].Action)
	require.Equal(t, executor.KeyTaskID(events.ScheduleTickKey("tick", evs[1].Tick)), evs[1].TaskID)
	last := evs[len(evs)-1]
	require.Equal(t, events.SchedulePause, last.Action)
	require.Equal(t, "bob", last.By)

	requireEqual(t, live, build(t, b, 0))
}
