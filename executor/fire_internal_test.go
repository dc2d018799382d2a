package executor

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

// firedFacts returns the facts of trigger for task id that the log holds.
func firedFacts(t *testing.T, b *bus.Bus, trigger, id string) []events.Fact {
	t.Helper()
	var out []events.Fact
	for _, s := range bustest.Events(t, b, events.SubjectTrigger+".>") {
		require.NoError(t, s.Err, "seq %d", s.Seq)
		if s.Event.TaskID != id || s.Event.Trigger != trigger {
			continue
		}
		var f events.Fact
		require.NoError(t, json.Unmarshal(s.Event.Data, &f), "seq %d", s.Seq)
		out = append(out, f)
	}
	return out
}

// fire returns nil output for a payload no plugin changed, encodes the
// payload only when a fact or a plugin needs it, and records an unchanged
// returnable firing with its output equal to its input.
func TestFireUnchanged(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, mode bus.RecordMode) (*bus.Bus, *firing) {
		t.Helper()
		b := bustest.Open(t, &bus.Config{Record: mode})
		app, err := New(b, &Config{AckWait: 5 * time.Second})
		require.NoError(t, err)
		task := &events.Task{ID: uuid.NewString(), Name: "t", Queue: "default", Attempt: 1}
		return b, app.newFiring(task, 1)
	}
	// Each subtest's own deadline, from when it runs: parallel subtests
	// wait for a slot after the parent returns, on a loaded machine for
	// longer than a deadline set here would last.
	testCtx := func(t *testing.T) context.Context {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	// A payload json.Marshal refuses: firing it proves whether it was
	// encoded.
	unencodable := map[string]any{"args": []any{}, "kw": map[string]any{"c": make(chan int)}}

	t.Run("NotRecordedNoChain", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		b, f := setup(t, bus.RecordLifecycle)
		require.False(t, b.ShouldRecord(events.TaskExecutorArgsReplace))
		out, err := f.fire(ctx, events.TaskExecutorArgsReplace, unencodable)
		require.NoError(t, err, "the payload was encoded though nothing needs it")
		require.Nil(t, out)
		out, err = f.fire(ctx, events.TaskExecutorBeforeExecute, unencodable)
		require.NoError(t, err)
		require.Nil(t, out)
		require.Equal(t, int32(1), f.tally(events.TaskExecutorArgsReplace).n, "the firing is counted")
		require.False(t, f.tally(events.TaskExecutorArgsReplace).applied)
		require.NoError(t, f.acks.Wait(ctx))
		require.Empty(t, firedFacts(t, b, events.TaskExecutorArgsReplace, f.task.ID))

		// A lifecycle trigger is recorded in this mode: its payload is
		// encoded, and must be encodable.
		_, err = f.fire(ctx, events.StorageUpdate, unencodable)
		require.ErrorContains(t, err, "encoding payload of "+events.StorageUpdate)
	})

	t.Run("RecordedNoChain", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		b, f := setup(t, bus.RecordAll)
		in := `{"args":[1],"kw":{"a":"b"}}`
		out, err := f.fire(ctx, events.TaskExecutorArgsReplace, json.RawMessage(in))
		require.NoError(t, err)
		require.Nil(t, out, "unchanged")
		require.NoError(t, f.acks.Wait(ctx))
		fs := firedFacts(t, b, events.TaskExecutorArgsReplace, f.task.ID)
		require.Len(t, fs, 1)
		require.JSONEq(t, in, string(fs[0].Input))
		require.Empty(t, fs[0].Output, "no call: the output, equal to the input, is left out")
		require.Empty(t, fs[0].Calls)

		_, err = f.fire(ctx, events.TaskExecutorArgsReplace, unencodable)
		require.ErrorContains(t, err, "encoding payload of "+events.TaskExecutorArgsReplace)
	})

	t.Run("Chain", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		b, f := setup(t, bus.RecordLifecycle)
		// Plugin "x" patches kw only when it holds "patch"; otherwise it
		// answers no change.
		r, err := plugins.Local(ctx, b, plugins.Spec{
			Name: "x", Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
			Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
				var p struct {
					Kw map[string]any `json:"kw"`
				}
				if err := c.Decode(&p); err != nil {
					return nil, err
				}
				if p.Kw["patch"] == nil {
					return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
				}
				return plugins.MergePatch(map[string]any{"kw": map[string]any{"x": 1}})
			}),
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = r.Stop(context.Background()) })
		require.Len(t, b.Registry().Chain(events.TaskExecutorArgsReplace), 1)

		out, err := f.fire(ctx, events.TaskExecutorArgsReplace, map[string]any{"args": []int{}, "kw": map[string]any{}})
		require.NoError(t, err)
		require.Nil(t, out, "the plugin answered no change")
		require.False(t, f.tally(events.TaskExecutorArgsReplace).applied)

		out, err = f.fire(ctx, events.TaskExecutorArgsReplace, map[string]any{"args": []int{}, "kw": map[string]any{"patch": true}})
		require.NoError(t, err)
		require.JSONEq(t, `{"args":[],"kw":{"patch":true,"x":1}}`, string(out))
		require.True(t, f.tally(events.TaskExecutorArgsReplace).applied)

		// Not recorded in this mode, but a firing with plugin calls is.
		require.NoError(t, f.acks.Wait(ctx))
		fs := firedFacts(t, b, events.TaskExecutorArgsReplace, f.task.ID)
		require.Len(t, fs, 2)
		require.Equal(t, events.OutcomeNoChange, fs[0].Calls[0].Outcome)
		require.Equal(t, string(fs[0].Input), string(fs[0].Output))
		require.Equal(t, events.OutcomeApplied, fs[1].Calls[0].Outcome)
		require.JSONEq(t, string(out), string(fs[1].Output))
	})
}
