package testkit

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
	"github.com/qtasks/qtasks-go/projections"
)

// WaitLimit bounds every wait of the tests: generous, because a loaded
// two-core machine under -race can be slow, and never reached when all is
// well.
const WaitLimit = 30 * time.Second

// Ctx is a context that ends after WaitLimit or with the test.
func Ctx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	t.Cleanup(cancel)
	return ctx
}

// NewApp returns an executor App on b, with short ack wait and grace so
// that a failing test does not hang, and starts its worker when work is
// true. It is stopped when the test ends.
func NewApp(t testing.TB, b *bus.Bus, work bool) *executor.App {
	t.Helper()
	app, err := executor.New(b, &executor.Config{AckWait: 5 * time.Second, GracePeriod: 5 * time.Second})
	require.NoError(t, err)
	if work {
		require.NoError(t, app.Start(Ctx(t)))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
			defer cancel()
			require.NoError(t, app.Stop(ctx))
		})
	}
	return app
}

// StartPlugin runs spec with plugins.Start until the test ends.
func StartPlugin(t testing.TB, b *bus.Bus, spec plugins.Spec) *plugins.Runner {
	t.Helper()
	r, err := plugins.Start(Ctx(t), b, spec)
	require.NoError(t, err)
	StopWithTest(t, r)
	return r
}

// LocalPlugin runs spec with plugins.Local until the test ends.
func LocalPlugin(t testing.TB, b *bus.Bus, spec plugins.Spec) *plugins.Runner {
	t.Helper()
	r, err := plugins.Local(Ctx(t), b, spec)
	require.NoError(t, err)
	StopWithTest(t, r)
	return r
}

// StopWithTest stops r when the test ends.
func StopWithTest(t testing.TB, r *plugins.Runner) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
		defer cancel()
		require.NoError(t, r.Stop(ctx))
	})
}

// Submit submits a task and fails the test on error.
func Submit(t testing.TB, app *executor.App, name string, input any, opts *executor.SubmitOptions) events.Task {
	t.Helper()
	task, err := app.Submit(Ctx(t), name, input, opts)
	require.NoError(t, err)
	return task
}

// Wait waits for task id's final record.
func Wait(t testing.TB, app *executor.App, id string) events.Task {
	t.Helper()
	task, err := app.Wait(Ctx(t), id)
	require.NoError(t, err)
	return task
}

// Fact is a fact as read from the log.
type Fact struct {
	Seq   uint64
	Event events.Event
	events.Fact
}

// Facts returns the facts of trigger for task id, in stream order.
func Facts(t testing.TB, b *bus.Bus, trigger, id string) []Fact {
	t.Helper()
	var out []Fact
	for _, s := range bustest.EventsOf(t, b, id, events.FactSubject(trigger, "*")) {
		require.NoError(t, s.Err, "seq %d", s.Seq)
		var f events.Fact
		require.NoError(t, json.Unmarshal(s.Event.Data, &f), "seq %d", s.Seq)
		out = append(out, Fact{Seq: s.Seq, Event: s.Event, Fact: f})
	}
	return out
}

// OneFact returns the only fact of trigger for task id.
func OneFact(t testing.TB, b *bus.Bus, trigger, id string) Fact {
	t.Helper()
	fs := Facts(t, b, trigger, id)
	require.Len(t, fs, 1, "facts of %s for %s", trigger, id)
	return fs[0]
}

// CallOf returns the call of plugin in f, failing the test if there is none.
func CallOf(t testing.TB, f Fact, plugin string) events.PluginCall {
	t.Helper()
	for _, c := range f.Calls {
		if c.Plugin == plugin {
			return c
		}
	}
	t.Fatalf("fact %d (%s) has no call of %s: %+v", f.Seq, f.Event.Trigger, plugin, f.Calls)
	return events.PluginCall{}
}

// WaitFinal waits until task id's n-th final fact (one per attempt) is in
// the log: the task record can be read a moment before its fact is stored.
func WaitFinal(t testing.TB, b *bus.Bus, id string, n int) {
	t.Helper()
	bustest.WaitFor(t, WaitLimit, "final facts of "+id, func() bool {
		return len(Facts(t, b, events.StorageRemoveFinishedTask, id)) >= n
	})
}

// Projection builds the SQLite projection of b's log as it is now, in a
// file of the test's temporary directory, and opens it for reading.
func Projection(t testing.TB, b *bus.Bus) *projections.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qtasks.db")
	_, err := projections.Build(Ctx(t), b, path, nil)
	require.NoError(t, err)
	db, err := projections.Open(Ctx(t), path, &projections.Options{ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// WaitQueueEmpty waits until every task message has been acked: each run
// is then over, and every fact it wrote is stored.
func WaitQueueEmpty(t testing.TB, b *bus.Bus) {
	t.Helper()
	bustest.WaitFor(t, WaitLimit, "the task queue to drain", func() bool {
		s, err := b.JetStream().Stream(Ctx(t), bus.StreamTasks)
		require.NoError(t, err)
		info, err := s.Info(Ctx(t))
		require.NoError(t, err)
		return info.State.Msgs == 0
	})
}
