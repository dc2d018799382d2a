package executor_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// proxied opens a server (its bus, srv) and a second bus to it through a
// proxy, whose replies the test can hold or cut; publishes through it time
// out after a second.
func proxied(t *testing.T) (b, srv *bus.Bus, p *bustest.Proxy) {
	t.Helper()
	srv = bustest.Open(t, nil)
	p = bustest.NewProxy(t, srv.ClientURL())
	b = bustest.Open(t, &bus.Config{URL: p.URL(), PublishTimeout: time.Second})
	return b, srv, p
}

// addWorker starts a worker of task add on srv.
func addWorker(t *testing.T, srv *bus.Bus) *executor.App {
	t.Helper()
	w := newApp(t, srv, nil)
	executor.MustRegister(w, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, w)
	return w
}

// Submit used to return an error after the task was queued, when the acks
// of its last writes did not come (a leader election): the task ran, and a
// client that retried made a duplicate. Now an error means not queued, or
// says the outcome is unknown, and then a retry with the key settles it.
func TestSubmitErrorMeansNotQueued(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		holdOn string // the server's replies are lost from when this is sent
	}{
		// The task message's ack is lost: the outcome is unknown.
		{"TaskMessageAckLost", "qtasks.run."},
		// The task is queued, the acks of the facts after it (the queued
		// phase, one message) are lost.
		{"FactAcksLost", events.PhaseSubject(events.PhaseQueued, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, srv, p := proxied(t)
			w := addWorker(t, srv)
			app := newApp(t, b, nil)
			p.HoldOn(tc.holdOn)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			task, err := app.Submit(ctx, "add", addArgs{A: 1, B: 2}, nil)
			cancel()
			p.Release()
			if tc.name == "FactAcksLost" {
				require.NoError(t, err, "the task was queued")
			} else {
				require.ErrorIs(t, err, executor.ErrOutcomeUnknown)
				require.NotEmpty(t, task.IdempotencyKey)
				retry := submit(t, app, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: task.IdempotencyKey})
				require.Equal(t, task.ID, retry.ID)
			}
			got := waitTask(t, w, task.ID)
			require.Equal(t, events.StatusSuccess, got.Status)
			require.Len(t, finalModels(t, srv, task.ID, 1), 1)
		})
	}
}

// A record left new by a submission that did not finish (its enqueue's
// outcome unknown, its caller gone) was returned as accepted to a retry
// with the same key, and never ran. The retry queues it.
func TestSubmitRetryQueuesARecordLeftUnqueued(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	w := addWorker(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	now := time.Now().UTC()
	left := events.Task{
		ID: executor.KeyTaskID("order-7"), Name: "add", Queue: executor.DefaultQueue, Status: events.StatusNew,
		Attempt: 1, Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":2,"b":3}`), IdempotencyKey: "order-7", CreatedAt: now, UpdatedAt: now,
	}
	_, created, err := b.CreateTask(ctx, left)
	require.NoError(t, err)
	require.True(t, created)

	task, err := w.Submit(ctx, "add", addArgs{A: 2, B: 3}, &executor.SubmitOptions{IdempotencyKey: "order-7"})
	require.NoError(t, err)
	require.Equal(t, left.ID, task.ID)
	got := waitTask(t, w, task.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	require.JSONEq(t, `5`, string(got.Result))
	// Retrying again changes nothing.
	again, err := w.Submit(ctx, "add", addArgs{A: 2, B: 3}, &executor.SubmitOptions{IdempotencyKey: "order-7"})
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, again.Status)
	require.Len(t, finalModels(t, b, task.ID, 1), 1)
}

// A submission without a key gets one, so that a caller told the outcome is
// unknown can retry without making a duplicate; its id stays time-ordered.
func TestSubmitGeneratesAnIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	first := submit(t, app, "add", addArgs{A: 1, B: 1}, nil)
	require.Equal(t, executor.GeneratedKeyPrefix+first.ID, first.IdempotencyKey)
	id, err := uuid.Parse(first.ID)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), id.Version())
	require.Equal(t, first.ID, executor.KeyTaskID(first.IdempotencyKey))

	retry := submit(t, app, "add", addArgs{A: 1, B: 1}, &executor.SubmitOptions{IdempotencyKey: first.IdempotencyKey})
	require.Equal(t, first.ID, retry.ID)
	require.Len(t, facts(t, b, events.StorageAdd, first.ID), 1, "one submission stored")
	// A key that only looks generated is hashed like any other.
	require.NotEqual(t, "x", executor.KeyTaskID(executor.GeneratedKeyPrefix+"x"))
	require.False(t, strings.HasPrefix(executor.KeyTaskID("id:"+strings.ToUpper(first.ID)), "id:"))
}

// A run whose fact acks were lost (the stream leader died after storing
// them; the connection stayed up) waited for them for ever: the heartbeat
// kept its task message in progress, so it was never redelivered, and the
// task stayed in process until the worker restarted. The wait is bounded:
// the run fails, its message is handed back, and a later run finishes it.
func TestRunWithLostAcksIsRedelivered(t *testing.T) {
	t.Parallel()
	b, srv, p := proxied(t)
	w := newApp(t, b, nil)
	executor.MustRegister(w, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, w)
	// The first run's facts from the task's return on (the finish phase,
	// packed in one message) are stored, and their acks are held.
	p.HoldOn(events.PhaseSubject(events.PhaseFinish, ""))
	task := submit(t, newApp(t, srv, nil), "add", addArgs{A: 1, B: 2}, nil)
	bustest.WaitFor(t, waitLimit, "the first run to give up and hand its task back", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := srv.JetStream().Consumer(ctx, bus.StreamTasks, "workers-"+executor.DefaultQueue)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumRedelivered > 0
	})
	p.Release()
	got := waitTask(t, w, task.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	require.Equal(t, 2, got.Run)
	require.Len(t, finalModels(t, srv, task.ID, 1), 1)
}
