package retry_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins"
)

// The helpers of the test kit, under this package's names.
const waitLimit = testkit.WaitLimit

func testCtx(t *testing.T) context.Context {
	t.Helper()
	return testkit.Ctx(t)
}

func newApp(t *testing.T, b *bus.Bus) *executor.App {
	t.Helper()
	return testkit.NewApp(t, b, false)
}

func startApp(t *testing.T, app *executor.App) {
	t.Helper()
	require.NoError(t, app.Start(testCtx(t)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		require.NoError(t, app.Stop(ctx))
	})
}

// runPlugin runs spec in-process (plugins.Local) or as durable consumers
// on a second connection, as a plugin in another process would.
func runPlugin(t *testing.T, b *bus.Bus, spec plugins.Spec, local bool) {
	t.Helper()
	var r *plugins.Runner
	var err error
	if local {
		r, err = plugins.Local(testCtx(t), b, spec)
	} else {
		r, err = plugins.Start(testCtx(t), bustest.Connect(t, b, nil), spec)
	}
	require.NoError(t, err)
	// The executor's bus learns of the registration through its own watch.
	require.NoError(t, b.Registry().WaitFor(testCtx(t), spec.Name, spec.Version))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		require.NoError(t, r.Stop(ctx))
	})
}

func submitAndWait(t *testing.T, app *executor.App, name string) events.Task {
	t.Helper()
	return testkit.Wait(t, app, testkit.Submit(t, app, name, nil, nil).ID)
}

type storedFact struct {
	Event events.Event
	Fact  events.Fact
}

// factsOf returns the facts of task id on subjects, in stream order.
func factsOf(t *testing.T, b *bus.Bus, id string, subjects ...string) []storedFact {
	t.Helper()
	var out []storedFact
	for _, s := range bustest.EventsOf(t, b, id, subjects...) {
		require.NoError(t, s.Err, "seq %d", s.Seq)
		var f events.Fact
		require.NoError(t, json.Unmarshal(s.Event.Data, &f), "seq %d", s.Seq)
		out = append(out, storedFact{Event: s.Event, Fact: f})
	}
	return out
}

// taskFacts returns every fact of task id, in stream order.
func taskFacts(t *testing.T, b *bus.Bus, id string) []storedFact {
	t.Helper()
	return factsOf(t, b, id, events.SubjectTrigger+".>")
}

// finalModels waits until task id has n final facts (one per attempt) and
// returns their models in order. Wait returns on the task record, which
// follows its final fact: the wait is short.
func finalModels(t *testing.T, b *bus.Bus, id string, n int) []events.Task {
	t.Helper()
	var fs []storedFact
	bustest.WaitFor(t, waitLimit, "final facts of "+id, func() bool {
		fs = factsOf(t, b, id, events.FactSubject(events.StorageRemoveFinishedTask, "*"))
		return len(fs) >= n
	})
	require.Len(t, fs, n, "final facts of %s", id)
	out := make([]events.Task, 0, n)
	for _, f := range fs {
		out = append(out, model(t, f.Fact.Input))
	}
	return out
}

func model(t *testing.T, payload json.RawMessage) events.Task {
	t.Helper()
	var in struct {
		Model events.Task `json:"model"`
	}
	require.NoError(t, json.Unmarshal(payload, &in))
	return in.Model
}
