package retry_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins/retry"
	"github.com/qtasks/qtasks-go/projections"
)

// The retried task's timeline, as the projection of the log shows it: one
// history with three attempts linked parent to child, and the plugin's
// backoff patch on each worker_task_error_retry entry.
func TestRetryTimeline(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b)
	registerFlaky(app, 3, &executor.TaskOptions{Retry: 2})
	p, err := retry.New(retry.Config{Backoff: retry.List{50 * time.Millisecond, 80 * time.Millisecond}})
	require.NoError(t, err)
	runPlugin(t, b, p.Spec(), true)
	startApp(t, app)
	got := submitAndWait(t, app, "flaky")
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	finalModels(t, b, got.ID, 3) // every final fact is stored

	ctx := testCtx(t)
	db, err := projections.Open(ctx, filepath.Join(t.TempDir(), "p.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_, err = db.Apply(ctx, bustest.Events(t, b))
	require.NoError(t, err)
	tl, err := db.Timeline(ctx, got.ID)
	require.NoError(t, err)

	require.Equal(t, events.StatusSuccess, tl.Task.Status)
	require.Equal(t, 3, tl.Task.Attempt)
	require.Len(t, tl.Task.Attempts, 3)
	for i, a := range tl.Task.Attempts {
		require.Equal(t, i+1, a.Attempt)
		if i < 2 {
			require.Equal(t, events.StatusRetry, a.Status)
			require.Equal(t, fmt.Sprintf("%s#%d", got.ID, i+2), a.RetryChild)
		} else {
			require.Equal(t, events.StatusSuccess, a.Status)
		}
		if i > 0 {
			require.Equal(t, fmt.Sprintf("%s#%d", got.ID, i), a.RetryParent)
		}
	}
	var retries []projections.Entry
	for _, e := range tl.Entries {
		if e.Trigger == events.WorkerTaskErrorRetry {
			retries = append(retries, e)
		}
	}
	require.Len(t, retries, 2)
	for i, e := range retries {
		require.Equal(t, i+1, e.Attempt)
		require.Len(t, e.Calls, 1)
		c := e.Calls[0]
		require.Equal(t, retry.DefaultName, c.Plugin)
		require.Equal(t, string(events.OutcomeApplied), c.Outcome)
		require.Len(t, c.Changes, 1)
		require.Equal(t, "/model/delay_ms", c.Changes[0].Path)
		require.JSONEq(t, []string{"50", "80"}[i], string(c.Changes[0].New))
	}
}
