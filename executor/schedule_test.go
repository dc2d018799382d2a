package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// scheduleEvents returns the schedule events of name in the log, in order.
func scheduleEvents(t *testing.T, b *bus.Bus, name string) []events.ScheduleEvent {
	t.Helper()
	var out []events.ScheduleEvent
	for _, s := range bustest.Events(t, b, events.ScheduleSubject(name)) {
		require.NoError(t, s.Err)
		require.Equal(t, events.TypeSchedule, s.Event.Type)
		var e events.ScheduleEvent
		require.NoError(t, json.Unmarshal(s.Event.Data, &e))
		out = append(out, e)
	}
	return out
}

func startScheduler(t *testing.T, app *executor.App) {
	t.Helper()
	s := executor.NewScheduler(app)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		require.NoError(t, s.Stop(ctx))
	})
}

// TestScheduleOneTaskPerTick: three schedulers (three Apps, each on its
// own connection, as three qtasksd processes) fire a schedule of every
// second: each tick makes exactly one task, run once, and one tick event,
// and no tick is skipped while they run.
func TestScheduleOneTaskPerTick(t *testing.T) {
	b := bustest.Open(t, nil)
	var mu sync.Mutex
	runs := map[string]int{} // task id → calls
	var apps []*executor.App
	for i := range 3 {
		nb := b
		if i > 0 {
			nb = bustest.Connect(t, b, nil)
		}
		app := newApp(t, nb, nil)
		executor.MustRegister(app, "beat", func(ctx context.Context, in struct {
			N int `json:"n"`
		},
		) (int, error) {
			mu.Lock()
			runs[executor.TaskFromContext(ctx).ID]++
			mu.Unlock()
			return in.N, nil
		}, nil)
		start(t, app)
		apps = append(apps, app)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := apps[0].AddSchedule(ctx, events.Schedule{Name: "heartbeat", Task: "beat", Kw: json.RawMessage(`{"n":7}`), EveryMS: 1000},
		executor.Action{By: "test", Reason: "every second"})
	require.NoError(t, err)
	_, err = apps[1].AddSchedule(ctx, events.Schedule{Name: "heartbeat", Task: "beat", EveryMS: 1000}, executor.Action{By: "test"})
	require.ErrorIs(t, err, bus.ErrScheduleExists)
	for _, app := range apps {
		startScheduler(t, app)
	}

	const ticks = 4
	var evs []events.ScheduleEvent
	bustest.WaitFor(t, waitLimit, "four ticks", func() bool {
		evs = scheduleEvents(t, b, "heartbeat")
		n := 0
		for _, e := range evs {
			if e.Action == events.ScheduleTick {
				n++
			}
		}
		return n >= ticks
	})
	// Stop the ticks, then look at what they made.
	_, err = apps[2].PauseSchedule(ctx, "heartbeat", executor.Action{By: "test"})
	require.NoError(t, err)
	evs = scheduleEvents(t, b, "heartbeat")
	require.Equal(t, events.ScheduleAdd, evs[0].Action)
	require.Equal(t, "test", evs[0].By)
	require.Equal(t, events.SchedulePause, evs[len(evs)-1].Action)
	seen := map[time.Time]bool{}
	var tickTimes []time.Time
	for _, e := range evs {
		if e.Action != events.ScheduleTick {
			require.Contains(t, []string{events.ScheduleAdd, events.SchedulePause}, e.Action)
			continue
		}
		require.False(t, seen[e.Tick], "tick %v recorded twice", e.Tick)
		seen[e.Tick] = true
		tickTimes = append(tickTimes, e.Tick)
		require.Equal(t, executor.KeyTaskID(events.ScheduleTickKey("heartbeat", e.Tick)), e.TaskID)
		got := waitTask(t, apps[0], e.TaskID)
		require.Equal(t, events.StatusSuccess, got.Status)
		require.Contains(t, got.Tags, "schedule:heartbeat")
		n, err := executor.Result[int](got)
		require.NoError(t, err)
		require.Equal(t, 7, n)
	}
	require.GreaterOrEqual(t, len(tickTimes), ticks)
	for i := 1; i < len(tickTimes); i++ {
		require.Equal(t, time.Second, tickTimes[i].Sub(tickTimes[i-1]), "ticks %d and %d", i-1, i)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, runs, len(tickTimes), "one task per tick")
	for id, n := range runs {
		require.Equal(t, 1, n, "task %s ran %d times", id, n)
	}
}

// TestScheduleCatchUp: after downtime (no scheduler ran while five ticks
// passed), a scheduler fires what the catch-up policy asks and records the
// rest as missed: skip none, one the latest, all the latest CatchUpMax.
func TestScheduleCatchUp(t *testing.T) {
	for _, tc := range []struct {
		policy string
		max    int
		fired  []int // the ticks fired, in minutes after the start
	}{
		{events.CatchUpSkip, 0, nil},
		{events.CatchUpOne, 0, []int{5}},
		{events.CatchUpAll, 3, []int{3, 4, 5}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			b := bustest.Open(t, nil)
			var mu sync.Mutex
			t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
			now := t0
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			app := newApp(t, b, &executor.Config{Now: clock})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			_, err := app.AddSchedule(ctx, events.Schedule{
				Name: "nightly", Task: "report", EveryMS: time.Minute.Milliseconds(),
				CatchUp: tc.policy, CatchUpMax: tc.max,
			}, executor.Action{By: "test"})
			require.NoError(t, err)
			// Down for five ticks and a bit: the latest tick is late.
			mu.Lock()
			now = t0.Add(5*time.Minute + events.ScheduleLateness + time.Second)
			mu.Unlock()
			startScheduler(t, app)

			var evs []events.ScheduleEvent
			bustest.WaitFor(t, waitLimit, "the catch-up", func() bool {
				evs = scheduleEvents(t, b, "nightly")
				ticks, missed := 0, false
				for _, e := range evs {
					ticks += map[bool]int{true: 1}[e.Action == events.ScheduleTick]
					missed = missed || e.Action == events.ScheduleMissed
				}
				return ticks == len(tc.fired) && missed
			})
			var fired []int
			for _, e := range evs {
				switch e.Action {
				case events.ScheduleTick:
					fired = append(fired, int(e.Tick.Sub(t0)/time.Minute))
					_, err := app.Get(ctx, e.TaskID)
					require.NoError(t, err, "the tick's task")
				case events.ScheduleMissed:
					require.Equal(t, 5-len(tc.fired), e.Missed)
					require.Equal(t, t0.Add(5*time.Minute), e.Tick)
				}
			}
			require.Equal(t, tc.fired, fired)
			// No burst after the catch-up: the next tick is the sixth.
			st, err := app.Schedules(ctx)
			require.NoError(t, err)
			require.Len(t, st, 1)
			require.Equal(t, t0.Add(5*time.Minute), st[0].LastTick)
			require.Empty(t, st[0].Pending)
		})
	}
}

// TestScheduleTickRefused: a tick whose task a plugin refuses (policy fail
// on qtasks_add_task_before_broker) is recorded with the reason and is over:
// not retried, nothing left pending, and the next tick is fired as usual.
func TestScheduleTickRefused(t *testing.T) {
	b := bustest.Open(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "gate", Version: "1.0.0", Triggers: []string{events.QTasksAddTaskBeforeBroker},
		Plugin: plugins.Func(func(_ context.Context, _ *plugins.Call) (*plugins.Patch, error) {
			return nil, errors.New("closed for the holidays")
		}),
	})
	require.NoError(t, err)
	var mu sync.Mutex
	t0 := time.Date(2026, 12, 24, 10, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	app := newApp(t, b, &executor.Config{Now: clock})
	_, err = app.AddSchedule(ctx, events.Schedule{Name: "xmas", Task: "gift", EveryMS: time.Minute.Milliseconds()}, executor.Action{By: "test"})
	require.NoError(t, err)
	mu.Lock()
	now = t0.Add(time.Minute + time.Second)
	mu.Unlock()
	startScheduler(t, app)
	var evs []events.ScheduleEvent
	bustest.WaitFor(t, waitLimit, "the refused tick", func() bool {
		evs = scheduleEvents(t, b, "xmas")
		return len(evs) == 2
	})
	tick := evs[1]
	require.Equal(t, events.ScheduleTick, tick.Action)
	require.Equal(t, t0.Add(time.Minute), tick.Tick)
	require.Contains(t, tick.Error, "closed for the holidays")
	_, err = app.Get(ctx, tick.TaskID)
	require.ErrorIs(t, err, bus.ErrTaskNotFound, "no task for a refused tick")
	bustest.WaitFor(t, waitLimit, "nothing pending", func() bool {
		st, err := app.Schedules(ctx)
		require.NoError(t, err)
		return len(st) == 1 && len(st[0].Pending) == 0
	})
}

// TestSchedulePendingTickOfDeadClaimer: a scheduler that claimed a tick and
// died before submitting its task leaves it pending; another scheduler
// fires it once the grace period has passed: no leader to lose.
func TestSchedulePendingTickOfDeadClaimer(t *testing.T) {
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := app.AddSchedule(ctx, events.Schedule{Name: "hourly", Task: "report", EveryMS: time.Hour.Milliseconds()}, executor.Action{By: "test"})
	require.NoError(t, err)
	// What a claimer that died right after its claim leaves behind.
	tick := time.Now().Truncate(time.Hour).UTC()
	e, err := b.GetSchedule(ctx, "hourly")
	require.NoError(t, err)
	st := e.State
	st.LastTick, st.Pending = tick, []time.Time{tick}
	st.ClaimedBy, st.ClaimedAt = "dead-node", time.Now().Add(-time.Minute).UTC()
	_, err = b.UpdateSchedule(ctx, st, e.Revision)
	require.NoError(t, err)

	startScheduler(t, app)
	var evs []events.ScheduleEvent
	bustest.WaitFor(t, waitLimit, "the pending tick fired", func() bool {
		evs = scheduleEvents(t, b, "hourly")
		return len(evs) == 2
	})
	require.Equal(t, events.ScheduleTick, evs[1].Action)
	require.Equal(t, tick, evs[1].Tick)
	_, err = app.Get(ctx, evs[1].TaskID)
	require.NoError(t, err)
	bustest.WaitFor(t, waitLimit, "nothing pending", func() bool {
		e, err := b.GetSchedule(ctx, "hourly")
		require.NoError(t, err)
		return len(e.State.Pending) == 0
	})
}
