package validate_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/validate"
	"github.com/qtasks/qtasks-go/projections"
)

const waitLimit = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

type addArgs struct {
	A int `json:"a"`
	B int `json:"b,omitempty" jsonschema:"default=10"`
}

type fixture struct {
	b   *bus.Bus
	app *executor.App
	got chan addArgs // what the add task function received
}

// setup opens a bus, registers the tasks add (with a schema) and echo
// (without), runs the plugin (in-process, or as consumers on a connection
// of its own) for triggers (all of its triggers when nil), and starts a
// worker when worker is set.
func setup(t *testing.T, local, worker bool, triggers []string) *fixture {
	t.Helper()
	f := &fixture{b: bustest.Open(t, nil), got: make(chan addArgs, 10)}
	var err error
	f.app, err = executor.New(f.b, &executor.Config{AckWait: 5 * time.Second, GracePeriod: 5 * time.Second})
	require.NoError(t, err)
	executor.MustRegister(f.app, "add", func(_ context.Context, in addArgs) (int, error) {
		f.got <- in
		return in.A + in.B, nil
	}, nil)
	executor.MustRegister(f.app, "echo", func(_ context.Context, in map[string]any) (map[string]any, error) {
		return in, nil
	}, nil)
	p, err := validate.New(validate.Schemas{"add": validate.SchemaFor[addArgs]()})
	require.NoError(t, err)
	spec := p.Spec()
	if triggers != nil {
		spec.Triggers = triggers
	}
	var r *plugins.Runner
	if local {
		r, err = plugins.Local(testCtx(t), f.b, spec)
	} else {
		r, err = plugins.Start(testCtx(t), bustest.Connect(t, f.b, nil), spec)
	}
	require.NoError(t, err)
	// The executor's bus learns of the registration through its own watch.
	require.NoError(t, f.b.Registry().WaitFor(testCtx(t), spec.Name, spec.Version))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		require.NoError(t, r.Stop(ctx))
	})
	if worker {
		require.NoError(t, f.app.Start(testCtx(t)))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			require.NoError(t, f.app.Stop(ctx))
		})
	}
	return f
}

func (f *fixture) run(t *testing.T, name string, kw any) events.Task {
	t.Helper()
	ctx := testCtx(t)
	sub, err := f.app.Submit(ctx, name, kw, nil)
	require.NoError(t, err)
	got, err := f.app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	return got
}

// oneFact waits for the single fact of trigger for task id.
func oneFact(t *testing.T, b *bus.Bus, trigger, id string) events.Fact {
	t.Helper()
	var evs []bus.Stored
	bustest.WaitFor(t, waitLimit, trigger+" fact", func() bool {
		evs = bustest.EventsOf(t, b, id, events.FactSubject(trigger, "*"))
		return len(evs) > 0
	})
	require.Len(t, evs, 1)
	require.NoError(t, evs[0].Err)
	var f events.Fact
	require.NoError(t, json.Unmarshal(evs[0].Event.Data, &f))
	return f
}

func TestValidArguments(t *testing.T) {
	t.Parallel()
	for _, local := range []bool{true, false} {
		t.Run(map[bool]string{true: "Local", false: "Consumer"}[local], func(t *testing.T) {
			t.Parallel()
			f := setup(t, local, true, nil)

			// Coerced and completed: "5" becomes 5, b gets its default.
			got := f.run(t, "add", map[string]any{"a": "5"})
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			sum, err := executor.Result[int](got)
			require.NoError(t, err)
			require.Equal(t, 15, sum)
			require.Equal(t, addArgs{A: 5, B: 10}, <-f.got, "the task function got typed arguments")
			require.JSONEq(t, `{"a":"5"}`, string(got.Kw), "the record keeps the arguments as submitted")

			// The facts show both calls: a check at submission that
			// changed nothing, and the coercion patch before the run.
			sub := oneFact(t, f.b, events.QTasksAddTaskBeforeBroker, got.ID)
			require.Len(t, sub.Calls, 1)
			require.Equal(t, validate.DefaultName, sub.Calls[0].Plugin)
			require.Equal(t, events.OutcomeNoChange, sub.Calls[0].Outcome)
			rep := oneFact(t, f.b, events.TaskExecutorArgsReplace, got.ID)
			require.Len(t, rep.Calls, 1)
			require.Equal(t, events.OutcomeApplied, rep.Calls[0].Outcome)
			require.Equal(t, events.ContentTypeMergePatch, rep.Calls[0].ContentType)
			require.JSONEq(t, `{"kw":{"a":5,"b":10}}`, string(rep.Calls[0].Patch))
			require.JSONEq(t, `{"args":[],"kw":{"a":"5"}}`, string(rep.Input))
			require.JSONEq(t, `{"args":[],"kw":{"a":5,"b":10}}`, string(rep.Output))

			// Valid as given: passed, nothing patched.
			got = f.run(t, "add", map[string]any{"a": 1, "b": 2})
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.Equal(t, addArgs{A: 1, B: 2}, <-f.got)
			rep = oneFact(t, f.b, events.TaskExecutorArgsReplace, got.ID)
			require.Equal(t, events.OutcomeNoChange, rep.Calls[0].Outcome)

			// A task without a schema passes untouched.
			got = f.run(t, "echo", map[string]any{"a": "5", "anything": []int{1}})
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.JSONEq(t, `{"a":"5","anything":[1]}`, string(got.Result))
			for _, trig := range []string{events.QTasksAddTaskBeforeBroker, events.TaskExecutorArgsReplace} {
				fact := oneFact(t, f.b, trig, got.ID)
				require.Len(t, fact.Calls, 1, trig)
				require.Equal(t, events.OutcomeNoChange, fact.Calls[0].Outcome, trig)
			}
		})
	}
}

// Bad arguments are refused at submission: Submit's error names the field
// and why; no task record, nothing queued; the refusal is in the log.
func TestInvalidArgumentsRefusedAtSubmit(t *testing.T) {
	t.Parallel()
	for _, local := range []bool{true, false} {
		t.Run(map[bool]string{true: "Local", false: "Consumer"}[local], func(t *testing.T) {
			t.Parallel()
			f := setup(t, local, false, nil) // no worker: whatever is queued stays
			ctx := testCtx(t)
			_, err := f.app.Submit(ctx, "add", map[string]any{"a": "five", "c": 1}, nil)
			require.Error(t, err)
			require.Equal(t, "submitting add: plugin validate failed on qtasks_add_task_before_broker (error): "+
				"invalid arguments for task add: /kw/a: got string, want integer; /kw: additional properties 'c' not allowed",
				err.Error())
			var pf *executor.PluginFailure
			require.ErrorAs(t, err, &pf)
			require.Equal(t, validate.DefaultName, pf.Plugin)

			_, err = f.app.Submit(ctx, "add", map[string]any{"b": 1}, nil)
			require.ErrorContains(t, err, "invalid arguments for task add: /kw: missing property 'a'")

			// The refusals are facts; no task was stored or queued.
			refused := bustest.Events(t, f.b, events.SubjectTrigger+"."+events.QTasksAddTaskBeforeBroker+".>")
			require.Len(t, refused, 2)
			for _, s := range refused {
				var fact events.Fact
				require.NoError(t, json.Unmarshal(s.Event.Data, &fact))
				require.Contains(t, fact.Failed, "plugin validate failed")
				require.Len(t, fact.Calls, 1)
				require.Equal(t, events.OutcomeError, fact.Calls[0].Outcome)
				require.Contains(t, fact.Calls[0].Reason, "invalid arguments for task add")
				_, err := f.b.GetTask(ctx, s.Event.TaskID)
				require.ErrorIs(t, err, bus.ErrTaskNotFound)
				require.Empty(t, bustest.EventsOf(t, f.b, s.Event.TaskID, events.FactSubject(events.StorageAdd, "*")))
			}
			stream, err := f.b.JetStream().Stream(ctx, bus.StreamTasks)
			require.NoError(t, err)
			info, err := stream.Info(ctx)
			require.NoError(t, err)
			require.Zero(t, info.State.Msgs, "nothing queued")
		})
	}
}

// A task submitted without the check (the plugin is named only for
// task_executor_args_replace here, as for a client that does not run it)
// fails its attempt when its arguments are still invalid before the run.
func TestInvalidArgumentsFailTheRun(t *testing.T) {
	t.Parallel()
	f := setup(t, true, true, []string{events.TaskExecutorArgsReplace})
	got := f.run(t, "add", map[string]any{"a": []int{1}})
	require.Equal(t, events.StatusError, got.Status)
	require.Contains(t, got.Reason, "plugin validate failed on task_executor_args_replace (error): "+
		"invalid arguments for task add: /kw/a: got array, want integer")
	require.Empty(t, f.got, "the task function never ran")
	rep := oneFact(t, f.b, events.TaskExecutorArgsReplace, got.ID)
	require.Equal(t, events.OutcomeError, rep.Calls[0].Outcome)
	require.NotEmpty(t, rep.Failed)
}

// The coercion in the task's timeline, as the projection shows it: the
// plugin's call on task_executor_args_replace and what its patch changed.
func TestValidateTimeline(t *testing.T) {
	t.Parallel()
	f := setup(t, true, true, nil)
	got := f.run(t, "add", map[string]any{"a": "7"})
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	oneFact(t, f.b, events.StorageRemoveFinishedTask, got.ID)

	ctx := testCtx(t)
	db, err := projections.Open(ctx, filepath.Join(t.TempDir(), "p.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_, err = db.Apply(ctx, bustest.Events(t, f.b))
	require.NoError(t, err)
	tl, err := db.Timeline(ctx, got.ID)
	require.NoError(t, err)
	require.JSONEq(t, `{"a":"7"}`, string(tl.Task.KwSubmitted))
	require.JSONEq(t, `{"a":7,"b":10}`, string(tl.Task.KwExecuted))

	var changes []string
	for _, e := range tl.Entries {
		for _, c := range e.Calls {
			require.Equal(t, validate.DefaultName, c.Plugin)
			for _, ch := range c.Changes {
				changes = append(changes, e.Trigger+" "+ch.String())
			}
		}
	}
	require.Equal(t, []string{
		`task_executor_args_replace ~ /kw/a: "7" → 7`,
		`task_executor_args_replace + /kw/b: 10`,
	}, changes)
}
