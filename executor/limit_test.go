package executor_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
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
	type span struct{ start, end time.Time }
	var spans []span
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
			began := time.Now()
			// Work long enough for the others to try to start meanwhile.
			select {
			case <-time.After(30 * time.Millisecond):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			mu.Lock()
			spans = append(spans, span{began, time.Now()})
			mu.Unlock()
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
	// A run that waited is recorded once, on one of the limit's two
	// slots (which runs wait depends on the machine's timing; that a
	// wait is recorded at all, TestLimitSlotOfCrashedWorker).
	lws := limitWaits(t, b)
	seen := map[string]bool{}
	for _, lw := range lws {
		require.Equal(t, "t-slow", lw.W.Limit)
		require.Equal(t, events.LimitConcurrency, lw.W.Kind)
		require.Less(t, lw.W.Slot, 2)
		require.Contains(t, ids, lw.Event.TaskID)
		require.False(t, seen[lw.Event.TaskID], "one wait per run")
		seen[lw.Event.TaskID] = true
	}
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(nodes), 2, "the tasks ran on several workers: %v", nodes)
	// The same from the recorded start and end times: at each start, how
	// many ran (each interval lies within its slot's holding).
	require.Len(t, spans, len(ids))
	for _, a := range spans {
		overlap := 0
		for _, b := range spans {
			if !b.start.After(a.start) && b.end.After(a.start) {
				overlap++
			}
		}
		require.LessOrEqual(t, overlap, 2, "3 or more ran at once at %v", a.start)
	}
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
		executor.MustRegister(app, "tick", func(_ context.Context, _ struct{}) (int, error) {
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
	lws := limitWaits(t, b)
	require.Less(t, len(lws), len(ids), "the first start never waits")
	for _, lw := range lws {
		require.Equal(t, "q-"+executor.DefaultQueue, lw.W.Limit)
		require.Equal(t, events.LimitRate, lw.W.Kind)
	}
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
	executor.MustRegister(app, "one", func(_ context.Context, _ struct{}) (int, error) { return 1, nil }, nil)
	start(t, app)
	got := waitTask(t, app, submit(t, app, "one", nil, nil).ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.GreaterOrEqual(t, time.Since(begun), lim.Lease, "it waited for the dead worker's lease")
	lws := limitWaits(t, b)
	require.Len(t, lws, 1)
	require.Equal(t, got.ID, lws[0].Event.TaskID)
	require.Equal(t, "dead-task#1#1", lws[0].W.TookOver, "the takeover is recorded")
	require.Positive(t, lws[0].W.WaitedMS)

	require.ErrorIs(t, app.SetLimit(executor.Limit{Task: "x", Queue: "y", Concurrency: 1}), executor.ErrInvalidInput)
	require.ErrorIs(t, app.SetLimit(executor.Limit{Task: "a.b", Concurrency: 1}), executor.ErrInvalidInput)
	require.ErrorIs(t, app.SetLimit(executor.Limit{Task: "x", Concurrency: 1, Lease: time.Millisecond}), executor.ErrInvalidInput)
}

type storedLimit struct {
	Event events.Event
	W     events.LimitWait
}

// limitWaits returns the limit events of the log, in stream order.
func limitWaits(t *testing.T, b *bus.Bus) []storedLimit {
	t.Helper()
	var out []storedLimit
	for _, s := range bustest.Events(t, b, events.LimitSubject("*")) {
		require.NoError(t, s.Err)
		require.Equal(t, events.TypeLimit, s.Event.Type)
		var w events.LimitWait
		require.NoError(t, json.Unmarshal(s.Event.Data, &w))
		require.NoError(t, w.Check())
		out = append(out, storedLimit{s.Event, w})
	}
	return out
}

// TestRateLimitWaitRecorded takes the only start of a 2-second window,
// then runs a task under the same rate: it waits for the next start, and
// the wait is in the log.
func TestRateLimitWaitRecorded(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	lim := executor.Limit{Task: "paced", Rate: 0.5}
	require.NoError(t, app.SetLimit(lim))
	executor.MustRegister(app, "paced", func(_ context.Context, _ struct{}) (int, error) { return 1, nil }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	taken := time.Now()
	require.NoError(t, executor.TakeStart(ctx, app, lim))
	start(t, app)
	got := waitTask(t, app, submit(t, app, "paced", nil, nil).ID)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	require.GreaterOrEqual(t, time.Since(taken), 2*time.Second, "the next start is 2 s after the one taken")
	lws := limitWaits(t, b)
	require.Len(t, lws, 1)
	require.Equal(t, got.ID, lws[0].Event.TaskID)
	require.Equal(t, events.LimitRate, lws[0].W.Kind)
	require.Equal(t, "t-paced", lws[0].W.Limit)
	require.Positive(t, lws[0].W.WaitedMS)
}
