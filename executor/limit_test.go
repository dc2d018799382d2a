package executor_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// TestConcurrencyLimitAcrossWorkers runs tasks limited to 2 at once
// cluster-wide on 3 workers of 3 slots each: never more than 2 run at once,
// counted in the task function itself.
func TestConcurrencyLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	var running, most atomic.Int32
	var mu sync.Mutex
	nodes := map[string]int{}
	var apps []*executor.App
	for i := range 3 {
		bb := b
		if i > 0 {
			bb = bustest.Connect(t, b, nil)
		}
		app := newApp(t, bb, &executor.Config{Concurrency: 3})
		require.NoError(t, app.SetLimit(executor.Limit{Task: "slow", Concurrency: 2}))
		node := app.NodeID()
		executor.MustRegister(app, "slow", func(ctx context.Context, _ struct{}) (int, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			mu.Lock()
			nodes[node]++
			mu.Unlock()
			// Work long enough for the others to try to start meanwhile.
			select {
			case <-time.After(30 * time.Millisecond):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			return int(n), nil
		}, nil)
		apps = append(apps, app)
	}
	var ids []string
	for range 12 {
		ids = append(ids, submit(t, apps[0], "slow", nil, nil).ID)
	}
	for _, a := range apps {
		start(t, a)
	}
	for _, id := range ids {
		got := waitTask(t, apps[0], id)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	}
	require.LessOrEqual(t, most.Load(), int32(2), "never more than 2 at once")
	require.Equal(t, int32(0), running.Load())
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(nodes), 2, "the tasks ran on several workers: %v", nodes)
}

// TestRateLimitAcrossWorkers runs tasks limited to 20 starts a second on
// two workers: the k-th start comes at least k × 50 ms after the workers
// started (the first start is granted after that, and each next one at
// least 50 ms after the one before, by the limit's clock).
func TestRateLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	const rate = 20
	interval := time.Second / rate
	var mu sync.Mutex
	var starts []time.Time
	var apps []*executor.App
	for i := range 2 {
		bb := b
		if i > 0 {
			bb = bustest.Connect(t, b, nil)
		}
		app := newApp(t, bb, &executor.Config{Concurrency: 4})
		require.NoError(t, app.SetLimit(executor.Limit{Queue: executor.DefaultQueue, Rate: rate}))
		executor.MustRegister(app, "tick", func(ctx context.Context, _ struct{}) (int, error) {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			return 0, nil
		}, nil)
		apps = append(apps, app)
	}
	var ids []string
	for range 10 {
		ids = append(ids, submit(t, apps[0], "tick", nil, nil).ID)
	}
	begun := time.Now() // no start is granted before this
	for _, a := range apps {
		start(t, a)
	}
	for _, id := range ids {
		require.Equal(t, events.StatusSuccess, waitTask(t, apps[0], id).Status)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	require.Len(t, starts, len(ids))
	for k, s := range starts {
		require.GreaterOrEqual(t, s.Sub(begun), time.Duration(k)*interval, "start %d came early", k)
	}
}

// TestLimitSlotOfCrashedWorker has a worker die holding the only slot: the
// slot comes back when its lease runs out, and the next task runs.
func TestLimitSlotOfCrashedWorker(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	lim := executor.Limit{Task: "one", Concurrency: 1, Lease: time.Second}
	// A slot as a crashed worker leaves it: taken, never renewed.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	begun := time.Now() // the slot is taken after this, and expires a lease later
	crashed := newApp(t, bustest.Connect(t, b, nil), nil)
	require.NoError(t, crashed.SetLimit(lim))
	require.NoError(t, executor.TakeSlotAndCrash(ctx, crashed, lim, "dead-task#1#1"))

	app := newApp(t, b, nil)
	require.NoError(t, app.SetLimit(lim))
	executor.MustRegister(app, "one", func(ctx context.Context, _ struct{}) (int, error) { return 1, nil }, nil)
	start(t, app)
	got := waitTask(t, app, submit(t, app, "one", nil, nil).ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.GreaterOrEqual(t, time.Since(begun), lim.Lease, "it waited for the dead worker's lease")

	require.ErrorIs(t, app.SetLimit(executor.Limit{Task: "x", Queue: "y", Concurrency: 1}), executor.ErrInvalidInput)
	require.ErrorIs(t, app.SetLimit(executor.Limit{Task: "a.b", Concurrency: 1}), executor.ErrInvalidInput)
	require.ErrorIs(t, app.SetLimit(executor.Limit{Task: "x", Concurrency: 1, Lease: time.Millisecond}), executor.ErrInvalidInput)
}
