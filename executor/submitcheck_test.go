package executor_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A bad idempotency key fails Submit before anything is written (it used to
// fail after the task was created and queued); a bad traceparent given
// through the Go API is dropped, and the task runs without it.
func TestSubmitChecksKeyAndTraceParent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, app)

	stream, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	before, err := stream.Info(ctx)
	require.NoError(t, err)
	_, err = app.Submit(ctx, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: strings.Repeat("k", 950<<10)})
	require.ErrorIs(t, err, events.ErrInvalidIdempotencyKey)
	after, err := stream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, before.State.LastSeq, after.State.LastSeq, "nothing was written to the log")
	kv, err := b.JetStream().KeyValue(ctx, bus.BucketTasks)
	require.NoError(t, err)
	keys, err := kv.Keys(ctx)
	require.ErrorIs(t, err, jetstream.ErrNoKeysFound, "no task record: %v", keys)

	got := submit(t, app, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{TraceParent: strings.Repeat("x", 60<<10)})
	require.Empty(t, got.Trace)
	require.Equal(t, events.StatusSuccess, waitTask(t, app, got.ID).Status)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	got = submit(t, app, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{TraceParent: tp})
	require.Equal(t, tp, got.Trace)
}
