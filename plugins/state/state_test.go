package state_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/internal/taskrec"
	"github.com/qtasks/qtasks-go/plugins/state"
)

// payload builds a payload of trigger whose task record has extra (nil:
// no extra at all).
func payload(t *testing.T, trigger string, extra map[string]any) []byte {
	t.Helper()
	path, ok := taskrec.Path(trigger)
	require.True(t, ok, trigger)
	rec := map[string]any{"id": "t1", "task_name": "visit", "priority": 0, "args": []any{}, "kw": map[string]any{}}
	if extra != nil {
		rec["extra"] = extra
	}
	var doc any = rec
	for _, p := range slices.Backward(path) {
		doc = map[string]any{p: doc}
	}
	if trigger == events.StorageAdd {
		doc.(map[string]any)["uuid"] = "t1"
	}
	b, err := json.Marshal(doc)
	require.NoError(t, err)
	return b
}

func call(trigger string, p []byte) *plugins.Call {
	return &plugins.Call{Trigger: trigger, TaskID: "t1", TaskName: "visit", Payload: p}
}

// apply applies p to doc under trigger's contract, as the executor does.
func apply(t *testing.T, trigger string, doc []byte, p *plugins.Patch) []byte {
	t.Helper()
	tr, ok := events.Lookup(trigger)
	require.True(t, ok)
	out, err := events.ApplyPatch(tr, doc, p.ContentType, p.Body)
	require.NoError(t, err, "patch %s", p.Body)
	return out
}

func TestWritableTriggers(t *testing.T) {
	t.Parallel()
	require.ElementsMatch(t, []string{
		events.QTasksAddTaskBeforeBroker, events.BrokerAddBefore, events.StorageAdd,
		events.StorageGet, events.BrokerGet, events.WorkerExecuteBefore,
		events.BrokerUpdate, events.StorageUpdate,
		events.WorkerRemoveFinishedTask, events.BrokerRemoveFinishedTask,
	}, taskrec.WritableTriggers("extra"))
}

// Every trigger that allows extra gets a patch the executor accepts, from
// no extra, from an extra without state and from an existing state; the
// patched payload reads back as the state wanted, and the rest of extra
// is kept.
func TestDiffUnderEveryContract(t *testing.T) {
	t.Parallel()
	for _, trigger := range taskrec.WritableTriggers("extra") {
		for name, extra := range map[string]map[string]any{
			"NoExtra":   nil,
			"NoState":   {"team": "a"},
			"NullState": {"team": "a", "state": nil},
			"State":     {"team": "a", "state": map[string]any{"n": 1, "gone": true, "obj": map[string]any{"x": 1, "y": 2}}},
		} {
			t.Run(trigger+"/"+name, func(t *testing.T) {
				t.Parallel()
				doc := payload(t, trigger, extra)
				before, err := state.Read(trigger, doc)
				require.NoError(t, err)

				after := state.State{}
				maps.Copy(after, before)
				require.NoError(t, after.Set("n", 2))
				require.NoError(t, after.Set("obj", map[string]any{"x": 3})) // replaced, not merged
				require.NoError(t, after.Set("we/ird~key", []int{1}))
				after.Delete("gone")

				p, err := state.Diff(trigger, doc, before, after)
				require.NoError(t, err)
				require.NotNil(t, p)
				require.Equal(t, events.ContentTypeJSONPatch, p.ContentType)
				out := apply(t, trigger, doc, p)

				got, err := state.Read(trigger, out)
				require.NoError(t, err)
				want, err := json.Marshal(after)
				require.NoError(t, err)
				have, err := json.Marshal(got)
				require.NoError(t, err)
				require.JSONEq(t, string(want), string(have))

				ex, err := taskrec.Extra(trigger, out)
				require.NoError(t, err)
				if extra != nil {
					require.JSONEq(t, `"a"`, string(ex["team"]))
				}

				// No change, no patch.
				p, err = state.Diff(trigger, out, got, got)
				require.NoError(t, err)
				require.Nil(t, p)
			})
		}
	}
}

func TestSetAndDelete(t *testing.T) {
	t.Parallel()
	doc := payload(t, events.WorkerRemoveFinishedTask, map[string]any{"state": map[string]any{"n": 1, "m": 2}})
	c := call(events.WorkerRemoveFinishedTask, doc)

	p, err := state.Set(c, "n", 5)
	require.NoError(t, err)
	require.JSONEq(t, `[{"op":"add","path":"/model/extra/state/n","value":5}]`, string(p.Body))

	p, err = state.Set(c, "n", 1)
	require.NoError(t, err)
	require.Nil(t, p, "setting a key to its value changes nothing")

	p, err = state.Delete(c, "m", "absent")
	require.NoError(t, err)
	require.JSONEq(t, `[{"op":"remove","path":"/model/extra/state/m"}]`, string(p.Body))
	s, err := state.Read(events.WorkerRemoveFinishedTask, apply(t, events.WorkerRemoveFinishedTask, doc, p))
	require.NoError(t, err)
	require.Equal(t, state.State{"n": json.RawMessage("1")}, s)

	n, ok, err := state.Get[int](s, "n")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 1, n)
	_, ok, err = state.Get[int](s, "m")
	require.NoError(t, err)
	require.False(t, ok)
	_, _, err = state.Get[string](s, "n")
	require.Error(t, err, "decoding a number as a string")
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		trigger string
		payload string
		wantErr error
	}{
		{"NoRecord", events.TaskExecutorArgsReplace, `{"args":[],"kw":{}}`, state.ErrNoRecord},
		{"ProcessTrigger", events.WorkerStart, `{"node":"n"}`, state.ErrNoRecord},
		{"NotJSON", events.StorageAdd, `nope`, state.ErrMalformed},
		{"NotAnObject", events.StorageAdd, `[1]`, state.ErrMalformed},
		{"NoModel", events.WorkerExecuteBefore, `{}`, state.ErrMalformed},
		{"ModelNotObject", events.WorkerExecuteBefore, `{"model":3}`, state.ErrMalformed},
		{"ExtraNotObject", events.WorkerExecuteBefore, `{"model":{"extra":[1]}}`, state.ErrMalformed},
		{"StateNotObject", events.WorkerExecuteBefore, `{"model":{"extra":{"state":5}}}`, state.ErrMalformed},
		{"StateArray", events.StorageUpdate, `{"kw":{"mapping":{"extra":{"state":[]}}}}`, state.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := state.Read(tt.trigger, []byte(tt.payload))
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
	t.Run("NullExtraIsEmpty", func(t *testing.T) {
		t.Parallel()
		s, err := state.Read(events.QTasksAddTaskBeforeBroker, []byte(`{"task_name":"x","extra":null}`))
		require.NoError(t, err)
		require.Empty(t, s)
	})
	t.Run("ReadOnlyTrigger", func(t *testing.T) {
		t.Parallel()
		doc := payload(t, events.StorageRemoveFinishedTask, map[string]any{"state": map[string]any{"n": 1}})
		s, err := state.Read(events.StorageRemoveFinishedTask, doc)
		require.NoError(t, err, "a one-way trigger's record is readable")
		require.JSONEq(t, `1`, string(s["n"]))
		_, err = state.Set(call(events.StorageRemoveFinishedTask, doc), "n", 2)
		require.ErrorIs(t, err, state.ErrReadOnly)
		require.ErrorContains(t, err, events.WorkerRemoveFinishedTask, "the error names where it may be changed")
	})
}

func TestNewSpecRefusesMisconfiguration(t *testing.T) {
	t.Parallel()
	fn := func(_ context.Context, _ *plugins.Call, _ state.State) error { return nil }
	tests := []struct {
		name string
		spec plugins.Spec
		fn   state.Func
		want string
	}{
		{"Global", plugins.Spec{Name: "s"}, fn, "no triggers"},
		{"UnknownTrigger", plugins.Spec{Name: "s", Triggers: []string{"storage_ad"}}, fn, `unknown trigger "storage_ad"`},
		{"NoRecord", plugins.Spec{Name: "s", Triggers: []string{events.TaskExecutorArgsReplace}}, fn, "does not let a patch change the task's extra"},
		{"OneWay", plugins.Spec{Name: "s", Triggers: []string{events.StorageRemoveFinishedTask}}, fn, "does not let a patch change the task's extra"},
		{"ProcessTrigger", plugins.Spec{Name: "s", Triggers: []string{events.WorkerStart}}, fn, "is not about a task"},
		{"NeverFired", plugins.Spec{Name: "s", Triggers: []string{events.QTasksGet}}, fn, "is not about a task"},
		{"Observer", plugins.Spec{Name: "s", Mode: plugins.Observer, Triggers: []string{events.StorageAdd}}, fn, "an observer cannot change state"},
		{"NilFunc", plugins.Spec{Name: "s", Triggers: []string{events.StorageAdd}}, nil, "nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := state.NewSpec(tt.spec, tt.fn)
			require.ErrorContains(t, err, tt.want)
		})
	}
	spec, err := state.NewSpec(plugins.Spec{Name: "s", Triggers: taskrec.WritableTriggers("extra")}, fn)
	require.NoError(t, err)
	require.NotNil(t, spec.Plugin)
}

// The adapter turns what the function changed into the patch, and an error
// (or a malformed state) into a plugin error.
func TestPluginAdapter(t *testing.T) {
	t.Parallel()
	p := state.Plugin(func(_ context.Context, _ *plugins.Call, s state.State) error {
		n, _, err := state.Get[int](s, "n")
		if err != nil {
			return err
		}
		if n < 0 {
			return errors.New("negative")
		}
		return s.Set("n", n+1)
	})
	ctx := context.Background()
	doc := payload(t, events.StorageGet, map[string]any{"state": map[string]any{"n": 1}})
	patch, err := p.Trigger(ctx, call(events.StorageGet, doc))
	require.NoError(t, err)
	require.JSONEq(t, `[{"op":"add","path":"/result/extra/state/n","value":2}]`, string(patch.Body))

	_, err = p.Trigger(ctx, call(events.StorageGet, payload(t, events.StorageGet, map[string]any{"state": map[string]any{"n": -1}})))
	require.EqualError(t, err, "negative")
	_, err = p.Trigger(ctx, call(events.StorageGet, payload(t, events.StorageGet, map[string]any{"state": "x"})))
	require.ErrorIs(t, err, state.ErrMalformed)
	_, err = p.Trigger(ctx, call(events.StorageGet, payload(t, events.StorageGet, map[string]any{"state": map[string]any{"n": "one"}})))
	require.ErrorContains(t, err, `decoding state "n"`)
}
