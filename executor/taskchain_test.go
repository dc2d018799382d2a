package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// registerAdd registers QTasks' add(*args): the sum of its arguments. runs
// counts its runs by the first argument.
func registerAdd(app *executor.App, runs *sync.Map) {
	executor.MustRegister(app, "add", func(ctx context.Context, in []int) (int, error) {
		if runs != nil {
			n, _ := runs.LoadOrStore(executor.TaskFromContext(ctx).ID, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}
		s := 0
		for _, x := range in {
			s += x
		}
		return s, nil
	}, nil)
	executor.MustRegister(app, "boom", func(_ context.Context, _ []int) (int, error) {
		return 0, errors.New("boom")
	}, nil)
}

func chainEvents(t *testing.T, b *bus.Bus, id string) []events.ChainEvent {
	t.Helper()
	var out []events.ChainEvent
	for _, s := range bustest.Events(t, b, events.ChainSubject("*")) {
		require.NoError(t, s.Err)
		var ce events.ChainEvent
		require.NoError(t, json.Unmarshal(s.Event.Data, &ce))
		require.NoError(t, ce.Check())
		require.Equal(t, ce.TaskID, s.Event.TaskID)
		if ce.Chain == id {
			out = append(out, ce)
		}
	}
	return out
}

// TestChainOfThree runs QTasks' chain example: add(2, 2), add(4), add(8),
// each step given the previous result as its last argument.
func TestChainOfThree(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	registerAdd(app, nil)
	start(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := app.Chain(ctx, executor.Step("add", 2, 2), executor.Step("add", 4), executor.Step("add", 8))
	require.NoError(t, err)
	require.Equal(t, 3, c.Steps)
	require.Equal(t, executor.ChainStepID(c.ID, 0), c.First.ID)
	last, err := app.WaitChain(ctx, c.ID)
	require.NoError(t, err)
	got, err := executor.Result[int](last)
	require.NoError(t, err)
	require.Equal(t, 16, got) // 2+2, then 4+4, then 8+8

	// Linked ids: each step knows its chain and the step before.
	var prev string
	for i, want := range []string{"[2,2]", "[4,4]", "[8,8]"} {
		task, err := app.Get(ctx, executor.ChainStepID(c.ID, i))
		require.NoError(t, err)
		require.JSONEq(t, want, string(task.Args))
		var link events.ChainLink
		require.NoError(t, json.Unmarshal(task.Extra[events.ExtraChain], &link))
		require.Equal(t, c.ID, link.ID)
		require.Equal(t, i, link.Step)
		require.Equal(t, prev, link.Prev)
		prev = task.ID
	}
	// Every step's record, each with its own result.
	res, err := app.WaitChainSteps(ctx, c.ID)
	require.NoError(t, err)
	require.Equal(t, c.ID, res.ID)
	require.Equal(t, events.StatusSuccess, res.Status)
	require.Equal(t, 3, res.Total)
	require.Len(t, res.Steps, 3)
	for i, want := range []int{4, 8, 16} {
		require.Equal(t, executor.ChainStepID(c.ID, i), res.Steps[i].ID)
		require.Equal(t, events.StatusSuccess, res.Steps[i].Status)
		got, err := executor.Result[int](res.Steps[i])
		require.NoError(t, err)
		require.Equal(t, want, got, "step %d", i)
	}
	require.Equal(t, last, res.Last())

	bustest.WaitFor(t, waitLimit, "the chain's end in the log", func() bool { return len(chainEvents(t, b, c.ID)) == 4 })
	ces := chainEvents(t, b, c.ID)
	require.Equal(t, []string{events.ChainStart, events.ChainStep, events.ChainStep, events.ChainEnd},
		[]string{ces[0].Action, ces[1].Action, ces[2].Action, ces[3].Action})
	require.Len(t, ces[0].Specs, 3)
	require.Equal(t, executor.ChainStepID(c.ID, 0), ces[1].Prev)
	require.Equal(t, events.StatusSuccess, ces[3].Status)
	require.Equal(t, last.ID, ces[3].TaskID)
}

// TestChainFails has the second of three steps fail: the chain ends in
// error there, recorded, and the third step is never submitted.
func TestChainFails(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	registerAdd(app, nil)
	start(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := app.Chain(ctx, executor.Step("add", 1), executor.Step("boom"), executor.Step("add", 1))
	require.NoError(t, err)
	failed, err := app.WaitChain(ctx, c.ID)
	var ce *executor.ChainError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 1, ce.Step)
	require.Equal(t, events.StatusError, failed.Status)
	require.Equal(t, executor.ChainStepID(c.ID, 1), failed.ID)
	require.Len(t, ce.Steps, 2, "the steps up to the failed one")
	require.Equal(t, failed, ce.Steps[1])

	// Step by step: the first succeeded with its result, the second
	// failed with its error, the third never ran.
	res, err := app.WaitChainSteps(ctx, c.ID)
	require.ErrorAs(t, err, &ce)
	require.Equal(t, events.StatusError, res.Status)
	require.Equal(t, 3, res.Total)
	require.Len(t, res.Steps, 2)
	first, err := executor.Result[int](res.Steps[0])
	require.NoError(t, err)
	require.Equal(t, 1, first) // add(1): no previous result
	require.Equal(t, events.StatusError, res.Steps[1].Status)
	require.Equal(t, "boom", res.Steps[1].Error)
	require.Equal(t, failed, res.Last())

	bustest.WaitFor(t, waitLimit, "the chain's end in the log", func() bool { return len(chainEvents(t, b, c.ID)) == 3 })
	ces := chainEvents(t, b, c.ID)
	end := ces[2]
	require.Equal(t, events.ChainEnd, end.Action)
	require.Equal(t, events.StatusError, end.Status)
	require.Equal(t, "boom", end.Error)
	require.Equal(t, 1, end.Step)
	_, err = b.GetTaskLatest(ctx, executor.ChainStepID(c.ID, 2))
	require.ErrorIs(t, err, bus.ErrTaskNotFound, "the step after the failed one never ran")

	_, err = app.Chain(ctx)
	require.ErrorIs(t, err, executor.ErrInvalidInput)
	_, err = app.Chain(ctx, executor.Step("bad.name"))
	require.ErrorIs(t, err, executor.ErrInvalidInput)
}

// TestChainSurvivesCrash kills the app that handles a step's final fact
// before it submits the next step, and after it did but before it
// acknowledged the fact: an app started afterwards on the same server
// finishes the chain, and no step runs twice.
func TestChainSurvivesCrash(t *testing.T) {
	t.Parallel()
	for _, when := range []int{0, 1} {
		t.Run([]string{"before submitting", "after submitting"}[when], func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, nil)
			var runs sync.Map
			app1 := newApp(t, b, nil)
			registerAdd(app1, &runs)
			crashed := make(chan struct{})
			var once sync.Once
			executor.SetChainHook(app1, func(w int, _ events.Task) error {
				if w != when {
					return nil
				}
				err := executor.ErrChainCrash
				once.Do(func() { close(crashed) })
				return err
			})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			require.NoError(t, app1.Start(ctx))
			c, err := app1.Chain(ctx, executor.Step("add", 2, 2), executor.Step("add", 4), executor.Step("add", 8))
			require.NoError(t, err)
			recv(t, crashed, "the crash after the first step")
			require.NoError(t, app1.Stop(ctx))

			app2 := newApp(t, bustest.Connect(t, b, nil), nil)
			registerAdd(app2, &runs)
			start(t, app2)
			last, err := app2.WaitChain(ctx, c.ID)
			require.NoError(t, err)
			got, err := executor.Result[int](last)
			require.NoError(t, err)
			require.Equal(t, 16, got)
			for i := range 3 {
				n, ok := runs.Load(executor.ChainStepID(c.ID, i))
				require.True(t, ok, "step %d ran", i)
				require.Equal(t, int32(1), n.(*atomic.Int32).Load(), "step %d ran once", i)
			}
			bustest.WaitFor(t, waitLimit, "the chain's end in the log", func() bool { return len(chainEvents(t, b, c.ID)) >= 4 })
			ces := chainEvents(t, b, c.ID)
			require.Equal(t, []string{events.ChainStart, events.ChainStep, events.ChainStep, events.ChainEnd},
				[]string{ces[0].Action, ces[1].Action, ces[2].Action, ces[3].Action}, "none twice")
			if when == 1 {
				// The redelivered fact is handled again: its step event and
				// submission are duplicates, dropped; nothing else is.
				bustest.WaitFor(t, waitLimit, "the redelivered fact to be handled", func() bool { return chainAcked(t, b) })
				require.Len(t, chainEvents(t, b, c.ID), 4)
			}
		})
	}
}

// TestChainStartedAfterTheWorker has a worker started before any chain
// exists: it does not consume final facts then (no chain consumer), and
// still advances a chain that another app, never started, starts later,
// woken by the chain's start on the bus; and an app that missed that
// wake-up finds the consumer by looking again.
func TestChainStartedAfterTheWorker(t *testing.T) {
	t.Parallel()
	t.Run("woken by the chain", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		worker := newApp(t, b, nil)
		registerAdd(worker, nil)
		start(t, worker)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		_, err := worker.Submit(ctx, "add", nil, &executor.SubmitOptions{Args: []any{1, 1}})
		require.NoError(t, err)
		_, err = b.EventStream().Consumer(ctx, executor.ChainConsumer)
		require.ErrorIs(t, err, jetstream.ErrConsumerNotFound, "no chain, no chain consumer")

		client := newApp(t, bustest.Connect(t, b, nil), nil)
		registerAdd(client, nil)
		c, err := client.Chain(ctx, executor.Step("add", 2, 2), executor.Step("add", 4), executor.Step("add", 8))
		require.NoError(t, err)
		last, err := client.WaitChain(ctx, c.ID)
		require.NoError(t, err)
		got, err := executor.Result[int](last)
		require.NoError(t, err)
		require.Equal(t, 16, got)
	})
	t.Run("looking again", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		worker := newApp(t, b, &executor.Config{AckWait: 3 * time.Second}) // looks every second
		start(t, worker)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		// The consumer made with no chain event to wake the worker.
		c, err := b.EventStream().CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: executor.ChainConsumer, FilterSubject: events.FactSubject(events.StorageRemoveFinishedTask, "*"),
			DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 3 * time.Second, MaxDeliver: -1,
		})
		require.NoError(t, err)
		bustest.WaitFor(t, waitLimit, "the worker to pull from the chain consumer", func() bool {
			info, err := c.Info(ctx)
			return err == nil && info.NumWaiting > 0
		})
	})
}

// chainAcked reports whether the chain consumer has no fact pending or
// unacknowledged.
func chainAcked(t *testing.T, b *bus.Bus) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := b.EventStream().Consumer(ctx, executor.ChainConsumer)
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	return info.NumPending == 0 && info.NumAckPending == 0
}

// TestChainResumedByOperatorRetry fails a chain at its second step, then
// has an operator retry that step: its success submits the third step, and
// the chain ends in success, recorded after the first end.
func TestChainResumedByOperatorRetry(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	registerAdd(app, nil)
	var failed atomic.Bool
	executor.MustRegister(app, "once", func(_ context.Context, in []int) (int, error) {
		if failed.CompareAndSwap(false, true) {
			return 0, errors.New("first time")
		}
		return in[0] * 10, nil
	}, nil)
	start(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := app.Chain(ctx, executor.Step("add", 1, 2), executor.Step("once"), executor.Step("add", 5))
	require.NoError(t, err)
	_, err = app.WaitChain(ctx, c.ID)
	var ce *executor.ChainError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 1, ce.Step)

	_, err = app.Retry(ctx, executor.ChainStepID(c.ID, 1), executor.Action{By: "ops", Reason: "fixed"})
	require.NoError(t, err)
	last, err := app.WaitChain(ctx, c.ID)
	require.NoError(t, err)
	got, err := executor.Result[int](last)
	require.NoError(t, err)
	require.Equal(t, 35, got) // (1+2)*10, then 5+30

	bustest.WaitFor(t, waitLimit, "the chain's second end", func() bool { return len(chainEvents(t, b, c.ID)) == 5 })
	var actions, statuses []string
	for _, e := range chainEvents(t, b, c.ID) {
		actions, statuses = append(actions, e.Action), append(statuses, e.Status)
	}
	require.Equal(t, []string{"start", "step", "end", "step", "end"}, actions)
	require.Equal(t, []string{"", "", events.StatusError, "", events.StatusSuccess}, statuses)

	// The failed step is the last: the chain ends twice at the same step,
	// once per attempt, both recorded.
	failed.Store(false)
	c, err = app.Chain(ctx, executor.Step("add", 1), executor.Step("once"))
	require.NoError(t, err)
	_, err = app.WaitChain(ctx, c.ID)
	require.ErrorAs(t, err, &ce)
	bustest.WaitFor(t, waitLimit, "the chain's first end", func() bool { return len(chainEvents(t, b, c.ID)) == 3 })
	_, err = app.Retry(ctx, executor.ChainStepID(c.ID, 1), executor.Action{By: "ops"})
	require.NoError(t, err)
	last, err = app.WaitChain(ctx, c.ID)
	require.NoError(t, err)
	got, err = executor.Result[int](last)
	require.NoError(t, err)
	require.Equal(t, 10, got)
	bustest.WaitFor(t, waitLimit, "the chain's second end", func() bool { return len(chainEvents(t, b, c.ID)) == 4 })
	ends := chainEvents(t, b, c.ID)[2:]
	require.Equal(t, []string{events.StatusError, events.StatusSuccess}, []string{ends[0].Status, ends[1].Status})
}
