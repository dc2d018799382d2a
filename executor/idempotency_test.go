package executor_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// Submitting twice with the same IdempotencyKey, one after the other or at
// the same time, creates one task: the same id, one run of the function,
// one storage_add fact.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()

	setup := func(t *testing.T) (*executor.App, *runCounter) {
		t.Helper()
		b := bustest.Open(t, nil)
		app := newApp(t, b, nil)
		runs := &runCounter{n: map[string]int{}}
		executor.MustRegister(app, "once", func(ctx context.Context, in addArgs) (int, error) {
			runs.add(executor.TaskFromContext(ctx).ID)
			return in.A + in.B, nil
		}, nil)
		start(t, app)
		return app, runs
	}
	// check waits until the task is done and its queue is empty (so that no
	// second message can still be waiting), then checks it ran once.
	check := func(t *testing.T, app *executor.App, runs *runCounter, id string) {
		t.Helper()
		got := waitTask(t, app, id)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.JSONEq(t, `3`, string(got.Result))
		b := app.Bus()
		finalModels(t, b, id, 1)
		waitQueueEmpty(t, b)
		require.Equal(t, 1, runs.get(id))
		require.Len(t, facts(t, b, events.StorageAdd, id), 1)
		require.Len(t, facts(t, b, events.WorkerExecuteBefore, id), 1)
		// A resubmission after the end still returns the finished task.
		again := submit(t, app, "once", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: "order-1"})
		require.Equal(t, id, again.ID)
		require.Equal(t, events.StatusSuccess, again.Status)
		require.Equal(t, 1, runs.get(id))
		require.Len(t, facts(t, b, events.StorageAdd, id), 1)
	}

	t.Run("Sequential", func(t *testing.T) {
		t.Parallel()
		app, runs := setup(t)
		opts := &executor.SubmitOptions{IdempotencyKey: "order-1"}
		first := submit(t, app, "once", addArgs{A: 1, B: 2}, opts)
		second := submit(t, app, "once", addArgs{A: 1, B: 2}, opts)
		require.Equal(t, first.ID, second.ID)
		// A different key is a different task.
		third := submit(t, app, "once", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: "order-2"})
		require.NotEqual(t, first.ID, third.ID)
		require.Equal(t, events.StatusSuccess, waitTask(t, app, third.ID).Status)
		require.Equal(t, 1, runs.get(third.ID))
		check(t, app, runs, first.ID)
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		app, runs := setup(t)
		var (
			wg    sync.WaitGroup
			ready = make(chan struct{})
			ids   [2]string
			errs  [2]error
		)
		for i := range 2 {
			wg.Go(func() {
				<-ready
				sub, err := app.Submit(context.Background(), "once", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: "order-1"})
				ids[i], errs[i] = sub.ID, err
			})
		}
		close(ready)
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		require.NotEmpty(t, ids[0])
		require.Equal(t, ids[0], ids[1])
		check(t, app, runs, ids[0])
	})

	// The second submission starts while the first is inside its submission
	// triggers, held by a mutator: both carry the same task id, so their
	// invocations have the same id.
	t.Run("ConcurrentWithMutator", func(t *testing.T) {
		t.Parallel()
		app, runs := setup(t)
		called := make(chan string, 2)
		release := make(chan struct{})
		startPlugin(t, app.Bus(), plugins.Spec{
			Name: "gate", Version: "1", Triggers: []string{events.QTasksAddTaskBeforeBroker},
			Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
				called <- c.TaskID
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
			}),
		})
		type res struct {
			task events.Task
			err  error
		}
		results := make(chan res, 2)
		submitAsync := func() {
			go func() {
				sub, err := app.Submit(context.Background(), "once", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: "order-1"})
				results <- res{sub, err}
			}()
		}
		submitAsync()
		id := recv(t, called, "the first submission's invocation")
		submitAsync()
		close(release)
		r1, r2 := recv(t, results, "a submission"), recv(t, results, "the other submission")
		require.NoError(t, r1.err)
		require.NoError(t, r2.err)
		require.Equal(t, id, r1.task.ID)
		require.Equal(t, id, r2.task.ID)
		check(t, app, runs, id)
		require.Len(t, facts(t, app.Bus(), events.QTasksAddTaskBeforeBroker, id), 1)
	})
}

// runCounter counts the runs of each task id.
type runCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *runCounter) add(id string) {
	c.mu.Lock()
	c.n[id]++
	c.mu.Unlock()
}

func (c *runCounter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// A submission whose task message cannot be queued takes its record back:
// otherwise the record would never run, and a resubmission of the key would
// return it as accepted.
func TestSubmitUnqueuedLeavesNoRecord(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	opts := &executor.SubmitOptions{IdempotencyKey: "order-42"}

	// Nothing can be queued while the task stream is gone.
	require.NoError(t, b.JetStream().DeleteStream(ctx, bus.StreamTasks))
	// The bus asks again until the deadline (no stream answers, as during
	// an election): a short one.
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	_, err := app.Submit(short, "add", addArgs{A: 1, B: 2}, opts)
	cancelShort()
	require.Error(t, err)
	require.NotErrorIs(t, err, executor.ErrOutcomeUnknown, "nothing was stored: it says not queued")
	added := bustest.Events(t, b, events.FactSubject(events.StorageAdd, "*"))
	require.Len(t, added, 1, "the submission got as far as the record")
	_, err = b.GetTask(ctx, added[0].Event.TaskID)
	require.ErrorIs(t, err, bus.ErrTaskNotFound, "and took it back")

	// Back to normal (another executor provisions the stream again), the
	// same key is a new submission, and it runs.
	bustest.Open(t, &bus.Config{URL: b.ClientURL()})
	start(t, app)
	sub := submit(t, app, "add", addArgs{A: 1, B: 2}, opts)
	require.Equal(t, added[0].Event.TaskID, sub.ID)
	got := waitTask(t, app, sub.ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
}

// The pipelined submission (a generated key: record, task message and the
// facts so far published at once): a task message refused leaves no
// record, no fact after the broker, and storage_add's fact written as
// failed; the caller gets an error that means not queued.
func TestPipelinedSubmissionNotQueued(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	require.NoError(t, b.JetStream().DeleteStream(ctx, bus.StreamTasks))
	_, err := app.Submit(ctx, "add", addArgs{A: 1, B: 2}, nil)
	require.Error(t, err)
	require.NotErrorIs(t, err, executor.ErrOutcomeUnknown, "a refused task message is surely not queued")

	all := logFacts(t, b)
	require.NotEmpty(t, all)
	id := all[0].Event.TaskID
	var triggers []string
	for _, f := range all {
		require.Equal(t, id, f.Event.TaskID)
		triggers = append(triggers, f.Event.Trigger)
	}
	require.Equal(t, []string{events.QTasksAddTaskBeforeBroker, events.BrokerAddBefore, events.StorageAdd}, triggers,
		"no fact of the queued phase for a task never queued")
	var added events.Fact
	require.NoError(t, json.Unmarshal(all[2].Event.Data, &added))
	require.Contains(t, added.Failed, "not queued")
	_, err = b.GetTaskLatest(ctx, id)
	require.ErrorIs(t, err, bus.ErrTaskNotFound, "the record is taken back")
}
