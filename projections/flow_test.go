package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// TestStateWritesProjected checks that every state write, from a task or
// from outside one, is a row of state_writes naming its writer, live and
// rebuilt alike; a large value is kept by its digest only.
func TestStateWritesProjected(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	app := newApp(t, b)
	big := strings.Repeat("x", events.MaxStateValueInline+1)
	executor.MustRegister(app, "writer", func(ctx context.Context, _ struct{}) (string, error) {
		st := executor.State(ctx, "shop")
		rev, err := st.Get(ctx, "stock", nil)
		if err != nil {
			return "", err
		}
		if _, err := st.CAS(ctx, "stock", 9, rev); err != nil {
			return "", err
		}
		if _, err := st.Set(ctx, "blob", big); err != nil {
			return "", err
		}
		return "ok", st.Delete(ctx, "blob")
	}, nil)
	startApp(t, app)
	_, err := app.State("shop").Set(ctxFor(t), "stock", 10)
	require.NoError(t, err)
	sub, err := app.Submit(ctxFor(t), "writer", nil, nil)
	require.NoError(t, err)
	got, err := app.Wait(ctxFor(t), sub.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, got.Status, got.Error)

	require.NoError(t, p.CatchUp(ctxFor(t)))
	live := openDB(t, path, true)
	rows, err := live.StateWrites(ctxFor(t), events.StateShared, "shop")
	require.NoError(t, err)
	require.Len(t, rows, 4)
	require.Equal(t, []string{"stock", "stock", "blob", "blob"}, []string{rows[0].Key, rows[1].Key, rows[2].Key, rows[3].Key})
	require.Equal(t, []string{"put", "put", "put", "delete"}, []string{rows[0].Op, rows[1].Op, rows[2].Op, rows[3].Op})
	require.Empty(t, rows[0].TaskID)
	require.Equal(t, app.NodeID(), rows[0].By)
	require.JSONEq(t, "10", string(rows[0].Value))
	for _, r := range rows[1:] {
		require.Equal(t, sub.ID, r.TaskID, "the task is the writer")
		require.Equal(t, 1, r.Attempt)
		require.Equal(t, 1, r.Run)
	}
	require.Equal(t, rows[0].Revision, rows[1].Prev, "the CAS replaced the app's write")
	require.JSONEq(t, "9", string(rows[1].Value))
	require.Empty(t, rows[2].Value, "a value over the inline limit is recorded by digest")
	require.True(t, strings.HasPrefix(rows[2].Digest, "sha256:"))
	require.Equal(t, len(big)+2, rows[2].Size)
	require.Equal(t, rows[2].Revision, rows[3].Prev)
	requireEqual(t, live, build(t, b, 0))
}

// TestTaskOwnStateProjected checks that what a task function writes to its
// own state (executor.TaskState) lands where plugins keep a task's state:
// the final record's extra.state, over what submission put there, and the
// projection's task, live and rebuilt alike; each write a row of
// state_writes naming the task. A task that fails keeps its writes too.
func TestTaskOwnStateProjected(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	app := newApp(t, b)
	executor.MustRegister(app, "own", func(ctx context.Context, in struct{ Fail bool }) (string, error) {
		st := executor.TaskState(ctx)
		if _, err := st.Set(ctx, "step", 2); err != nil {
			return "", err
		}
		if _, err := st.Set(ctx, "phone", "await_phone"); err != nil {
			return "", err
		}
		if _, err := st.Set(ctx, "gone", true); err != nil {
			return "", err
		}
		if err := st.Delete(ctx, "gone"); err != nil { // removed from extra.state too
			return "", err
		}
		if _, err := st.Set(ctx, "step", 3); err != nil { // the last value stands
			return "", err
		}
		if in.Fail {
			return "", errors.New("failed after writing")
		}
		return "ok", nil
	}, nil) // no retry: a failure ends the task
	startApp(t, app)

	initial := map[string]any{events.ExtraState: map[string]any{"keep": 1, "gone": "from submission"}}
	ok, err := app.Submit(ctxFor(t), "own", nil, &executor.SubmitOptions{Extra: initial})
	require.NoError(t, err)
	failed, err := app.Submit(ctxFor(t), "own", map[string]bool{"Fail": true}, nil)
	require.NoError(t, err)
	want := map[string]string{ok.ID: `{"keep":1,"phone":"await_phone","step":3}`, failed.ID: `{"phone":"await_phone","step":3}`}
	for _, id := range []string{ok.ID, failed.ID} {
		got, err := app.Wait(ctxFor(t), id)
		require.NoError(t, err)
		require.JSONEq(t, want[id], string(got.Extra[events.ExtraState]), "the final record's extra.state")
	}

	require.NoError(t, p.CatchUp(ctxFor(t)))
	live := openDB(t, path, true)
	for _, id := range []string{ok.ID, failed.ID} {
		task, err := live.Task(ctxFor(t), id)
		require.NoError(t, err)
		var extra map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(task.Extra, &extra))
		require.JSONEq(t, want[id], string(extra[events.ExtraState]), "the projection's task")
		rows, err := live.StateWrites(ctxFor(t), events.StateTask, id)
		require.NoError(t, err)
		var ops []string
		for _, r := range rows {
			require.Equal(t, id, r.TaskID, "the task is the writer")
			ops = append(ops, r.Op+" "+r.Key)
		}
		require.Equal(t, []string{"put step", "put phone", "put gone", "delete gone", "put step"}, ops, "every write an event")
	}
	okTask, err := live.Task(ctxFor(t), ok.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, okTask.Status)
	failedTask, err := live.Task(ctxFor(t), failed.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusError, failedTask.Status)
	requireEqual(t, live, build(t, b, 0))
}

// TestChainEventsProjected checks that a chain's start, steps and end are
// rows of chain_events linked to the steps' tasks, live and rebuilt alike.
func TestChainEventsProjected(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	app := newApp(t, b)
	executor.MustRegister(app, "inc", func(_ context.Context, in []int) (int, error) {
		s := 1
		for _, x := range in {
			s += x
		}
		return s, nil
	}, nil)
	startApp(t, app)
	c, err := app.Chain(ctxFor(t), executor.Step("inc"), executor.Step("inc"))
	require.NoError(t, err)
	last, err := app.WaitChain(ctxFor(t), c.ID)
	require.NoError(t, err)
	n, err := executor.Result[int](last)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	bustest.WaitFor(t, waitLimit, "the chain's end", func() bool {
		return len(bustest.Events(t, b, events.ChainSubject("*"))) == 3
	})
	require.NoError(t, p.CatchUp(ctxFor(t)))
	live := openDB(t, path, true)
	rows, err := live.ChainEvents(ctxFor(t), c.ID)
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Equal(t, []string{"start", "step", "end"}, []string{rows[0].Action, rows[1].Action, rows[2].Action})
	require.Equal(t, executor.ChainStepID(c.ID, 0), rows[0].TaskID)
	require.Equal(t, executor.ChainStepID(c.ID, 1), rows[1].TaskID)
	require.Equal(t, rows[0].TaskID, rows[1].Prev)
	require.Equal(t, events.StatusSuccess, rows[2].Status)
	task, err := live.Task(ctxFor(t), rows[1].TaskID)
	require.NoError(t, err)
	require.Contains(t, string(task.Extra), c.ID, "the step's record names its chain")
	requireEqual(t, live, build(t, b, 0))
}

// TestLimitWaitsProjected publishes limit events as an executor writes
// them: a valid one is a row of limit_waits, one with a bad limit name is
// rejected, live and rebuilt alike.
func TestLimitWaitsProjected(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	pub := func(id string, lw events.LimitWait) {
		t.Helper()
		data, err := json.Marshal(lw)
		require.NoError(t, err)
		ev := events.Event{
			ID: "limit:" + id, Source: "qtasks/test", Type: events.TypeLimit, Time: time.Now().UTC(),
			DataContentType: events.ContentTypeJSON, Data: data, TaskID: id, Attempt: 1, Run: 2,
		}
		_, err = b.Publish(ctxFor(t), events.LimitSubject("default"), "", &ev)
		require.NoError(t, err)
	}
	pub("task-1", events.LimitWait{Limit: "t-export", Kind: events.LimitConcurrency, WaitedMS: 120, Slot: 1, TookOver: "dead#1#1"})
	pub("task-2", events.LimitWait{Limit: "export", Kind: events.LimitRate, WaitedMS: 5})
	require.NoError(t, p.CatchUp(ctxFor(t)))
	live := openDB(t, path, true)
	rows, err := live.TaskLimitWaits(ctxFor(t), "task-1")
	require.NoError(t, err)
	require.Len(t, rows, 1)
	r := rows[0]
	require.Equal(t, []any{"t-export", events.LimitConcurrency, int64(120), 1, "dead#1#1", 1, 2},
		[]any{r.Limit, r.Kind, r.WaitedMS, r.Slot, r.TookOver, r.Attempt, r.Run})
	rows, err = live.TaskLimitWaits(ctxFor(t), "task-2")
	require.NoError(t, err)
	require.Empty(t, rows, "a limit name without t- or q- is rejected")
	rej, err := live.RejectedEvents(ctxFor(t), 0, 10)
	require.NoError(t, err)
	require.Len(t, rej, 1)
	require.Contains(t, rej[0].Reason, `limit "export"`)
	requireEqual(t, live, build(t, b, 0))
}
