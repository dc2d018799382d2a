package executor_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// After kill -9 of a single server the worker consumer could come back
// without its delivery counts, and a resumed run was run 1 again: its facts
// repeated the first run's ce-ids. Here the consumer is deleted between the
// runs, which loses the counts the same way. The run number comes from the
// task record now.
func TestRunNumbersSurviveALostDeliveryCount(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	var calls atomic.Int32
	started := make(chan struct{}, 1)
	register := func(app *executor.App) {
		executor.MustRegister(app, "add", func(ctx context.Context, in addArgs) (int, error) {
			if calls.Add(1) == 1 {
				started <- struct{}{}
				<-ctx.Done() // the first run is interrupted
				return 0, ctx.Err()
			}
			return in.A + in.B, nil
		}, nil)
	}
	first := newApp(t, b, &executor.Config{GracePeriod: time.Millisecond})
	register(first)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, first.Start(ctx))
	task := submit(t, first, "add", addArgs{A: 1, B: 2}, nil)
	recv(t, started, "the first run")
	require.NoError(t, first.Stop(ctx))
	require.NoError(t, b.JetStream().DeleteConsumer(ctx, bus.StreamTasks, "workers-"+executor.DefaultQueue))

	second := newApp(t, b, nil)
	register(second)
	start(t, second)
	got := waitTask(t, second, task.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	require.Equal(t, 2, got.Run)
	waitQueueEmpty(t, b)

	seen := map[string]uint64{}
	runs := map[int]bool{}
	for _, s := range bustest.EventsOf(t, b, task.ID) {
		require.NoError(t, s.Err)
		if prev, dup := seen[s.Event.ID]; dup {
			t.Fatalf("ce-id %s at sequences %d and %d", s.Event.ID, prev, s.Seq)
		}
		seen[s.Event.ID] = s.Seq
		runs[s.Event.Run] = true
	}
	require.Equal(t, map[int]bool{0: true, 1: true, 2: true}, runs, "submission, the interrupted run, the resumed one")
}

// A task still running in a live worker, delivered again (its consumer
// recreated without its state), ran again as run 1 with the first run's
// ids. The second run gets a number of its own, and the attempt one final
// record.
func TestRunDeliveredAgainWhileRunning(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	var calls atomic.Int32
	started, release := make(chan struct{}, 1), make(chan struct{})
	register := func(app *executor.App) {
		executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) {
			if calls.Add(1) == 1 {
				started <- struct{}{}
				<-release
			}
			return in.A + in.B, nil
		}, nil)
	}
	first := newApp(t, b, nil)
	register(first)
	start(t, first)
	task := submit(t, first, "add", addArgs{A: 1, B: 2}, nil)
	recv(t, started, "the first run")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.JetStream().DeleteConsumer(ctx, bus.StreamTasks, "workers-"+executor.DefaultQueue))

	second := newApp(t, b, nil)
	register(second)
	start(t, second)
	got := waitTask(t, second, task.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	close(release)
	bustest.WaitFor(t, waitLimit, "the first run to end", func() bool {
		return len(facts(t, b, events.WorkerExecuteAfter, task.ID)) == 2
	})
	seen := map[string]bool{}
	for _, s := range bustest.EventsOf(t, b, task.ID) {
		require.False(t, seen[s.Event.ID], "ce-id %s twice", s.Event.ID)
		seen[s.Event.ID] = true
	}
	require.Len(t, finalModels(t, b, task.ID, 1), 1)
}

// On a cluster a direct get of the task bucket is answered by any replica,
// which may lag its leader: intake read a task just created as "not found",
// or an attempt another run had finished as still open ("attempt decided by
// another run", "task not found" with no fault injected). The reads that
// decide go to the leader; a run of a task with an idempotency key makes no
// direct get at all.
func TestDecidingReadsAskTheLeader(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	// Through a connection to the server, as on a cluster: a bus that runs
	// the embedded server itself (a single server) reads its one store
	// directly (bus.GetTaskLatest).
	w := addWorker(t, bustest.Connect(t, b, nil))
	var direct, leader atomic.Int32
	kvStream := "KV_" + bus.BucketTasks
	sub1, err := b.Conn().Subscribe("$JS.API.DIRECT.GET."+kvStream+".>", func(*nats.Msg) { direct.Add(1) })
	require.NoError(t, err)
	defer func() { require.NoError(t, sub1.Unsubscribe()) }()
	sub2, err := b.Conn().Subscribe("$JS.API.STREAM.MSG.GET."+kvStream, func(*nats.Msg) { leader.Add(1) })
	require.NoError(t, err)
	defer func() { require.NoError(t, sub2.Unsubscribe()) }()
	require.NoError(t, b.Conn().Flush())

	task := submit(t, w, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: "leader-reads"})
	require.Equal(t, events.StatusSuccess, waitTask(t, w, task.ID).Status)
	waitQueueEmpty(t, b)
	require.NoError(t, b.Conn().Flush())
	require.Zero(t, direct.Load(), "direct gets of the task bucket")
	require.Positive(t, leader.Load(), "reads from the leader")
}

// A worker that stored an attempt's final fact and died before it updated
// the record and acked left the attempt to the next worker, which counted
// it in qtasks_tasks_finished_total again (and, when the server had lost
// the delivery count too, ran the task again before finding it decided).
// Only the process whose final fact was stored first counts the attempt;
// the next one completes the bookkeeping without running the task.
func TestFinishedCountedOnceAcrossARestart(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	// What the dead worker left: the record in process (run 1), the task
	// message, and its final fact.
	now := time.Now().UTC()
	task := events.Task{
		ID: "crashed-after-final", Name: "add", Queue: executor.DefaultQueue, Status: events.StatusProcess,
		Attempt: 1, Run: 1, Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":1,"b":2}`), CreatedAt: now, UpdatedAt: now,
	}
	_, _, err := b.CreateTask(ctx, task)
	require.NoError(t, err)
	queued := task
	queued.Status, queued.Run = events.StatusNew, 0
	require.NoError(t, b.Enqueue(ctx, queued, "test"))
	final := task
	final.Status, final.Result = events.StatusSuccess, json.RawMessage(`3`)
	fact := events.Fact{Input: json.RawMessage(`{"model":` + string(mustMarshal(t, final)) + `}`)}
	data, err := fact.AppendJSON(nil)
	require.NoError(t, err)
	id := events.FinalMsgID(task.ID, 1)
	ev := events.Event{
		ID: id, Source: "qtasks/dead-worker", Type: events.TypeTriggerPrefix + events.StorageRemoveFinishedTask,
		Subject: task.ID, Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: data, TaskID: task.ID,
		TaskName: task.Name, Trigger: events.StorageRemoveFinishedTask, Attempt: 1, Run: 1,
	}
	_, err = b.Publish(ctx, events.FactSubject(events.StorageRemoveFinishedTask, executor.DefaultQueue), id, &ev)
	require.NoError(t, err)

	reg := prometheus.NewRegistry()
	app := newApp(t, b, &executor.Config{Metrics: reg})
	var calls atomic.Int32
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { calls.Add(1); return in.A + in.B, nil }, nil)
	start(t, app)
	require.Equal(t, events.StatusSuccess, waitTask(t, app, task.ID).Status)
	waitQueueEmpty(t, b)
	require.Zero(t, calls.Load(), "the attempt was decided: the task does not run again")
	require.Zero(t, counter(t, reg, "qtasks_tasks_finished_total", executor.DefaultQueue, "add", events.StatusSuccess))
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
