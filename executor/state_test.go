package executor_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// stateWrites returns the state events of the log, in stream order.
func stateWrites(t *testing.T, b *bus.Bus) []storedState {
	t.Helper()
	var out []storedState
	for _, s := range bustest.Events(t, b, events.StateSubject("*")) {
		require.NoError(t, s.Err, "seq %d", s.Seq)
		require.Equal(t, events.TypeState, s.Event.Type)
		var w events.StateWrite
		require.NoError(t, json.Unmarshal(s.Event.Data, &w))
		require.NoError(t, w.Check())
		out = append(out, storedState{Event: s.Event, W: w})
	}
	return out
}

type storedState struct {
	Event events.Event
	W     events.StateWrite
}

// registerStatesExample registers QTasks' states example
// (examples/states/based_async_states_app.py) as written: step1 writes the
// state, step2 reads it, checks it, and clears it.
func registerStatesExample(app *executor.App, seen chan<- map[string]json.RawMessage) {
	executor.MustRegister(app, "step1", func(ctx context.Context, _ struct{}) (string, error) {
		state := executor.State(ctx, "MyState")
		if _, err := state.Set(ctx, "state", "await_phone"); err != nil {
			return "", err
		}
		if _, err := state.Update(ctx, map[string]any{"step": 1, "prompt": "Enter your phone number"}); err != nil {
			return "", err
		}
		return "ok", nil
	}, nil)
	executor.MustRegister(app, "step2", func(ctx context.Context, _ struct{}) (string, error) {
		state := executor.State(ctx, "MyState")
		all, err := state.GetAll(ctx) // print(await state.get_all())
		if err != nil {
			return "", err
		}
		seen <- all
		var cur string
		if _, err := state.Get(ctx, "state", &cur); err != nil && !errors.Is(err, executor.ErrStateNotFound) {
			return "", err
		}
		if cur != "await_phone" {
			return "error", nil
		}
		if _, err := state.Update(ctx, map[string]any{"step": 2}); err != nil {
			return "", err
		}
		if err := state.Delete(ctx, "state"); err != nil {
			return "", err
		}
		if err := state.Clear(ctx); err != nil {
			return "", err
		}
		return "ok", nil
	}, nil)
}

// TestStatesExample runs QTasks' states example: step 1 writes state, step
// 2 (on another worker) reads what step 1 wrote; every write is a state
// event naming the task that made it.
func TestStatesExample(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	seen := make(chan map[string]json.RawMessage, 1)
	app1 := newApp(t, b, nil)
	registerStatesExample(app1, seen)
	start(t, app1)

	s1 := submit(t, app1, "step1", nil, nil)
	r1, err := executor.Result[string](waitTask(t, app1, s1.ID))
	require.NoError(t, err)
	require.Equal(t, "ok", r1)

	// Step 2 runs on another worker, on another connection: the state is
	// not the worker's memory.
	require.NoError(t, app1.Stop(context.Background()))
	app2 := newApp(t, bustest.Connect(t, b, nil), nil)
	registerStatesExample(app2, seen)
	start(t, app2)
	s2 := submit(t, app2, "step2", nil, nil)
	r2, err := executor.Result[string](waitTask(t, app2, s2.ID))
	require.NoError(t, err)
	require.Equal(t, "ok", r2, "step2 did not see step1's state")
	all := recv(t, seen, "step2's view of the state")
	require.JSONEq(t, `"await_phone"`, string(all["state"]))
	require.JSONEq(t, `1`, string(all["step"]))
	require.JSONEq(t, `"Enter your phone number"`, string(all["prompt"]))

	left, err := app2.State("MyState").GetAll(context.Background())
	require.NoError(t, err)
	require.Empty(t, left, "step2 cleared the state")

	// Who wrote what: step1 set state, then prompt and step (Update goes
	// key by key, in key order); step2 set step, deleted state, and
	// Clear deleted prompt and step.
	type w struct{ task, op, key string }
	var got []w
	for _, s := range stateWrites(t, b) {
		require.Equal(t, "MyState", s.W.Scope)
		require.Equal(t, events.StateShared, s.W.Kind)
		require.Equal(t, 1, s.Event.Attempt)
		got = append(got, w{s.Event.TaskID, s.W.Op, s.W.Key})
	}
	want := []w{
		{s1.ID, events.StatePut, "state"},
		{s1.ID, events.StatePut, "prompt"},
		{s1.ID, events.StatePut, "step"},
		{s2.ID, events.StatePut, "step"},
		{s2.ID, events.StateDelete, "state"},
	}
	require.Len(t, got, len(want)+2)
	require.Equal(t, want, got[:len(want)])
	require.ElementsMatch(t, []w{{s2.ID, events.StateDelete, "prompt"}, {s2.ID, events.StateDelete, "step"}}, got[len(want):])
	requireRevisionChains(t, stateWrites(t, b))
}

// requireRevisionChains checks that the writes of each key form an unbroken
// chain: each replaces the revision the one before it made. Two writers'
// events may reach the log in the other order than their writes, so the
// chain is followed in revision order.
func requireRevisionChains(t *testing.T, ws []storedState) {
	t.Helper()
	ws = slices.Clone(ws)
	slices.SortStableFunc(ws, func(a, b storedState) int { return cmp.Compare(a.W.Revision, b.W.Revision) })
	last := map[string]uint64{}
	for _, s := range ws {
		k := s.W.Kind + "/" + s.W.Scope + "/" + s.W.Key
		require.Equal(t, last[k], s.W.Prev, "write of %s at revision %d does not follow the one before", k, s.W.Revision)
		last[k] = s.W.Revision
	}
}

// TestStateEveryWriteLogged has tasks on two workers write one key many
// times at once: every write is an event, naming its task, and the events
// chain every revision to the next.
func TestStateEveryWriteLogged(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	const tasks, writes = 12, 5
	var apps []*executor.App
	for i := range 2 {
		bb := b
		if i == 1 {
			bb = bustest.Connect(t, b, nil)
		}
		app := newApp(t, bb, &executor.Config{Concurrency: 4})
		executor.MustRegister(app, "writer", func(ctx context.Context, in []int) (int, error) {
			st := executor.State(ctx, "hot")
			for j := range writes {
				if _, err := st.Set(ctx, "last", in[0]*100+j); err != nil {
					return 0, err
				}
			}
			return 0, nil
		}, nil)
		apps = append(apps, app)
	}
	var ids []string
	for i := range tasks {
		ids = append(ids, submit(t, apps[0], "writer", nil, &executor.SubmitOptions{Args: []any{i}}).ID)
	}
	for _, a := range apps {
		start(t, a)
	}
	for _, id := range ids {
		got := waitTask(t, apps[0], id)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	}
	ws := stateWrites(t, b)
	require.Len(t, ws, tasks*writes, "every write is in the log")
	per := map[string]int{}
	for _, w := range ws {
		per[w.Event.TaskID]++
	}
	for _, id := range ids {
		require.Equal(t, writes, per[id], "task %s", id)
	}
	requireRevisionChains(t, ws)
	var last int
	rev, err := apps[0].State("hot").Get(context.Background(), "last", &last)
	require.NoError(t, err)
	top := slices.MaxFunc(ws, func(a, b storedState) int { return cmp.Compare(a.W.Revision, b.W.Revision) })
	require.Equal(t, top.W.Revision, rev, "the value read is the last write logged")
	require.JSONEq(t, string(top.W.Value), strconv.Itoa(last))
}

// TestStateCASConflictAcrossWorkers has two tasks on two workers read the
// same revision of a counter, then both compare-and-set it: exactly one
// wins, the other gets ErrStateConflict and nothing of it is written.
func TestStateCASConflictAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	read := make(chan struct{}, 2)
	var mu sync.Mutex
	both := make(chan struct{})
	nodes := map[string]bool{}
	type outcome struct {
		node string
		err  error
	}
	outcomes := make(chan outcome, 2)
	var apps []*executor.App
	for i := range 2 {
		bb := b
		if i == 1 {
			bb = bustest.Connect(t, b, nil)
		}
		// A queue each: one worker taking both tasks (the second pulled
		// ahead while the first waits for it) would wait forever. CI saw it.
		app := newApp(t, bb, &executor.Config{Concurrency: 1, Queue: "q" + strconv.Itoa(i)})
		node := app.NodeID()
		executor.MustRegister(app, "incr", func(ctx context.Context, _ struct{}) (int, error) {
			st := executor.State(ctx, "counters")
			var n int
			rev, err := st.Get(ctx, "hits", &n)
			if err != nil {
				return 0, err
			}
			read <- struct{}{}
			<-both // the other task has read the same revision
			_, err = st.CAS(ctx, "hits", n+1, rev)
			mu.Lock()
			nodes[node] = true
			mu.Unlock()
			outcomes <- outcome{node, err}
			if err != nil {
				return 0, executor.Cancel("lost the race: " + err.Error())
			}
			return n + 1, nil
		}, nil)
		apps = append(apps, app)
	}
	ctx := context.Background()
	_, err := apps[0].State("counters").CAS(ctx, "hits", 41, 0)
	require.NoError(t, err)
	_, err = apps[0].State("counters").CAS(ctx, "hits", 0, 0)
	require.ErrorIs(t, err, executor.ErrStateConflict, "creating a key that exists")
	for _, a := range apps {
		start(t, a)
	}
	t1 := submit(t, apps[0], "incr", nil, &executor.SubmitOptions{Queue: "q0"})
	t2 := submit(t, apps[0], "incr", nil, &executor.SubmitOptions{Queue: "q1"})
	recv(t, read, "the first read")
	recv(t, read, "the second read")
	close(both)
	o1, o2 := recv(t, outcomes, "a CAS"), recv(t, outcomes, "the other CAS")
	require.NotEqual(t, o1.node, o2.node, "the two tasks ran on two workers")
	require.NotEqual(t, o1.err == nil, o2.err == nil, "exactly one CAS wins: %v, %v", o1.err, o2.err)
	lost := o1.err
	if lost == nil {
		lost = o2.err
	}
	require.ErrorIs(t, lost, executor.ErrStateConflict)

	var n int
	_, err = apps[0].State("counters").Get(ctx, "hits", &n)
	require.NoError(t, err)
	require.Equal(t, 42, n)
	f1, f2 := waitTask(t, apps[0], t1.ID), waitTask(t, apps[0], t2.ID)
	require.ElementsMatch(t, []string{events.StatusSuccess, events.StatusCancel}, []string{f1.Status, f2.Status})

	// The log has the app's create and the winner's write, nothing of the
	// loser's.
	ws := stateWrites(t, b)
	require.Len(t, ws, 2)
	require.Empty(t, ws[0].Event.TaskID)
	require.Equal(t, apps[0].NodeID(), ws[0].W.By)
	winner := f1
	if f2.Status == events.StatusSuccess {
		winner = f2
	}
	require.Equal(t, winner.ID, ws[1].Event.TaskID)
	require.JSONEq(t, "42", string(ws[1].W.Value))
	requireRevisionChains(t, ws)
}

// TestTaskOwnState has a task keep a checkpoint in its own state that its
// retry reads back; another task does not see it.
func TestTaskOwnState(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "resumable", func(ctx context.Context, _ struct{}) (int, error) {
		st := executor.TaskState(ctx)
		var done int
		if _, err := st.Get(ctx, "done", &done); err != nil && !errors.Is(err, executor.ErrStateNotFound) {
			return 0, err
		}
		if done == 0 {
			if _, err := st.Set(ctx, "done", 5); err != nil {
				return 0, err
			}
			return 0, errors.New("crashed half way")
		}
		return done, nil
	}, &executor.TaskOptions{Retry: 1})
	start(t, app)
	s := submit(t, app, "resumable", nil, nil)
	got, err := executor.Result[int](waitTask(t, app, s.ID))
	require.NoError(t, err)
	require.Equal(t, 5, got, "the retry read the first attempt's checkpoint")

	var v int
	_, err = app.TaskState(s.ID).Get(context.Background(), "done", &v)
	require.NoError(t, err)
	require.Equal(t, 5, v)
	_, err = app.TaskState("another-task").Get(context.Background(), "done", &v)
	require.ErrorIs(t, err, executor.ErrStateNotFound)

	ws := stateWrites(t, b)
	require.Len(t, ws, 1)
	require.Equal(t, events.StateTask, ws[0].W.Kind)
	require.Equal(t, s.ID, ws[0].W.Scope)
	require.Equal(t, s.ID, ws[0].Event.TaskID)
	require.Equal(t, 1, ws[0].Event.Attempt)

	// Outside a task, the package functions refuse.
	_, err = executor.State(context.Background(), "x").Set(context.Background(), "k", 1)
	require.ErrorIs(t, err, executor.ErrNotInTask)
	_, err = app.State("bad.scope").Set(context.Background(), "k", 1)
	require.ErrorIs(t, err, executor.ErrInvalidInput)
	_, err = app.State("ok").Set(context.Background(), "bad.key", 1)
	require.ErrorIs(t, err, executor.ErrInvalidInput)
	_, err = app.State("ok").Get(context.Background(), "", nil)
	require.ErrorIs(t, err, executor.ErrInvalidInput)
	_, err = app.State("ok").Set(context.Background(), "k", make(chan int))
	require.ErrorIs(t, err, executor.ErrInvalidInput, "a value that does not encode")
	_, err = app.State("ok").Set(context.Background(), "big", strings.Repeat("x", events.MaxStateValueSize))
	require.ErrorIs(t, err, events.ErrTooLarge)
	_, err = app.State("ok").Get(context.Background(), "big", nil)
	require.ErrorIs(t, err, executor.ErrStateNotFound)
	require.Empty(t, stateWrites(t, b)[1:], "no bad write wrote anything")
}
