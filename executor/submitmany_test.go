package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
	"github.com/qtasks/qtasks-go/plugins"
)

// SubmitMany of 10k tasks: every good one acknowledged with its own task
// (its id, name and kw) and queued exactly once, as its task message in
// the queue says, then run once with its arguments by the workers (not
// under the race detector, where 10k runs take minutes on a loaded
// machine: TestSubmitManyRuns runs a smaller batch there); the bad ones (a
// name that is no token, an input that does not encode, a queue that is no
// token) fail alone, with the reason.
func TestSubmitMany10k(t *testing.T) {
	t.Parallel()
	const n = 10_000
	b := bustest.Open(t, &bus.Config{Record: bus.RecordLifecycle})
	app := newApp(t, b, &executor.Config{Concurrency: 64})
	type in struct{ N int }
	var ran sync.Map // task id → n
	var runs atomic.Int64
	executor.MustRegister(app, "many", func(ctx context.Context, x in) (int, error) {
		if _, dup := ran.LoadOrStore(executor.TaskFromContext(ctx).ID, x.N); dup {
			return 0, fmt.Errorf("task ran twice")
		}
		runs.Add(1)
		return x.N, nil
	}, nil)
	reqs := make([]executor.SubmitRequest, n)
	bad := map[int]error{}
	for i := range reqs {
		reqs[i] = executor.SubmitRequest{Name: "many", Input: in{N: i}}
		switch i % 1000 {
		case 17:
			reqs[i].Name = "no good"
			bad[i] = executor.ErrInvalidInput
		case 500:
			reqs[i].Input = map[string]any{"N": make(chan int)}
			bad[i] = executor.ErrInvalidInput
		case 999:
			reqs[i].Options = &executor.SubmitOptions{Queue: "a.b"}
			bad[i] = executor.ErrInvalidInput
		}
		if i%10 == 3 {
			reqs[i].Options = &executor.SubmitOptions{IdempotencyKey: fmt.Sprintf("many-%d", i)}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitLimit)
	defer cancel()
	res, err := app.SubmitMany(ctx, reqs)
	require.ErrorIs(t, err, executor.ErrSomeNotQueued)
	require.Contains(t, err.Error(), fmt.Sprintf("%d of %d submissions failed", len(bad), n))
	require.Len(t, res, n)
	ids := make(map[string]int, n)
	for i, r := range res {
		if want, isBad := bad[i]; isBad {
			require.ErrorIs(t, r.Err, want, "entry %d", i)
			require.Empty(t, r.Task.ID, "entry %d", i)
			continue
		}
		require.NoError(t, r.Err, "entry %d", i)
		require.False(t, r.Duplicate)
		require.Equal(t, "many", r.Task.Name)
		require.JSONEq(t, fmt.Sprintf(`{"N":%d}`, i), string(r.Task.Kw), "entry %d", i)
		if i%10 == 3 {
			require.Equal(t, executor.KeyTaskID(fmt.Sprintf("many-%d", i)), r.Task.ID)
		}
		_, seen := ids[r.Task.ID]
		require.False(t, seen, "entry %d has the id of entry %d", i, ids[r.Task.ID])
		ids[r.Task.ID] = i
	}
	good := n - len(bad)
	for _, i := range []int{0, 3, 4998, n - 2} {
		got, err := app.Get(ctx, res[i].Task.ID)
		require.NoError(t, err)
		require.Equal(t, res[i].Task.ID, got.ID)
	}
	// Every task message: one per good entry, with its arguments.
	c, err := b.JetStream().CreateConsumer(ctx, bus.StreamTasks, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1})
	require.NoError(t, err)
	queued := map[string]bool{}
	for len(queued) < good {
		batch, err := c.FetchNoWait(1000)
		require.NoError(t, err)
		got := 0
		for m := range batch.Messages() {
			got++
			var task events.Task
			require.NoError(t, json.Unmarshal(m.Data(), &task))
			i, ok := ids[task.ID]
			require.True(t, ok, "task %s queued but not answered", task.ID)
			require.False(t, queued[task.ID], "task %s queued twice", task.ID)
			require.JSONEq(t, fmt.Sprintf(`{"N":%d}`, i), string(task.Kw))
			queued[task.ID] = true
		}
		require.NoError(t, batch.Error())
		require.NotZero(t, got, "%d of %d task messages", len(queued), good)
	}
	info, err := c.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.NumPending, "no more task messages than tasks")
	if raceEnabled {
		return
	}
	// The workers' consumer may not overlap another on the work queue.
	require.NoError(t, b.JetStream().DeleteConsumer(ctx, bus.StreamTasks, info.Name))
	start(t, app)
	bustest.WaitFor(t, 6*waitLimit, "every task to run", func() bool { return runs.Load() >= int64(good) })
	waitQueueEmpty(t, b)
	require.Equal(t, int64(good), runs.Load())
	ran.Range(func(k, v any) bool {
		i, ok := ids[k.(string)]
		require.True(t, ok, "task %s ran but was not answered", k)
		require.Equal(t, i, v.(int), "task %s ran with the arguments of another", k)
		return true
	})
}

// The tasks of a batch run, each once, with its own arguments.
func TestSubmitManyRuns(t *testing.T) {
	t.Parallel()
	const n = 500
	b := bustest.Open(t, &bus.Config{Record: bus.RecordLifecycle})
	app := newApp(t, b, &executor.Config{Concurrency: 32})
	var ran sync.Map // task id → n
	var runs atomic.Int64
	type in struct{ N int }
	executor.MustRegister(app, "many", func(ctx context.Context, x in) (int, error) {
		if _, dup := ran.LoadOrStore(executor.TaskFromContext(ctx).ID, x.N); dup {
			return 0, fmt.Errorf("task ran twice")
		}
		runs.Add(1)
		return x.N, nil
	}, nil)
	start(t, app)
	reqs := make([]executor.SubmitRequest, n)
	for i := range reqs {
		reqs[i] = executor.SubmitRequest{Name: "many", Input: in{N: i}}
	}
	res, err := app.SubmitMany(ctxFor(t), reqs)
	require.NoError(t, err)
	bustest.WaitFor(t, 3*waitLimit, "every task to run", func() bool { return runs.Load() >= n })
	waitQueueEmpty(t, b)
	require.Equal(t, int64(n), runs.Load())
	for i, r := range res {
		v, ok := ran.Load(r.Task.ID)
		require.True(t, ok, "entry %d did not run", i)
		require.Equal(t, i, v.(int))
	}
}

// A batch with keys: a key already used answers its task as a duplicate
// (or refuses other arguments), a key twice in the batch makes one task,
// each decision recorded; unique options work in a batch as alone.
func TestSubmitManyKeys(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	first := submit(t, app, "add", map[string]int{"a": 1}, &executor.SubmitOptions{IdempotencyKey: "k1"})
	key := func(k string) *executor.SubmitOptions { return &executor.SubmitOptions{IdempotencyKey: k} }
	u := &executor.SubmitOptions{Unique: &executor.UniqueOpts{ByArgs: true}}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	batch := []executor.SubmitRequest{
		{Name: "add", Input: map[string]int{"a": 1}, Options: key("k1")}, // 0: duplicate of first
		{Name: "add", Input: map[string]int{"a": 2}, Options: key("k1")}, // 1: conflict
		{Name: "add", Input: map[string]int{"a": 3}, Options: key("k2")}, // 2: new
		{Name: "add", Input: map[string]int{"a": 3}, Options: key("k2")}, // 3: duplicate of 2
		{Name: "add", Input: map[string]int{"a": 4}, Options: u},         // 4: new
		{Name: "add", Input: map[string]int{"a": 4}, Options: u},         // 5: duplicate of 4
		{Name: "add", Input: map[string]int{"a": 5}, Options: u},         // 6: new
		{Name: "add", Input: map[string]int{"a": 6}},                     // 7: new
	}
	res, err := app.SubmitMany(ctx, batch)
	require.ErrorIs(t, err, executor.ErrSomeNotQueued)
	require.Contains(t, err.Error(), "1 of 8 submissions failed")
	require.NoError(t, res[0].Err)
	require.True(t, res[0].Duplicate)
	require.Equal(t, first.ID, res[0].Task.ID)
	require.ErrorIs(t, res[1].Err, executor.ErrKeyConflict)
	for _, i := range []int{2, 4, 6, 7} {
		require.NoError(t, res[i].Err, "entry %d", i)
		require.False(t, res[i].Duplicate, "entry %d", i)
	}
	for _, p := range [][2]int{{3, 2}, {5, 4}} {
		require.NoError(t, res[p[0]].Err)
		require.True(t, res[p[0]].Duplicate, "entry %d", p[0])
		require.Equal(t, res[p[1]].Task.ID, res[p[0]].Task.ID)
	}
	require.NotEqual(t, res[4].Task.ID, res[6].Task.ID)
	require.Len(t, decisions(t, b, first.ID), 2)
	require.Len(t, decisions(t, b, res[2].Task.ID), 1)
	// One storage_add fact per task made.
	for _, i := range []int{2, 4} {
		var ok []storedFact
		for _, f := range facts(t, b, events.StorageAdd, res[i].Task.ID) {
			if f.Fact.Failed == "" {
				ok = append(ok, f)
			}
		}
		require.Len(t, ok, 1, "entry %d", i)
	}
	// The same batch again: every keyed entry is the duplicate of the
	// task it made (the conflict still refused), the keyless one is new.
	again, err := app.SubmitMany(ctx, batch)
	require.ErrorIs(t, err, executor.ErrSomeNotQueued)
	require.ErrorIs(t, again[1].Err, executor.ErrKeyConflict)
	for i, r := range again {
		if i == 1 {
			continue
		}
		require.NoError(t, r.Err, "entry %d", i)
		require.Equal(t, i != 7, r.Duplicate, "entry %d", i)
		if i != 7 {
			require.Equal(t, res[i].Task.ID, r.Task.ID, "entry %d", i)
		}
	}
	// The tasks run with their arguments.
	executor.MustRegister(app, "add", func(_ context.Context, in map[string]int) (int, error) { return in["a"], nil }, nil)
	start(t, app)
	for _, i := range []int{2, 4, 6, 7} {
		got := waitTask(t, app, res[i].Task.ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		var v int
		require.NoError(t, json.Unmarshal(got.Result, &v))
		require.Equal(t, []int{2: 3, 4: 4, 6: 5, 7: 6}[i], v)
	}
}

// A plugin refusing some submissions of a batch (policy fail, on
// storage_add): those fail alone with the plugin's reason, are not stored
// and their storage_add fact says so; the others are queued and run; a
// batch under an ended context fails every entry without queueing any.
func TestSubmitManyPluginRefusesSome(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	ctx := ctxFor(t)
	_, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "odd-gate", Version: "1", Triggers: []string{events.StorageAdd}, Policy: events.PolicyFail,
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var in struct {
				Task events.Task `json:"task_status"`
			}
			if err := json.Unmarshal(c.Payload, &in); err != nil {
				return nil, err
			}
			var kw addArgs
			if err := json.Unmarshal(in.Task.Kw, &kw); err != nil {
				return nil, err
			}
			if kw.A%2 == 1 {
				return nil, errors.New("odd refused")
			}
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})
	require.NoError(t, err)
	reqs := make([]executor.SubmitRequest, 40)
	for i := range reqs {
		reqs[i] = executor.SubmitRequest{Name: "add", Input: addArgs{A: i, B: 1}}
	}
	res, err := app.SubmitMany(ctx, reqs)
	require.ErrorIs(t, err, executor.ErrSomeNotQueued)
	start(t, app)
	for i, r := range res {
		if i%2 == 1 {
			var pf *executor.PluginFailure
			require.ErrorAs(t, r.Err, &pf, "entry %d", i)
			require.Contains(t, pf.Reason, "odd refused")
			continue
		}
		require.NoError(t, r.Err, "entry %d", i)
		got := waitTask(t, app, r.Task.ID)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.JSONEq(t, strconv.Itoa(i+1), string(got.Result))
	}
	// The refused ones: no record, a storage_add fact that says why.
	var refused int
	for _, s := range bustest.Events(t, b, events.FactSubject(events.StorageAdd, executor.DefaultQueue)) {
		var f events.Fact
		require.NoError(t, json.Unmarshal(s.Event.Data, &f))
		if f.Failed != "" {
			refused++
			require.Contains(t, f.Failed, "odd refused")
			_, err := app.Get(ctx, s.Event.TaskID)
			require.ErrorIs(t, err, bus.ErrTaskNotFound)
		}
	}
	require.Equal(t, 20, refused)

	ended, cancel := context.WithCancel(ctx)
	cancel()
	res, err = app.SubmitMany(ended, reqs[:4])
	require.ErrorIs(t, err, executor.ErrSomeNotQueued)
	for i, r := range res {
		require.Error(t, r.Err, "entry %d", i)
		require.NotErrorIs(t, r.Err, executor.ErrOutcomeUnknown, "entry %d: nothing was sent", i)
	}
}

// A key whose record was taken back (its marker left in the bucket) makes
// its task again in a batch, as with Submit: the batch's create fails on
// the marker and the entry is submitted on its own.
func TestSubmitManyKeyTakenBack(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	ctx := ctxFor(t)
	first := submit(t, app, "add", map[string]int{"a": 1}, &executor.SubmitOptions{IdempotencyKey: "back"})
	rec, err := b.GetTaskLatest(ctx, first.ID)
	require.NoError(t, err)
	require.NoError(t, b.DeleteTask(ctx, first.ID, rec.Revision))
	res, err := app.SubmitMany(ctx, []executor.SubmitRequest{
		{Name: "add", Input: map[string]int{"a": 1}, Options: &executor.SubmitOptions{IdempotencyKey: "back"}},
		{Name: "add", Input: map[string]int{"a": 2}},
	})
	require.NoError(t, err)
	require.False(t, res[0].Duplicate)
	require.Equal(t, first.ID, res[0].Task.ID)
	got, err := app.Get(ctx, first.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusNew, got.Status)
	var failed []string
	for _, f := range facts(t, b, events.StorageAdd, first.ID) {
		failed = append(failed, f.Fact.Failed)
	}
	require.Len(t, failed, 3, "the first submission's, the batch's (failed), the one made on its own")
	require.Empty(t, failed[0])
	require.Contains(t, failed[1], "submitted again on its own")
	require.Empty(t, failed[2])
}

// A batch whose submissions all fail while the log stores nothing (its
// stream has no leader: here, no stream) returns within its context and
// one publish timeout, as Submit does, not one publish timeout per
// submission: each failed submission's facts are waited for against the
// same deadline.
func TestSubmitManyBoundedWhileTheLogIsDown(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	b := bustest.Open(t, &bus.Config{PublishTimeout: timeout})
	app := newApp(t, b, nil)
	ctx := ctxFor(t)
	require.NoError(t, b.JetStream().DeleteStream(ctx, bus.StreamTasks))
	require.NoError(t, b.JetStream().DeleteStream(ctx, bus.StreamEvents))
	reqs := make([]executor.SubmitRequest, 100)
	for i := range reqs {
		reqs[i] = executor.SubmitRequest{Name: "add", Input: map[string]int{"a": i}}
	}
	const callCtx = time.Second
	cctx, cancel := context.WithTimeout(ctx, callCtx)
	defer cancel()
	start := time.Now()
	res, err := app.SubmitMany(cctx, reqs)
	took := time.Since(start)
	require.ErrorIs(t, err, executor.ErrSomeNotQueued)
	for i, r := range res {
		require.Error(t, r.Err, "entry %d", i)
		require.NotErrorIs(t, r.Err, executor.ErrOutcomeUnknown, "entry %d: the queue refused it", i)
	}
	// The context, the records' acks and the facts' (each a publish
	// timeout and the bus's slack of 5 s at most), and room for a loaded
	// machine: far less than one publish timeout per submission (30 s).
	limit := callCtx + 2*(timeout+5*time.Second) + 5*time.Second
	require.Less(t, took, limit, "SubmitMany of %d submissions took %v", len(reqs), took)
}

// The submissions of a batch left to be made one at a time (a key that
// another of the batch holds), each a Submit, keep the call within its
// context and a publish timeout while the log stores nothing, as the rest
// of the batch does (TestSubmitManyBoundedWhileTheLogIsDown).
func TestSubmitManyLaterBoundedWhileTheLogIsDown(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	b := bustest.Open(t, &bus.Config{PublishTimeout: timeout})
	app := newApp(t, b, nil)
	ctx := ctxFor(t)
	require.NoError(t, b.JetStream().DeleteStream(ctx, bus.StreamTasks))
	require.NoError(t, b.JetStream().DeleteStream(ctx, bus.StreamEvents))
	reqs := make([]executor.SubmitRequest, 100)
	for i := range reqs {
		reqs[i] = executor.SubmitRequest{Name: "add", Input: map[string]int{"a": 1}, Options: &executor.SubmitOptions{IdempotencyKey: "same"}}
	}
	const callCtx = time.Second
	cctx, cancel := context.WithTimeout(ctx, callCtx)
	defer cancel()
	start := time.Now()
	res, err := app.SubmitMany(cctx, reqs)
	took := time.Since(start)
	require.ErrorIs(t, err, executor.ErrSomeNotQueued)
	for i, r := range res {
		require.Error(t, r.Err, "entry %d", i)
	}
	limit := callCtx + 2*(timeout+5*time.Second) + 5*time.Second
	require.Less(t, took, limit, "SubmitMany of %d submissions of one key took %v", len(reqs), took)
}

// The records of a batch's submissions whose task messages the queue
// refused are taken back under one deadline, a publish timeout: they used
// to be deleted one after another, each waiting for its own answer (the
// client's default of 5 s), so that a task bucket that did not answer
// held a chunk of 100 for 500 s. Here the queue refuses every task
// message (too large for it), and from the first deletion on the server's
// answers are held in a proxy.
func TestSubmitManyTakesBackUnderOneDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	srv := bustest.Open(t, nil)
	p := bustest.NewProxy(t, srv.ClientURL())
	b := bustest.Open(t, &bus.Config{URL: p.URL(), PublishTimeout: timeout})
	app := newApp(t, b, nil)
	ctx := ctxFor(t)
	s, err := srv.JetStream().Stream(ctx, bus.StreamTasks)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 64
	_, err = srv.JetStream().UpdateStream(ctx, cfg)
	require.NoError(t, err)
	reqs := make([]executor.SubmitRequest, 100)
	for i := range reqs {
		reqs[i] = executor.SubmitRequest{Name: "add", Input: map[string]int{"a": i}}
	}
	p.HoldOn("KV-Operation: DEL")
	type answer struct {
		res []executor.SubmitResult
		err error
	}
	done := make(chan answer, 1)
	start := time.Now()
	go func() {
		res, err := app.SubmitMany(ctx, reqs)
		done <- answer{res, err}
	}()
	// The deletions' deadline, the facts' wait (a publish timeout and the
	// slack of 5 s) and room for a loaded machine: far less than one wait
	// per deletion.
	limit := 2*(timeout+5*time.Second) + 10*time.Second
	var a answer
	select {
	case a = <-done:
	case <-time.After(limit):
		t.Fatalf("SubmitMany of %d refused submissions still taking their records back after %v", len(reqs), limit)
	}
	t.Logf("SubmitMany of %d refused submissions returned after %v", len(reqs), time.Since(start).Round(time.Millisecond))
	require.ErrorIs(t, a.err, executor.ErrSomeNotQueued)
	for i, r := range a.res {
		require.Error(t, r.Err, "entry %d", i)
		require.NotErrorIs(t, r.Err, executor.ErrOutcomeUnknown, "entry %d: the queue refused it", i)
		require.ErrorContains(t, r.Err, "the janitor will end it", "entry %d: its record could not be taken back", i)
	}
}
