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
func Ctx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	tb.Cleanup(cancel)
	return ctx
}

// NewApp returns an executor App on b, with short ack wait and grace so
// that a failing test does not hang, and starts its worker when work is
// true. It is stopped when the test ends.
func NewApp(tb testing.TB, b *bus.Bus, work bool) *executor.App {
	tb.Helper()
	app, err := executor.New(b, &executor.Config{AckWait: 5 * time.Second, GracePeriod: 5 * time.Second})
	require.NoError(tb, err)
	if work {
		require.NoError(tb, app.Start(Ctx(tb)))
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
			defer cancel()
			require.NoError(tb, app.Stop(ctx))
		})
	}
	return app
}

// StartPlugin runs spec with plugins.Start until the test ends.
func StartPlugin(tb testing.TB, b *bus.Bus, spec plugins.Spec) *plugins.Runner {
	tb.Helper()
	r, err := plugins.Start(Ctx(tb), b, spec)
	require.NoError(tb, err)
	StopWithTest(tb, r)
	return r
}

// LocalPlugin runs spec with plugins.Local until the test ends.
func LocalPlugin(tb testing.TB, b *bus.Bus, spec plugins.Spec) *plugins.Runner {
	tb.Helper()
	r, err := plugins.Local(Ctx(tb), b, spec)
	require.NoError(tb, err)
	StopWithTest(tb, r)
	return r
}

// StopWithTest stops r when the test ends.
func StopWithTest(tb testing.TB, r *plugins.Runner) {
	tb.Helper()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
		defer cancel()
		require.NoError(tb, r.Stop(ctx))
	})
}

// Submit submits a task and fails the test on error.
func Submit(tb testing.TB, app *executor.App, name string, input any, opts *executor.SubmitOptions) events.Task {
	tb.Helper()
	task, err := app.Submit(Ctx(tb), name, input, opts)
	require.NoError(tb, err)
	return task
}

// Wait waits for task id's final record.
func Wait(tb testing.TB, app *executor.App, id string) events.Task {
	tb.Helper()
	task, err := app.Wait(Ctx(tb), id)
	require.NoError(tb, err)
	return task
}

// Fact is a fact as read from the log.
type Fact struct {
	Seq   uint64
	Event events.Event
	events.Fact
}

// Facts returns the facts of trigger for task id, in stream order.
func Facts(tb testing.TB, b *bus.Bus, trigger, id string) []Fact {
	tb.Helper()
	var out []Fact
	for _, s := range bustest.EventsOf(tb, b, id, events.FactSubject(trigger, "*")) {
		require.NoError(tb, s.Err, "seq %d", s.Seq)
		var f events.Fact
		require.NoError(tb, json.Unmarshal(s.Event.Data, &f), "seq %d", s.Seq)
		out = append(out, Fact{Seq: s.Seq, Event: s.Event, Fact: f})
	}
	return out
}

// OneFact returns the only fact of trigger for task id.
func OneFact(tb testing.TB, b *bus.Bus, trigger, id string) Fact {
	tb.Helper()
	fs := Facts(tb, b, trigger, id)
	require.Len(tb, fs, 1, "facts of %s for %s", trigger, id)
	return fs[0]
}

// CallOf returns the call of plugin in f, failing the test if there is none.
func CallOf(tb testing.TB, f Fact, plugin string) events.PluginCall {
	tb.Helper()
	for _, c := range f.Calls {
		if c.Plugin == plugin {
			return c
		}
	}
	tb.Fatalf("fact %d (%s) has no call of %s: %+v", f.Seq, f.Event.Trigger, plugin, f.Calls)
	return events.PluginCall{}
}

// WaitFinal waits until task id's n-th final fact (one per attempt) is in
// the log: the task record can be read a moment before its fact is stored.
func WaitFinal(tb testing.TB, b *bus.Bus, id string, n int) {
	tb.Helper()
	bustest.WaitFor(tb, WaitLimit, "final facts of "+id, func() bool {
		return len(Facts(tb, b, events.StorageRemoveFinishedTask, id)) >= n
	})
}

// Projection builds the SQLite projection of b's log as it is now, in a
// file of the test's temporary directory, and opens it for reading.
func Projection(tb testing.TB, b *bus.Bus) *projections.DB {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "qtasks.db")
	_, err := projections.Build(Ctx(tb), b, path, nil)
	require.NoError(tb, err)
	db, err := projections.Open(Ctx(tb), path, &projections.Options{ReadOnly: true})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// WaitQueueEmpty waits until every task message has been acked: each run
// is then over, and every fact it wrote is stored.
func WaitQueueEmpty(tb testing.TB, b *bus.Bus) {
	tb.Helper()
	bustest.WaitFor(tb, WaitLimit, "the task queue to drain", func() bool {
		s, err := b.JetStream().Stream(Ctx(tb), bus.StreamTasks)
		require.NoError(tb, err)
		info, err := s.Info(Ctx(tb))
		require.NoError(tb, err)
		return info.State.Msgs == 0
	})
}
