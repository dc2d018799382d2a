package executor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// waitLimit bounds every wait of these tests: generous, because a loaded
// two-core machine under -race can be slow, and never reached when all is
// well.
const waitLimit = 20 * time.Second

// recv returns the next value of ch, or fails the test after waitLimit.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		panic("unreachable")
	}
}

// submit submits a task and fails the test on error.
func submit(t *testing.T, app *executor.App, name string, input any, opts *executor.SubmitOptions) events.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	sub, err := app.Submit(ctx, name, input, opts)
	require.NoError(t, err)
	return sub
}

// startPlugin runs spec as durable JetStream consumers until the test ends.
func startPlugin(t *testing.T, b *bus.Bus, spec plugins.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	r, err := plugins.Start(ctx, b, spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		require.NoError(t, r.Stop(ctx))
	})
}

// storedFact is a fact as read from the log, with its place there.
type storedFact struct {
	Seq   uint64
	Event events.Event
	Fact  events.Fact
}

// facts returns the facts of trigger for task (or node) id, in stream
// order, whether alone or packed in phase messages (logFacts).
func facts(t *testing.T, b *bus.Bus, trigger, id string) []storedFact {
	t.Helper()
	var out []storedFact
	for _, s := range logFactsOf(t, b, id) {
		if s.Event.Trigger != trigger {
			continue
		}
		var f events.Fact
		require.NoError(t, json.Unmarshal(s.Event.Data, &f), "seq %d", s.Seq)
		out = append(out, storedFact{Seq: s.Seq, Event: s.Event, Fact: f})
	}
	return out
}

// oneFact returns the only fact of trigger for task id.
func oneFact(t *testing.T, b *bus.Bus, trigger, id string) events.Fact {
	t.Helper()
	fs := facts(t, b, trigger, id)
	require.Len(t, fs, 1, "facts of %s for %s", trigger, id)
	return fs[0].Fact
}

// finalModels waits until task id has n final facts
// (storage_remove_finished_task, one per attempt) and returns their models
// in stream order. The final record can be read a moment before its fact is
// stored, hence the wait.
func finalModels(t *testing.T, b *bus.Bus, id string, n int) []events.Task {
	t.Helper()
	var fs []storedFact
	bustest.WaitFor(t, waitLimit, "final facts of "+id, func() bool {
		fs = facts(t, b, events.StorageRemoveFinishedTask, id)
		return len(fs) >= n
	})
	require.Len(t, fs, n, "final facts of %s", id)
	out := make([]events.Task, 0, n)
	for _, f := range fs {
		var in struct {
			Model events.Task `json:"model"`
		}
		require.NoError(t, json.Unmarshal(f.Fact.Input, &in))
		require.Equal(t, id, in.Model.ID)
		out = append(out, in.Model)
	}
	return out
}

// workerTriggers waits until the task's final fact is stored, then returns
// the triggers its workers fired, in stream order.
func workerTriggers(t *testing.T, b *bus.Bus, id string) []string {
	t.Helper()
	finalModels(t, b, id, 1)
	_, w := taskTriggers(t, b, id)
	return w
}

// waitQueueEmpty waits until every task message has been acked (or
// terminated): each run is then over, and every fact it wrote is stored.
func waitQueueEmpty(t *testing.T, b *bus.Bus) {
	t.Helper()
	bustest.WaitFor(t, waitLimit, "the task queue to drain", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		s, err := b.JetStream().Stream(ctx, bus.StreamTasks)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs == 0
	})
}
