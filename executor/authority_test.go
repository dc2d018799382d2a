package executor_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A client that does not register the task (qtasksd submit, HTTP) still
// gets the worker's retry count and time limit: the worker is the authority.
func TestWorkerRegistrationIsTheAuthority(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	worker := newApp(t, b, nil)
	var calls atomic.Int32
	executor.MustRegister(worker, "flaky", func(_ context.Context, _ struct{}) (int, error) {
		if calls.Add(1) < 2 {
			return 0, errors.New("transient")
		}
		return 7, nil
	}, &executor.TaskOptions{Retry: 1})
	executor.MustRegister(worker, "slow", func(ctx context.Context, _ struct{}) (int, error) {
		<-ctx.Done()
		return 0, context.Cause(ctx)
	}, &executor.TaskOptions{MaxTime: 100 * time.Millisecond})
	start(t, worker)

	client := newApp(t, b, nil) // registers nothing
	ctx := context.Background()
	sub, err := client.Submit(ctx, "flaky", nil, nil)
	require.NoError(t, err)
	require.Equal(t, 0, sub.Retry, "the client does not know the task")
	final := waitTask(t, client, sub.ID)
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	require.Equal(t, 2, final.Attempt)

	sub, err = client.Submit(ctx, "slow", nil, nil)
	require.NoError(t, err)
	final = waitTask(t, client, sub.ID)
	require.Equal(t, events.StatusError, final.Status)
	require.Contains(t, final.Error, "time limit")
}
