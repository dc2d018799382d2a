package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

var errTransient = errors.New("transient")

// The branches of a task's life (QTASKS-SPEC §2.6) besides plain success.
func TestBranches(t *testing.T) {
	t.Parallel()

	// setup returns a worker app on a bus of its own; register tasks, then
	// call start.
	setup := func(t *testing.T, cfg *executor.Config) (*executor.App, *bus.Bus) {
		t.Helper()
		b := bustest.Open(t, nil)
		return newApp(t, b, cfg), b
	}

	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		app, b := setup(t, nil)
		// Retries left do not matter: a cancel is never retried.
		executor.MustRegister(app, "quit", func(_ context.Context, _ struct{}) (int, error) {
			return 0, executor.Cancel("nope")
		}, &executor.TaskOptions{Retry: 2})
		executor.MustRegister(app, "quietly", func(_ context.Context, _ struct{}) (int, error) {
			return 0, fmt.Errorf("giving up: %w", executor.Cancel(""))
		}, nil)
		start(t, app)

		got := waitTask(t, app, submit(t, app, "quit", nil, nil).ID)
		require.Equal(t, events.StatusCancel, got.Status)
		require.Equal(t, "nope", got.Error)
		require.Equal(t, 1, got.Attempt)
		_, err := executor.Result[int](got)
		var te *executor.TaskError
		require.ErrorAs(t, err, &te)
		require.Equal(t, events.StatusCancel, te.Status)

		w := workerTriggers(t, b, got.ID)
		require.Contains(t, w, events.TaskExecutorTaskClose)
		require.NotContains(t, w, events.WorkerTaskErrorRetry)
		require.NotContains(t, w, events.TaskExecutorAfterExecute)
		closeIn := oneFact(t, b, events.TaskExecutorTaskClose, got.ID).Input
		require.Equal(t, events.StatusCancel, readString(t, closeIn, "status"))
		final := finalModels(t, b, got.ID, 1)[0]
		require.Equal(t, events.StatusCancel, final.Status)
		require.Equal(t, "nope", final.Error)

		// No reason: "<task name>.cancel", as in QTasks; wrapping is fine.
		got = waitTask(t, app, submit(t, app, "quietly", nil, nil).ID)
		require.Equal(t, events.StatusCancel, got.Status)
		require.Equal(t, "quietly.cancel", got.Error)
	})

	t.Run("Retry", func(t *testing.T) {
		t.Parallel()
		app, b := setup(t, nil)
		executor.MustRegister(app, "flaky", func(ctx context.Context, _ struct{}) (string, error) {
			if n := executor.TaskFromContext(ctx).Attempt; n < 3 {
				return "", fmt.Errorf("attempt %d failed", n)
			}
			return "third time lucky", nil
		}, &executor.TaskOptions{Retry: 2})
		start(t, app)

		sub := submit(t, app, "flaky", nil, nil)
		require.Equal(t, 2, sub.Retry)
		got := waitTask(t, app, sub.ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.Equal(t, 3, got.Attempt)
		require.Equal(t, sub.ID, got.ID)
		s, err := executor.Result[string](got)
		require.NoError(t, err)
		require.Equal(t, "third time lucky", s)

		finals := finalModels(t, b, sub.ID, 3)
		var statuses []string
		for i, m := range finals {
			statuses = append(statuses, m.Status)
			require.Equal(t, i+1, m.Attempt)
		}
		require.Equal(t, []string{events.StatusRetry, events.StatusRetry, events.StatusSuccess}, statuses)
		require.Equal(t, "attempt 1 failed", finals[0].Error)
		require.Equal(t, 1, finals[0].Retry)
		require.Equal(t, sub.ID+"#2", finals[0].RetryChild)
		require.Equal(t, "attempt 2 failed", finals[1].Error)
		require.Equal(t, 0, finals[1].Retry)
		require.Equal(t, sub.ID+"#2", finals[2].RetryParent)
		require.Len(t, facts(t, b, events.WorkerTaskErrorRetry, sub.ID), 2)
	})

	t.Run("RetryOn", func(t *testing.T) {
		t.Parallel()
		app, b := setup(t, nil)
		executor.MustRegister(app, "picky", func(ctx context.Context, _ struct{}) (int, error) {
			if executor.TaskFromContext(ctx).Attempt == 1 {
				return 0, fmt.Errorf("connecting: %w", errTransient)
			}
			return 0, errors.New("permanent")
		}, &executor.TaskOptions{Retry: 2, RetryOn: []error{errTransient}})
		start(t, app)

		sub := submit(t, app, "picky", nil, nil)
		got := waitTask(t, app, sub.ID)
		require.Equal(t, events.StatusError, got.Status)
		require.Equal(t, 2, got.Attempt, "the transient error is retried, the other one is not")
		require.Equal(t, "permanent", got.Error)
		finals := finalModels(t, b, sub.ID, 2)
		require.Equal(t, events.StatusRetry, finals[0].Status)
		require.Equal(t, events.StatusError, finals[1].Status)
		require.Equal(t, 1, finals[1].Retry, "a retry is left unused")
		require.Len(t, facts(t, b, events.WorkerTaskErrorRetry, sub.ID), 1)
	})

	t.Run("MaxTime", func(t *testing.T) {
		t.Parallel()
		app, b := setup(t, nil)
		executor.MustRegister(app, "slow", func(ctx context.Context, _ struct{}) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		}, &executor.TaskOptions{MaxTime: 200 * time.Millisecond})
		// A function that ignores its context is abandoned at the limit.
		stuck := make(chan struct{})
		t.Cleanup(func() { close(stuck) })
		executor.MustRegister(app, "stubborn", func(_ context.Context, _ struct{}) (int, error) {
			<-stuck
			return 1, nil
		}, &executor.TaskOptions{MaxTime: 200 * time.Millisecond})
		start(t, app)

		for _, name := range []string{"slow", "stubborn"} {
			got := waitTask(t, app, submit(t, app, name, nil, nil).ID)
			require.Equal(t, events.StatusError, got.Status, name)
			require.Contains(t, got.Error, "time limit", name)
			require.Contains(t, got.Error, "200ms", name)
			closeIn := oneFact(t, b, events.TaskExecutorTaskClose, got.ID).Input
			require.Equal(t, events.StatusError, readString(t, closeIn, "status"))
			require.Contains(t, readString(t, closeIn, "error"), "time limit")
		}
	})

	t.Run("Sequence", func(t *testing.T) {
		t.Parallel()
		app, b := setup(t, nil)
		require.NoError(t, executor.RegisterSeq(app, "count", func(_ context.Context, in struct {
			N int `json:"n"`
		},
		) iter.Seq2[int, error] {
			return func(yield func(int, error) bool) {
				for i := 1; i <= in.N; i++ {
					if !yield(i*10, nil) {
						return
					}
				}
			}
		}, nil))
		start(t, app)

		got := waitTask(t, app, submit(t, app, "count", map[string]int{"n": 3}, nil).ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		items, err := executor.Result[[]int](got)
		require.NoError(t, err)
		require.Equal(t, []int{10, 20, 30}, items)

		w := workerTriggers(t, b, got.ID)
		require.Contains(t, w, events.TaskExecutorRunTaskGen)
		require.NotContains(t, w, events.TaskExecutorRunTask)
		gen := oneFact(t, b, events.TaskExecutorRunTaskGen, got.ID)
		require.JSONEq(t, `{"results":[10,20,30]}`, string(gen.Input))
	})

	t.Run("UnknownTask", func(t *testing.T) {
		t.Parallel()
		worker, b := setup(t, nil)
		executor.MustRegister(worker, "known", func(_ context.Context, _ struct{}) (int, error) { return 1, nil }, nil)
		start(t, worker)
		// The client knows a task that the worker does not register.
		client := newApp(t, b, nil)
		executor.MustRegister(client, "ghost", func(_ context.Context, _ struct{}) (int, error) { return 2, nil }, nil)

		sub := submit(t, client, "ghost", nil, nil)
		got := waitTask(t, client, sub.ID)
		require.Equal(t, events.StatusError, got.Status)
		require.Contains(t, got.Error, `"ghost"`)
		require.Equal(t, "unknown task", got.Reason)
		require.Equal(t, worker.NodeID(), got.Worker)

		// Straight from new to error: the intake, then the remove chain.
		waitQueueEmpty(t, b)
		_, w := taskTriggers(t, b, sub.ID)
		require.Equal(t, []string{
			events.StorageAddProcess, events.StorageGet, events.BrokerGet, events.BrokerAddWorker, events.WorkerAdd,
			events.WorkerRemoveFinishedTask, events.BrokerRemoveFinishedTask, events.StorageRemoveFinishedTask,
		}, w)
		require.Equal(t, events.StatusError, finalModels(t, b, sub.ID, 1)[0].Status)

		// The worker goes on.
		require.Equal(t, events.StatusSuccess, waitTask(t, worker, submit(t, worker, "known", nil, nil).ID).Status)
	})

	t.Run("Panic", func(t *testing.T) {
		t.Parallel()
		app, _ := setup(t, &executor.Config{Concurrency: 1})
		executor.MustRegister(app, "boom", func(_ context.Context, _ struct{}) (int, error) {
			panic("kaboom")
		}, nil)
		executor.MustRegister(app, "fine", func(_ context.Context, _ struct{}) (int, error) { return 7, nil }, nil)
		start(t, app)

		boom := submit(t, app, "boom", nil, nil)
		fine := submit(t, app, "fine", nil, nil)
		got := waitTask(t, app, boom.ID)
		require.Equal(t, events.StatusError, got.Status)
		require.Contains(t, got.Error, "task panicked: kaboom")
		got = waitTask(t, app, fine.ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.JSONEq(t, `7`, string(got.Result))
	})

	t.Run("Middlewares", func(t *testing.T) {
		t.Parallel()
		app, b := setup(t, nil)
		var (
			mu    sync.Mutex
			order []string
		)
		note := func(s string) {
			mu.Lock()
			order = append(order, s)
			mu.Unlock()
		}
		before := func(name string) executor.MiddlewareBefore {
			return func(_ context.Context, tc *executor.TaskContext) error {
				note(name + "@" + tc.Name)
				return nil
			}
		}
		executor.MustRegister(app, "mw", func(_ context.Context, in addArgs) (int, error) {
			note("task")
			return in.A + in.B, nil
		}, &executor.TaskOptions{
			MiddlewaresBefore: []executor.MiddlewareBefore{before("before1"), before("before2")},
			MiddlewaresAfter: []executor.MiddlewareAfter{
				func(_ context.Context, _ *executor.TaskContext, result json.RawMessage) (json.RawMessage, error) {
					note("after1:" + string(result))
					return result, nil
				},
				func(_ context.Context, _ *executor.TaskContext, result json.RawMessage) (json.RawMessage, error) {
					note("after2:" + string(result))
					var n int
					if err := json.Unmarshal(result, &n); err != nil {
						return nil, err
					}
					return json.Marshal(map[string]int{"sum": n, "double": 2 * n})
				},
			},
		})
		start(t, app)

		got := waitTask(t, app, submit(t, app, "mw", addArgs{A: 2, B: 3}, nil).ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.JSONEq(t, `{"sum":5,"double":10}`, string(got.Result))
		mu.Lock()
		require.Equal(t, []string{"before1@mw", "before2@mw", "task", "after1:5", "after2:5"}, order)
		mu.Unlock()
		// The changed result is what decode and the final record see.
		require.JSONEq(t, `{"result":{"sum":5,"double":10}}`, string(oneFact(t, b, events.TaskExecutorDecode, got.ID).Input))
		var phases []string
		for _, f := range facts(t, b, events.TaskExecutorMiddlewaresExecute, got.ID) {
			phases = append(phases, readString(t, f.Fact.Input, "phase"))
		}
		require.Equal(t, []string{"before", "after"}, phases)
	})

	t.Run("MiddlewareFails", func(t *testing.T) {
		t.Parallel()
		app, _ := setup(t, nil)
		ran := make(chan struct{}, 1)
		executor.MustRegister(app, "guarded", func(_ context.Context, _ struct{}) (int, error) {
			ran <- struct{}{}
			return 1, nil
		}, &executor.TaskOptions{MiddlewaresBefore: []executor.MiddlewareBefore{
			func(_ context.Context, _ *executor.TaskContext) error { return errors.New("not allowed") },
		}})
		start(t, app)
		got := waitTask(t, app, submit(t, app, "guarded", nil, nil).ID)
		require.Equal(t, events.StatusError, got.Status)
		require.Contains(t, got.Error, "not allowed")
		require.Empty(t, ran, "the function must not run")
	})

	t.Run("DeadLetter", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		app, b := setup(t, &executor.Config{Metrics: reg})
		executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
		start(t, app)

		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		subject := events.RunSubject(executor.DefaultQueue)
		// Garbage, and a well-formed event whose data is no task.
		ack1, err := b.JetStream().Publish(ctx, subject, []byte("garbage"))
		require.NoError(t, err)
		ev := events.Event{
			ID: "bogus", Source: "test", Type: events.TypeTask, DataContentType: events.ContentTypeJSON,
			Data: []byte(`{"id":"","task_name":"add","attempt":1}`),
		}
		ack2, err := b.JetStream().PublishMsg(ctx, bus.Message(subject, "", &ev))
		require.NoError(t, err)

		var dead []bus.Stored
		bustest.WaitFor(t, waitLimit, "two dead letters", func() bool {
			dead = bustest.Events(t, b, events.DeadSubject("executor"))
			return len(dead) >= 2
		})
		require.Len(t, dead, 2)
		var seqs []uint64 // in either order: two slots may take them at once
		for _, d := range dead {
			require.NoError(t, d.Err)
			require.Equal(t, events.TypeDeadLetter, d.Event.Type)
			var dl events.DeadLetter
			require.NoError(t, json.Unmarshal(d.Event.Data, &dl))
			require.Equal(t, bus.StreamTasks, dl.Stream)
			require.Equal(t, subject, dl.Subject)
			require.Contains(t, dl.Reason, events.ErrInvalidEvent.Error())
			seqs = append(seqs, dl.Sequence)
		}
		require.ElementsMatch(t, []uint64{ack1.Sequence, ack2.Sequence}, seqs)

		// The worker goes on, and the bad messages are gone from the queue.
		got := waitTask(t, app, submit(t, app, "add", addArgs{A: 1, B: 1}, nil).ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		waitQueueEmpty(t, b)
		bustest.WaitFor(t, waitLimit, "the dead-letter counter at 2", func() bool {
			return counter(t, reg, "qtasks_task_dead_letters_total") == 2
		})
	})

	t.Run("Priority", func(t *testing.T) {
		t.Parallel()
		// An ack wait no wait here reaches: a loaded machine that delays
		// holdAlive past it would have the server deliver the blocker or
		// a held job a second time, into the heap the test counts.
		app, _ := setup(t, &executor.Config{Concurrency: 1, Prefetch: 3, AckWait: time.Minute})
		started, release := make(chan struct{}), make(chan struct{})
		executor.MustRegister(app, "block", func(_ context.Context, _ struct{}) (int, error) {
			close(started)
			<-release
			return 0, nil
		}, nil)
		var (
			mu  sync.Mutex
			ran []int
		)
		executor.MustRegister(app, "job", func(ctx context.Context, _ struct{}) (int, error) {
			mu.Lock()
			ran = append(ran, executor.TaskFromContext(ctx).Priority)
			mu.Unlock()
			return 0, nil
		}, nil)
		start(t, app)

		blocker := submit(t, app, "block", nil, nil)
		recv(t, started, "the blocking task to start")
		var ids []string
		for _, p := range []int{5, 1, 3} {
			ids = append(ids, submit(t, app, "job", nil, &executor.SubmitOptions{Priority: &p}).ID)
		}
		bustest.WaitFor(t, waitLimit, "the worker to hold the three jobs", func() bool { return executor.Held(app) == 3 })
		close(release)
		require.Equal(t, events.StatusSuccess, waitTask(t, app, blocker.ID).Status)
		for _, id := range ids {
			require.Equal(t, events.StatusSuccess, waitTask(t, app, id).Status)
		}
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []int{1, 3, 5}, ran)
		require.True(t, slices.IsSorted(ran))
	})
}
