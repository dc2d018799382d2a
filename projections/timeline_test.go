package projections_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// Issue test 5: the timeline of a task whose arguments two plugins changed
// shows both patches, in order, as readable diffs; blame names the right
// plugin for each field, the later plugin where both changed one.
func TestTimelineAndBlame(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	app := newApp(t, b)
	type in struct {
		A int `json:"a"`
		B int `json:"b"`
		C int `json:"c"`
	}
	executor.MustRegister(app, "sum", func(_ context.Context, x in) (int, error) { return x.A + x.B + x.C, nil }, nil)
	// first sets a and b; second sets a again and removes c; rounder
	// replaces the result.
	startPlugin(t, b, plugins.Spec{
		Name: "first", Version: "1.0", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"a": 10, "b": 20}})
		}),
	})
	startPlugin(t, b, plugins.Spec{
		Name: "second", Version: "2.0", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct {
				Kw in `json:"kw"`
			}
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			return plugins.JSONPatch(
				plugins.Op{Op: "replace", Path: "/kw/a", Value: p.Kw.A + 1}, // sees first's patch
				plugins.Op{Op: "remove", Path: "/kw/c"},
			)
		}),
	})
	startPlugin(t, b, plugins.Spec{
		Name: "rounder", Version: "0.3", Triggers: []string{events.TaskExecutorAfterExecuteResultReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"result": 100})
		}),
	})
	startApp(t, app)
	task := submitAndWait(t, app, "sum", in{A: 1, B: 2, C: 3}, nil)
	require.Equal(t, events.StatusSuccess, task.Status, task.Error)
	require.JSONEq(t, `100`, string(task.Result))

	ctx := ctxFor(t)
	require.NoError(t, p.CatchUp(ctx))
	db := openDB(t, path, true)

	tl, err := db.Timeline(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, task.ID, tl.Task.ID)
	var triggers []string
	var args *projections.Entry
	for i, e := range tl.Entries {
		triggers = append(triggers, e.Trigger)
		if i > 0 {
			prev := tl.Entries[i-1]
			require.True(t, e.Seq > prev.Seq || e.Seq == prev.Seq && e.Index > prev.Index, "stream order: %d.%d after %d.%d", e.Seq, e.Index, prev.Seq, prev.Index)
		}
		if e.Trigger == events.TaskExecutorArgsReplace {
			args = &tl.Entries[i]
		}
	}
	require.Equal(t, events.QTasksAddTaskBeforeBroker, triggers[0])
	require.Contains(t, triggers, events.StorageRemoveFinishedTask)
	require.NotNil(t, args)
	require.Len(t, args.Calls, 2)
	first, second := args.Calls[0], args.Calls[1]
	require.Equal(t, "first", first.Plugin)
	require.Equal(t, "1.0", first.Version)
	require.Equal(t, string(events.OutcomeApplied), first.Outcome)
	require.Equal(t, events.ContentTypeMergePatch, first.ContentType)
	require.Equal(t, []string{"~ /kw/a: 1 → 10", "~ /kw/b: 2 → 20"}, changeStrings(first.Changes))
	require.Equal(t, "second", second.Plugin)
	require.Equal(t, events.ContentTypeJSONPatch, second.ContentType)
	require.Equal(t, []string{"~ /kw/a: 10 → 11", "- /kw/c: 3"}, changeStrings(second.Changes))
	require.Less(t, first.InvokeSeq, second.InvokeSeq, "invoked in chain order")
	require.Less(t, first.PatchSeq, second.InvokeSeq, "second saw first's patch")
	require.JSONEq(t, `{"args":[],"kw":{"a":11,"b":20}}`, string(args.Output))
	require.JSONEq(t, `{"a":11,"b":20}`, string(tl.Task.KwExecuted))
	require.JSONEq(t, `{"a":1,"b":2,"c":3}`, string(tl.Task.KwSubmitted))

	blame, err := db.Blame(ctx, task.ID)
	require.NoError(t, err)
	got := map[string]string{}
	for _, bl := range blame {
		got[bl.Path] = bl.Plugin + "@" + bl.Version + " " + bl.Op + " " + string(bl.Value)
		require.Equal(t, task.Attempt, bl.Attempt)
	}
	require.Equal(t, map[string]string{
		"/kw/a":   "second@2.0 replace 11",
		"/kw/b":   "first@1.0 replace 20",
		"/kw/c":   "second@2.0 remove ",
		"/result": "rounder@0.3 replace 100",
	}, got)
	for _, bl := range blame {
		switch bl.Path {
		case "/kw/a", "/kw/b", "/kw/c":
			require.Equal(t, args.Seq, bl.Seq)
			require.Equal(t, events.TaskExecutorArgsReplace, bl.Trigger)
		case "/result":
			require.Equal(t, events.TaskExecutorAfterExecuteResultReplace, bl.Trigger)
		}
	}

	// The JSON form carries the same.
	js, err := json.Marshal(tl)
	require.NoError(t, err)
	require.Contains(t, string(js), `"changes":[{"op":"replace","path":"/kw/a","old":1,"new":10}`)

	_, err = db.Timeline(ctx, "no-such-task")
	require.ErrorIs(t, err, projections.ErrNotFound)
	_, err = db.Blame(ctx, "no-such-task")
	require.ErrorIs(t, err, projections.ErrNotFound)
}

func changeStrings(cs []projections.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

func TestDiff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b string
		want []string
	}{
		{"Same", `{"a":1,"b":[1,2]}`, `{"b":[1,2],"a":1}`, []string{}},
		{"SameNumberSpelledTwice", `{"a":1}`, `{"a":1.0}`, []string{}},
		{"Scalar", `{"a":1}`, `{"a":2}`, []string{"~ /a: 1 → 2"}},
		{"AddRemove", `{"a":1,"b":2}`, `{"b":2,"c":3}`, []string{"- /a: 1", "+ /c: 3"}},
		{"Nested", `{"kw":{"x":{"y":true}}}`, `{"kw":{"x":{"y":false}}}`, []string{"~ /kw/x/y: true → false"}},
		{"ArraySameLength", `[1,2,3]`, `[1,5,3]`, []string{"~ /1: 2 → 5"}},
		{"ArrayOtherLength", `{"a":[1]}`, `{"a":[1,2]}`, []string{"~ /a: [1] → [1,2]"}},
		{"TypeChange", `{"a":{"b":1}}`, `{"a":"b"}`, []string{`~ /a: {"b":1} → "b"`}},
		{"EscapedKey", `{"a/b":1,"c~d":1}`, `{"a/b":2,"c~d":2}`, []string{"~ /a~1b: 1 → 2", "~ /c~0d: 1 → 2"}},
		{"Root", `1`, `"x"`, []string{`~ : 1 → "x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := projections.Diff([]byte(tt.a), []byte(tt.b))
			require.NoError(t, err)
			require.Equal(t, tt.want, append([]string{}, changeStrings(got)...))
		})
	}
	_, err := projections.Diff([]byte(`{`), []byte(`{}`))
	require.Error(t, err)
}
