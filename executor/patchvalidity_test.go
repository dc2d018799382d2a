package executor_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A patch whose ce-plugin or ce-trigger differs from its subject's tokens
// is one the projection rejects (events.ValidatePatch): the executor must
// record it rejected too, not apply it. Before, the fact said applied while
// the projection listed the same event as rejected.
func TestPatchAttributesMustMatchItsSubject(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "echo", func(_ context.Context, kw map[string]any) (map[string]any, error) {
		return kw, nil
	}, nil)
	start(t, app)

	// A plugin on raw NATS that answers on its own subject, with the
	// attribute named by the task's "lie" argument altered.
	p := events.PluginInfo{
		Name: "liar", Version: "1", Mode: events.ModeMutator, Policy: events.PolicyIgnore,
		Triggers: []string{events.TaskExecutorArgsReplace}, TimeoutMS: 10000,
	}
	pb := bustest.Connect(t, b, &bus.Config{Name: "liar"})
	sub, err := pb.Conn().Subscribe(events.InvokeSubject(p.Name, events.TaskExecutorArgsReplace), func(m *nats.Msg) {
		inv, err := events.Decode(events.Headers(m.Header), m.Data)
		if err != nil {
			return
		}
		var payload struct {
			Kw map[string]any `json:"kw"`
		}
		_ = json.Unmarshal(inv.Data, &payload)
		patch := events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"kw":{"patched":true}}`)}
		bus.FillPatch(&patch, p, inv)
		switch payload.Kw["lie"] {
		case "trigger":
			patch.Trigger = events.TaskExecutorRunTask
		case "plugin":
			patch.Plugin = "someone-else"
		}
		_, _ = pb.PublishAsync(events.PatchSubject(p.Name, inv.Trigger), "", &patch)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	_, err = b.Registry().Register(ctx, p)
	require.NoError(t, err)
	require.NoError(t, b.Registry().WaitFor(ctx, p.Name, ""))

	for _, lie := range []string{"trigger", "plugin", "none"} {
		task := submit(t, app, "echo", map[string]any{"lie": lie}, nil)
		final := waitTask(t, app, task.ID)
		require.Equal(t, events.StatusSuccess, final.Status, final.Error)
		got, err := executor.Result[map[string]any](final)
		require.NoError(t, err)
		f := oneFact(t, b, events.TaskExecutorArgsReplace, task.ID)
		require.Len(t, f.Calls, 1)
		c := f.Calls[0]
		if lie == "none" {
			require.Equal(t, events.OutcomeApplied, c.Outcome, c.Reason)
			require.Equal(t, true, got["patched"])
			continue
		}
		require.Equal(t, events.OutcomeRejected, c.Outcome, "lie about the %s", lie)
		require.Contains(t, c.Reason, lie+" attribute")
		require.NotContains(t, got, "patched", "a rejected patch changed the task")
	}
}
