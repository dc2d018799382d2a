package executor_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// registerBlocking registers task "block" on app: each run sends the id of
// app's node to started, then waits for release (or its cancellation).
func registerBlocking(app *executor.App, started chan<- string, release <-chan struct{}) {
	executor.MustRegister(app, "block", func(ctx context.Context, _ struct{}) (int, error) {
		started <- app.NodeID()
		select {
		case <-release:
			return 0, nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}, nil)
}

// workerConsumer returns the state of the consumer of queue's workers.
func workerConsumer(t *testing.T, b *bus.Bus, queue string) (ackPending, pending int) {
	t.Helper()
	cons, err := b.JetStream().Consumer(ctxFor(t), bus.StreamTasks, "workers-"+queue)
	require.NoError(t, err)
	info, err := cons.Info(ctxFor(t))
	require.NoError(t, err)
	return info.NumAckPending, int(info.NumPending) //nolint:gosec // G115: a handful of test messages
}

// A worker holds at most Concurrency+Prefetch of the tasks it pulled,
// counting any the client library buffers: the others stay in the queue,
// and a second worker runs them while the first one's tasks are blocked.
// (The worker once pulled through an iterator that buffered up to
// Concurrency more: those waited out the ack wait.)
func TestPrefetchBoundsHeldTasks(t *testing.T) {
	t.Parallel()
	const conc, prefetch, total = 2, 1, 7
	b := bustest.Open(t, nil)
	release := make(chan struct{})
	started := make(chan string, total)
	// An ack wait longer than every wait here: a task a worker holds
	// beyond its bound cannot come back to the queue by it in time.
	first := newApp(t, b, &executor.Config{Queue: "q", Concurrency: conc, Prefetch: prefetch, AckWait: time.Minute})
	registerBlocking(first, started, release)
	var ids []string
	for range total {
		ids = append(ids, submit(t, first, "block", nil, nil).ID)
	}
	start(t, first)
	letGo := sync.OnceFunc(func() { close(release) })
	defer letGo() // before the cleanups' Stop, if the test fails

	for range conc {
		require.Equal(t, first.NodeID(), recv(t, started, "the first worker's tasks to start"))
	}
	bustest.WaitFor(t, waitLimit, "the first worker to hold its prefetch", func() bool { return executor.Held(first) == prefetch })
	ackPending, pending := workerConsumer(t, b, "q")
	require.Equal(t, conc+prefetch, ackPending, "tasks delivered and not acked: only those the worker runs or holds")
	require.Equal(t, total-conc-prefetch, pending, "the other tasks are still in the queue")

	second := newApp(t, b, &executor.Config{Queue: "q", Concurrency: total, Prefetch: -1, AckWait: time.Minute})
	registerBlocking(second, started, release)
	start(t, second)
	for range total - conc - prefetch {
		require.Equal(t, second.NodeID(), recv(t, started, "the second worker to start the tasks the first one does not hold"))
	}
	require.Equal(t, prefetch, executor.Held(first))
	ackPending, pending = workerConsumer(t, b, "q")
	require.Equal(t, total, ackPending)
	require.Zero(t, pending)

	letGo()
	for _, id := range ids {
		require.Equal(t, events.StatusSuccess, waitTask(t, first, id).Status)
	}
}

// With no prefetch (a negative Prefetch), a worker pulls a task only when
// it can start it: a long task on one worker of concurrency 1 does not keep
// the next task from running at once on another, idle one. (With any
// prefetch, the busy worker may pull the task and hold it behind the long
// one: Celery's -Ofair problem.)
func TestNoPrefetchLeavesTasksToIdleWorkers(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	release := make(chan struct{})
	started := make(chan string, 4)
	var apps []*executor.App
	for range 2 {
		app := newApp(t, b, &executor.Config{Queue: "long", Concurrency: 1, Prefetch: -1, AckWait: time.Minute})
		registerBlocking(app, started, release)
		executor.MustRegister(app, "short", func(_ context.Context, _ struct{}) (int, error) { return 1, nil }, nil)
		start(t, app)
		apps = append(apps, app)
	}
	defer close(release)

	for round := range 3 { // each round, whichever worker is idle takes the short task
		long := submit(t, apps[0], "block", nil, nil)
		busy := recv(t, started, "the long task to start")
		short := submit(t, apps[0], "short", nil, nil)
		got := waitTask(t, apps[0], short.ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.NotEqual(t, busy, got.Worker, "round %d: the short task ran on the idle worker, while the long one runs", round)
		release <- struct{}{}
		require.Equal(t, events.StatusSuccess, waitTask(t, apps[0], long.ID).Status)
	}
}

// A worker whose connection breaks pulls again once it is back: its pull
// request under way may be lost with the old connection.
func TestWorkerPullsAfterReconnect(t *testing.T) {
	t.Parallel()
	b, srv, p := proxied(t)
	register := func(app *executor.App) {
		executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	}
	w := newApp(t, b, &executor.Config{Concurrency: 1, Prefetch: -1})
	register(w)
	start(t, w)
	p.Cut()
	bustest.WaitFor(t, waitLimit, "the reconnection", func() bool { return b.ConnStats().Reconnects == 1 })

	client := newApp(t, srv, nil) // no worker: only w runs tasks
	register(client)
	got := waitTask(t, client, submit(t, client, "add", addArgs{A: 1, B: 2}, nil).ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.Equal(t, w.NodeID(), got.Worker)
}
