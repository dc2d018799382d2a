package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// A fact's publish acknowledgement lost while the connection stays up (the
// stream leader died after storing it, and the client is connected to
// another node of the cluster) left Acks.Wait waiting for ever: async
// publishes had no timeout, and the executor waits without a deadline.
// Here the publish goes to a subject no stream stores, with a silent
// subscriber, so that nobody answers it (and the server does not say "no
// responders").
func TestAcksWaitEndsWhenAnAckIsLost(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, &bus.Config{PublishTimeout: time.Second})
	sub, err := b.Conn().SubscribeSync("lost.ack")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, b.Conn().Flush())
	ev := events.Event{ID: "lost-ack", Source: "test", Type: events.TypeTriggerPrefix + events.WorkerAdd,
		Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: []byte(`{}`), Trigger: events.WorkerAdd}
	var acks bus.Acks
	acks.Bound(b.PublishTimeout())
	f, err := b.PublishAsync("lost.ack", "", &ev)
	require.NoError(t, err)
	acks.Add(f)

	done := make(chan error, 1)
	go func() { done <- acks.Wait(context.Background()) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, jetstream.ErrAsyncPublishTimeout)
	case <-time.After(wait):
		t.Fatal("Acks.Wait still waiting for an ack that was lost")
	}
}

// GetTaskLatest reads what GetTask reads, from the leader: a record, its
// revision, and "not found" for a key never made or deleted.
func TestGetTaskLatest(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	_, err := b.GetTaskLatest(ctx, "never")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
	task := events.Task{ID: "t1", Name: "n", Queue: "default", Status: events.StatusNew, Attempt: 1}
	rec, created, err := b.CreateTask(ctx, task)
	require.NoError(t, err)
	require.True(t, created)
	got, err := b.GetTaskLatest(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, rec.Revision, got.Revision)
	require.Equal(t, "n", got.Task.Name)
	require.NoError(t, b.DeleteTask(ctx, "t1", rec.Revision))
	_, err = b.GetTaskLatest(ctx, "t1")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
	_, err = b.GetTaskLatest(ctx, "a.b")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
}

// Only an error that proves a publish was not stored says so; a timeout or
// an ended context leaves the outcome unknown.
func TestSurelyNotStored(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]bool{
		fmt.Errorf("enqueueing: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077}): true,
		fmt.Errorf("x: %w", jetstream.ErrNoStreamResponse):                             true,
		fmt.Errorf("x: %w", nats.ErrReconnectBufExceeded):                              true,
		fmt.Errorf("x: %w", nats.ErrConnectionClosed):                                  true,
		fmt.Errorf("x: %w", context.DeadlineExceeded):                                  false,
		fmt.Errorf("x: %w", nats.ErrTimeout):                                           false,
		fmt.Errorf("x: %w", jetstream.ErrAsyncPublishTimeout):                          false,
		nil: false,
	} {
		require.Equal(t, want, bus.SurelyNotStored(err), "%v", err)
	}
}
