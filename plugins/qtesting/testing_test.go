package qtesting_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/qtesting"
	"github.com/qtasks/qtasks-go/projections"
)

func TestNewRefusesMisconfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  qtesting.Config
		want string
	}{
		{"BadName", qtesting.Config{Name: "my plugin"}, `name "my plugin"`},
		{"BlankTag", qtesting.Config{Tag: " testing"}, `tag " testing"`},
		{"MultiLineTag", qtesting.Config{Tags: []string{"ci\nnightly"}}, `tag "ci\nnightly"`},
		{"EmptySelectTag", qtesting.Config{Tags: []string{""}}, `tag ""`},
		{"BadTaskName", qtesting.Config{TaskNames: []string{"a.b"}}, `task name "a.b"`},
		{"BadPolicy", qtesting.Config{Policy: "skip"}, `policy "skip"`},
		{"NegativeTimeout", qtesting.Config{Timeout: -time.Second}, "timeout -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := qtesting.New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
	_, err := qtesting.New(qtesting.Config{Name: "a b", Policy: "x"})
	require.ErrorContains(t, err, "name")
	require.ErrorContains(t, err, "policy", "every problem is reported at once")
}

func storageAdd(t *testing.T, task events.Task) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"uuid": task.ID, "task_status": task})
	require.NoError(t, err)
	return b
}

func TestTriggerPatches(t *testing.T) {
	t.Parallel()
	p, err := qtesting.New(qtesting.Config{TaskNames: []string{"fixture"}, Tags: []string{"ci"}})
	require.NoError(t, err)
	tr, _ := events.Lookup(events.StorageAdd)
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		name     string
		task     events.Task
		marked   bool
		wantTags []string
	}{
		{"Unmarked", events.Task{ID: "t", Name: "work"}, false, nil},
		{"ByName", events.Task{ID: "t", Name: "fixture"}, true, []string{"testing"}},
		{"ByTag", events.Task{ID: "t", Name: "work", Tags: []string{"demo", "ci"}}, true, []string{"demo", "ci", "testing"}},
		{"BySubmitter", events.Task{ID: "t", Name: "work", Extra: map[string]json.RawMessage{"testing": raw("true"), "team": raw(`"a"`)}}, true, []string{"testing"}},
		{"QTasksString", events.Task{ID: "t", Name: "work", Extra: map[string]json.RawMessage{"testing": raw(`"True"`)}}, true, []string{"testing"}},
		{"ExplicitlyNot", events.Task{ID: "t", Name: "work", Extra: map[string]json.RawMessage{"testing": raw("false")}}, false, nil},
		{"AlreadyMarked", events.Task{ID: "t", Name: "work", Tags: []string{"testing"}, Extra: map[string]json.RawMessage{"testing": raw("true")}}, true, []string{"testing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := storageAdd(t, tt.task)
			patch, err := p.Trigger(context.Background(), &plugins.Call{Trigger: events.StorageAdd, TaskID: "t", Payload: doc})
			require.NoError(t, err)
			out := doc
			if patch != nil {
				out, err = events.ApplyPatch(tr, doc, patch.ContentType, patch.Body)
				require.NoError(t, err, "the executor accepts the patch %s", patch.Body)
			}
			var got struct {
				TaskStatus events.Task `json:"task_status"`
			}
			require.NoError(t, json.Unmarshal(out, &got))
			require.Equal(t, tt.marked, qtesting.Marked(got.TaskStatus))
			require.Equal(t, tt.marked, qtesting.MarkedPayload(events.StorageAdd, out))
			require.Equal(t, tt.wantTags, got.TaskStatus.Tags)
			if tt.name == "AlreadyMarked" || !tt.marked {
				require.Nil(t, patch, "nothing to change")
			}
			if tt.name == "BySubmitter" {
				require.JSONEq(t, `"a"`, string(got.TaskStatus.Extra["team"]), "the rest of extra is kept")
			}
		})
	}

	t.Run("Malformed", func(t *testing.T) {
		t.Parallel()
		for name, doc := range map[string]string{
			"MarkNotBool":  `{"uuid":"t","task_status":{"id":"t","task_name":"w","extra":{"testing":{"a":1}}}}`,
			"MarkNumber":   `{"uuid":"t","task_status":{"id":"t","task_name":"w","extra":{"testing":1}}}`,
			"TagsNotArray": `{"uuid":"t","task_status":{"id":"t","task_name":"w","tags":"ci"}}`,
			"NoRecord":     `{"uuid":"t"}`,
			"NotJSON":      `{`,
		} {
			_, err := p.Trigger(context.Background(), &plugins.Call{Trigger: events.StorageAdd, Payload: []byte(doc)})
			require.ErrorIs(t, err, qtesting.ErrMalformed, name)
		}
		_, err := p.Trigger(context.Background(), &plugins.Call{Trigger: events.StorageGet, Payload: []byte(`{}`)})
		require.ErrorContains(t, err, "handles only storage_add")
	})
}

// Marked tasks run as usual; they carry the mark and the tag in their
// record, their facts and the projection, where they can be listed by tag;
// the plugin's calls are in each task's timeline.
func TestMarksTasksUnderTest(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Local", "Start", "OtherProcess"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, nil)
			p, err := qtesting.New(qtesting.Config{TaskNames: []string{"fixture"}, Tags: []string{"ci"}})
			require.NoError(t, err)
			switch how {
			case "Local":
				testkit.LocalPlugin(t, b, p.Spec())
			case "Start":
				testkit.StartPlugin(t, b, p.Spec())
			case "OtherProcess":
				testkit.StartPlugin(t, bustest.Connect(t, b, &bus.Config{Plugin: p.Spec().Name}), p.Spec())
			}
			app := testkit.NewApp(t, b, true)
			for _, name := range []string{"fixture", "work"} {
				executor.MustRegister(app, name, func(context.Context, struct{}) (string, error) { return "done", nil }, nil)
			}

			subs := map[string]events.Task{
				"name":      testkit.Submit(t, app, "fixture", nil, nil),
				"submitter": testkit.Submit(t, app, "work", nil, &executor.SubmitOptions{Extra: qtesting.Extra()}),
				"tag":       testkit.Submit(t, app, "work", nil, &executor.SubmitOptions{Tags: []string{"ci"}}),
				"none":      testkit.Submit(t, app, "work", nil, nil),
			}
			var marked []string
			for why, sub := range subs {
				final := testkit.Wait(t, app, sub.ID)
				require.Equal(t, events.StatusSuccess, final.Status, why)
				require.Equal(t, why != "none", qtesting.Marked(final), why)
				require.Equal(t, why != "none", slices.Contains(final.Tags, qtesting.DefaultTag), why)

				testkit.WaitFinal(t, b, sub.ID, 1)
				add := testkit.OneFact(t, b, events.StorageAdd, sub.ID)
				c := testkit.CallOf(t, add, "testing")
				fin := testkit.OneFact(t, b, events.StorageRemoveFinishedTask, sub.ID)
				if why == "none" {
					require.Equal(t, events.OutcomeNoChange, c.Outcome)
					require.False(t, qtesting.MarkedPayload(events.StorageRemoveFinishedTask, fin.Input))
					continue
				}
				marked = append(marked, sub.ID)
				require.Equal(t, events.OutcomeApplied, c.Outcome, why)
				require.True(t, qtesting.MarkedPayload(events.StorageAdd, add.Output), why)
				require.True(t, qtesting.MarkedPayload(events.StorageRemoveFinishedTask, fin.Input), "the final fact carries the mark")
			}

			db := testkit.Projection(t, b)
			page, err := db.Tasks(testkit.Ctx(t), projections.TaskFilter{Tag: qtesting.DefaultTag})
			require.NoError(t, err)
			var listed []string
			for _, pt := range page.Tasks {
				listed = append(listed, pt.ID)
				require.JSONEq(t, `true`, string(extraKey(t, pt.Extra, qtesting.ExtraKey)))
			}
			require.ElementsMatch(t, marked, listed, "the projection lists the marked tasks by tag")

			tl, err := db.Timeline(testkit.Ctx(t), subs["tag"].ID)
			require.NoError(t, err)
			var changes []string
			for _, e := range tl.Entries {
				for _, c := range e.Calls {
					if c.Plugin == "testing" {
						for _, ch := range c.Changes {
							changes = append(changes, e.Trigger+" "+ch.Path)
						}
					}
				}
			}
			require.ElementsMatch(t, []string{"storage_add /task_status/extra", "storage_add /task_status/tags"}, changes)
		})
	}
}

// A mark the plugin cannot read is a plugin error, recorded in the fact;
// the policy decides: fail refuses the submission, ignore lets the task
// run unmarked.
func TestMalformedMark(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{events.PolicyFail, events.PolicyIgnore} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, nil)
			p, err := qtesting.New(qtesting.Config{Policy: policy})
			require.NoError(t, err)
			testkit.LocalPlugin(t, b, p.Spec())
			app := testkit.NewApp(t, b, true)
			executor.MustRegister(app, "work", func(context.Context, struct{}) (int, error) { return 1, nil }, nil)

			opts := &executor.SubmitOptions{Extra: map[string]any{"testing": map[string]any{"on": 1}}}
			sub, err := app.Submit(testkit.Ctx(t), "work", nil, opts)
			fs := bustest.Events(t, b, events.FactSubject(events.StorageAdd, "*"))
			require.Len(t, fs, 1)
			var f events.Fact
			require.NoError(t, json.Unmarshal(fs[0].Event.Data, &f))
			require.Len(t, f.Calls, 1)
			require.Equal(t, events.OutcomeError, f.Calls[0].Outcome)
			require.Contains(t, f.Calls[0].Reason, `/task_status/extra/testing is {"on":1}: want true or false`)
			if policy == events.PolicyFail {
				require.ErrorContains(t, err, "plugin testing failed on storage_add (error)")
				require.NotEmpty(t, f.Failed)
				return
			}
			require.NoError(t, err)
			require.Empty(t, f.Failed)
			final := testkit.Wait(t, app, sub.ID)
			require.Equal(t, events.StatusSuccess, final.Status)
			require.False(t, qtesting.Marked(final))
			require.NotContains(t, final.Tags, qtesting.DefaultTag)
		})
	}
}

func extraKey(t *testing.T, extra json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(extra, &m))
	return m[key]
}
