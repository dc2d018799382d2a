package state_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/state"
)

// visits is the state plugin visits: it counts the triggers it saw in state
// "visits" and names the last one in "stage"; at the end of an attempt it
// records the attempt's status in "ends".
func visits(t *testing.T, policy string, triggers ...string) plugins.Spec {
	t.Helper()
	spec, err := state.NewSpec(plugins.Spec{Name: "visits", Version: "1", Policy: policy, Triggers: triggers},
		func(_ context.Context, c *plugins.Call, s state.State) error {
			n, _, err := state.Get[int](s, "visits")
			if err != nil {
				return err
			}
			if err := s.Set("visits", n+1); err != nil {
				return err
			}
			if err := s.Set("stage", c.Trigger); err != nil {
				return err
			}
			if c.Trigger == events.WorkerRemoveFinishedTask {
				var p struct {
					Model events.Task `json:"model"`
				}
				if err := c.Decode(&p); err != nil {
					return err
				}
				ends, _, err := state.Get[[]string](s, "ends")
				if err != nil {
					return err
				}
				return s.Set("ends", append(ends, p.Model.Status))
			}
			return nil
		})
	require.NoError(t, err)
	return spec
}

// seen is what the task function reports of the state it was given.
type seen struct {
	Visits  int      `json:"visits"`
	Stage   string   `json:"stage"`
	Owner   string   `json:"owner"`
	Ends    []string `json:"ends"`
	Attempt int      `json:"attempt"`
	Run     int      `json:"run"`
}

// registerVisit registers task "visit", which returns the state it sees.
// With failFirst, its first attempt fails.
func registerVisit(t *testing.T, app *executor.App, opts *executor.TaskOptions, failFirst bool) {
	t.Helper()
	executor.MustRegister(app, "visit", func(ctx context.Context, _ struct{}) (seen, error) {
		s, err := state.FromExtra(executor.TaskFromContext(ctx).Extra)
		if err != nil {
			return seen{}, err
		}
		tc := executor.TaskFromContext(ctx)
		if failFirst && tc.Attempt == 1 {
			return seen{}, errors.New("first attempt fails")
		}
		var out seen
		raw, err := json.Marshal(s)
		if err != nil {
			return seen{}, err
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return seen{}, err
		}
		out.Attempt, out.Run = tc.Attempt, tc.Run
		return out, nil
	}, opts)
}

func stateOf(t *testing.T, task events.Task) state.State {
	t.Helper()
	s, err := state.FromTask(task)
	require.NoError(t, err)
	return s
}

// A plugin changes the task's state at submission, at intake and at the
// end; the task function sees what submission and intake made of it; the
// final record keeps the last change; every change is in the facts and in
// the projection's timeline. The plugin runs in the executor's process
// (Local), as durable consumers in the same process (Start), and on a
// connection of its own with a plugin's least rights, as another process
// would.
func TestStateSharedAcrossTriggers(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Local", "Start", "OtherProcess"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, nil)
			spec := visits(t, events.PolicyFail, events.StorageAdd, events.StorageGet, events.WorkerRemoveFinishedTask)
			switch how {
			case "Local":
				testkit.LocalPlugin(t, b, spec)
			case "Start":
				testkit.StartPlugin(t, b, spec)
			case "OtherProcess":
				pb := bustest.Connect(t, b, &bus.Config{Plugin: spec.Name})
				testkit.StartPlugin(t, pb, spec)
			}
			app := testkit.NewApp(t, b, true)
			registerVisit(t, app, nil, false)

			sub := testkit.Submit(t, app, "visit", nil, &executor.SubmitOptions{
				Extra: state.Initial(map[string]any{"visits": 10, "owner": "ada"}),
			})
			require.JSONEq(t, `{"visits":11,"stage":"storage_add","owner":"ada"}`, string(mustJSON(t, stateOf(t, sub))),
				"Submit returns the record as stored, state included")

			final := testkit.Wait(t, app, sub.ID)
			require.Equal(t, events.StatusSuccess, final.Status)
			got, err := executor.Result[seen](final)
			require.NoError(t, err)
			require.Equal(t, seen{Visits: 12, Stage: events.StorageGet, Owner: "ada", Attempt: 1, Run: 1}, got,
				"the task sees the state as submission and intake left it")
			require.JSONEq(t, `{"visits":13,"stage":"worker_remove_finished_task","owner":"ada","ends":["success"]}`,
				string(mustJSON(t, stateOf(t, final))))

			// The log: each change is a call of the plugin in the fact of its
			// trigger, with its patch, and the payload after it.
			testkit.WaitFinal(t, b, sub.ID, 1)
			for trigger, visits := range map[string]int{events.StorageAdd: 11, events.StorageGet: 12, events.WorkerRemoveFinishedTask: 13} {
				f := testkit.OneFact(t, b, trigger, sub.ID)
				c := testkit.CallOf(t, f, "visits")
				require.Equal(t, events.OutcomeApplied, c.Outcome, trigger)
				require.Equal(t, events.ContentTypeJSONPatch, c.ContentType)
				require.Contains(t, string(c.Patch), `/extra/state/visits","value":`+itoa(visits), trigger)
				s, err := state.Read(trigger, f.Output)
				require.NoError(t, err)
				n, _, err := state.Get[int](s, "visits")
				require.NoError(t, err)
				require.Equal(t, visits, n, trigger)
			}
			fin := testkit.OneFact(t, b, events.StorageRemoveFinishedTask, sub.ID)
			s, err := state.Read(events.StorageRemoveFinishedTask, fin.Input)
			require.NoError(t, err)
			require.JSONEq(t, `13`, string(s["visits"]), "the final fact carries the final state")

			// The timeline of the projection shows which key each call changed.
			tl, err := testkit.Projection(t, b).Timeline(testkit.Ctx(t), sub.ID)
			require.NoError(t, err)
			var changed []string
			for _, e := range tl.Entries {
				for _, c := range e.Calls {
					if c.Plugin != "visits" {
						continue
					}
					require.Equal(t, string(events.OutcomeApplied), c.Outcome)
					for _, ch := range c.Changes {
						changed = append(changed, e.Trigger+" "+ch.Path)
					}
				}
			}
			require.Contains(t, changed, "storage_add /task_status/extra/state/visits")
			require.Contains(t, changed, "storage_get /result/extra/state/stage")
			require.Contains(t, changed, "worker_remove_finished_task /model/extra/state/ends")
			require.JSONEq(t, `13`, string(mustJSON(t, extraState(t, tl.Task.Extra)["visits"])),
				"the projected task carries the state")
		})
	}
}

// The state is per task: two tasks never see each other's.
func TestStateIsPerTask(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	testkit.LocalPlugin(t, b, visits(t, events.PolicyFail, events.StorageGet))
	app := testkit.NewApp(t, b, true)
	registerVisit(t, app, nil, false)
	var ids []string
	for i := range 4 {
		sub := testkit.Submit(t, app, "visit", nil, &executor.SubmitOptions{
			Extra: state.Initial(map[string]any{"visits": i * 100}),
		})
		ids = append(ids, sub.ID)
	}
	for i, id := range ids {
		got, err := executor.Result[seen](testkit.Wait(t, app, id))
		require.NoError(t, err)
		require.Equal(t, i*100+1, got.Visits, "task %d", i)
	}
}

// The state goes on to the next attempt of a retried task.
func TestStateCarriedToNextAttempt(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	testkit.LocalPlugin(t, b, visits(t, events.PolicyFail, events.WorkerRemoveFinishedTask))
	app := testkit.NewApp(t, b, true)
	registerVisit(t, app, &executor.TaskOptions{Retry: 1}, true)

	sub := testkit.Submit(t, app, "visit", nil, nil)
	final := testkit.Wait(t, app, sub.ID)
	require.Equal(t, events.StatusSuccess, final.Status)
	require.Equal(t, 2, final.Attempt)
	got, err := executor.Result[seen](final)
	require.NoError(t, err)
	require.Equal(t, []string{events.StatusRetry}, got.Ends, "attempt 2 sees what the end of attempt 1 wrote")
	require.Equal(t, 1, got.Visits)
	require.JSONEq(t, `{"visits":2,"stage":"worker_remove_finished_task","ends":["retry","success"]}`,
		string(mustJSON(t, stateOf(t, final))))
	models := testkit.Facts(t, b, events.WorkerRemoveFinishedTask, sub.ID)
	require.Len(t, models, 2, "one end per attempt")
}

// A worker that goes away mid-task loses nothing: the state is in the task
// message, not in the worker, so the run that resumes the task on another
// worker starts from it (and sees its intake triggers again).
func TestStateSurvivesWorkerLoss(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	testkit.StartPlugin(t, b, visits(t, events.PolicyFail, events.StorageAdd, events.StorageGet))

	started := make(chan struct{})
	register := func(app *executor.App) {
		executor.MustRegister(app, "hold", func(ctx context.Context, _ struct{}) (seen, error) {
			tc := executor.TaskFromContext(ctx)
			s, err := state.FromExtra(executor.TaskFromContext(ctx).Extra)
			if err != nil {
				return seen{}, err
			}
			if tc.Run == 1 {
				close(started)
				<-ctx.Done() // the first worker stops with this task in hand
				return seen{}, context.Cause(ctx)
			}
			n, _, err := state.Get[int](s, "visits")
			return seen{Visits: n, Run: tc.Run, Attempt: tc.Attempt}, err
		}, nil)
	}
	first, err := executor.New(b, &executor.Config{AckWait: 5 * time.Second, GracePeriod: time.Millisecond})
	require.NoError(t, err)
	register(first)
	require.NoError(t, first.Start(testkit.Ctx(t)))

	sub := testkit.Submit(t, first, "hold", nil, &executor.SubmitOptions{Extra: state.Initial(map[string]any{"visits": 1})})
	select {
	case <-started:
	case <-time.After(testkit.WaitLimit):
		t.Fatal("the task did not start")
	}
	require.NoError(t, first.Stop(testkit.Ctx(t)))

	second := testkit.NewApp(t, b, false)
	register(second)
	require.NoError(t, second.Start(testkit.Ctx(t)))
	t.Cleanup(func() { _ = second.Stop(context.Background()) })

	final := testkit.Wait(t, second, sub.ID)
	require.Equal(t, events.StatusSuccess, final.Status)
	got, err := executor.Result[seen](final)
	require.NoError(t, err)
	require.Equal(t, 2, got.Run)
	require.Equal(t, 1+1+1, got.Visits, "submission's change, then this run's intake")
	require.Len(t, testkit.Facts(t, b, events.BrokerRunningOlderTasks, sub.ID), 1, "the resumption is in the log")
	require.Len(t, testkit.Facts(t, b, events.StorageGet, sub.ID), 2, "each run changed the state at its intake")
}

// A state that is not a JSON object is a plugin error: recorded with its
// reason in the fact, and the plugin's policy decides the task's fate.
func TestStateMalformed(t *testing.T) {
	t.Parallel()

	t.Run("PolicyFail", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		testkit.LocalPlugin(t, b, visits(t, events.PolicyFail, events.StorageAdd))
		app := testkit.NewApp(t, b, false)
		registerVisit(t, app, nil, false)

		_, err := app.Submit(testkit.Ctx(t), "visit", nil, &executor.SubmitOptions{Extra: map[string]any{"state": 5}})
		require.ErrorContains(t, err, "plugin visits failed on storage_add (error)")
		require.ErrorContains(t, err, "/task_status/extra/state is not a JSON object")

		fs := bustest.Events(t, b, events.FactSubject(events.StorageAdd, "*"))
		require.Len(t, fs, 1)
		var f events.Fact
		require.NoError(t, json.Unmarshal(fs[0].Event.Data, &f))
		require.NotEmpty(t, f.Failed)
		require.Len(t, f.Calls, 1)
		require.Equal(t, events.OutcomeError, f.Calls[0].Outcome)
		require.Contains(t, f.Calls[0].Reason, "is not a JSON object")
		_, err = b.GetTask(testkit.Ctx(t), fs[0].Event.TaskID)
		require.ErrorIs(t, err, bus.ErrTaskNotFound, "a refused submission stores no task")
	})

	t.Run("PolicyIgnore", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		testkit.LocalPlugin(t, b, visits(t, events.PolicyIgnore, events.StorageGet))
		app := testkit.NewApp(t, b, true)
		executor.MustRegister(app, "plain", func(context.Context, struct{}) (int, error) { return 7, nil }, nil)

		sub := testkit.Submit(t, app, "plain", nil, &executor.SubmitOptions{Extra: map[string]any{"state": []int{1}}})
		final := testkit.Wait(t, app, sub.ID)
		require.Equal(t, events.StatusSuccess, final.Status, "under ignore the task goes on")
		require.JSONEq(t, `[1]`, string(final.Extra["state"]), "and its extra is left as it was")
		c := testkit.CallOf(t, testkit.OneFact(t, b, events.StorageGet, sub.ID), "visits")
		require.Equal(t, events.OutcomeError, c.Outcome)
		require.Equal(t, events.PolicyIgnore, c.Policy)
		require.Contains(t, c.Reason, "/result/extra/state is not a JSON object")
	})

	t.Run("TaskReadsMalformed", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		app := testkit.NewApp(t, b, true)
		registerVisit(t, app, nil, false)
		sub := testkit.Submit(t, app, "visit", nil, &executor.SubmitOptions{Extra: map[string]any{"state": "x"}})
		final := testkit.Wait(t, app, sub.ID)
		require.Equal(t, events.StatusError, final.Status)
		require.Contains(t, final.Error, "extra/state is not a JSON object")
	})
}

func TestFromExtraWithoutState(t *testing.T) {
	t.Parallel()
	s, err := state.FromExtra(nil)
	require.NoError(t, err)
	require.Empty(t, s)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func extraState(t *testing.T, extra json.RawMessage) state.State {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(extra, &m))
	s, err := state.FromTask(events.Task{Extra: m})
	require.NoError(t, err)
	return s
}

func itoa(n int) string { return strconv.Itoa(n) }
