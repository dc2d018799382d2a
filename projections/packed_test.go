package projections_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// factRows is what a projection says of each fact, in log order, without
// positions: the same facts applied alone or packed say the same.
func factRows(t *testing.T, db *projections.DB) []string {
	t.Helper()
	path := db.Path()
	raw, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	require.NoError(t, err)
	defer raw.Close()
	var out []string
	for _, q := range []string{
		`SELECT coalesce(k.id, ''), f.trigger, f.event_id, f.data FROM facts f LEFT JOIN task_keys k ON k.key = f.task_key ORDER BY f.seq, f.idx`,
		`SELECT c.invocation, c.plugin, c.outcome, coalesce(c.patch, '') FROM plugin_calls c ORDER BY c.fact_seq, c.fact_idx, c.idx`,
		`SELECT id, status, attempt, coalesce(result, ''), error, coalesce(args_executed, ''), coalesce(kw_executed, '') FROM tasks ORDER BY key`,
		`SELECT k.id, b.path, b.plugin, b.op, coalesce(b.value, '') FROM field_blame b JOIN task_keys k ON k.key = b.task_key ORDER BY k.id, b.path`,
		`SELECT subject, reason FROM rejected_events ORDER BY seq, idx`,
	} {
		func() {
			rows, err := raw.QueryContext(ctxFor(t), q)
			require.NoError(t, err)
			defer rows.Close()
			cols, err := rows.Columns()
			require.NoError(t, err)
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				require.NoError(t, rows.Scan(ptrs...))
				out = append(out, fmt.Sprint(vals...))
			}
			require.NoError(t, rows.Err())
		}()
	}
	return out
}

// A log written partly by protocol 2 (every fact alone) and partly as
// design (f) packs it (phase messages): the live projection, fed in
// batches of a few messages with a restart halfway, equals a rebuild, and
// says of every fact, call, task and blame what the projection of the same
// facts all alone says.
func TestPackedLogRebuildEqualsLive(t *testing.T) {
	t.Parallel()
	recorded := projectionstest.ReadFile(t, projectionstest.ScenarioLog())
	packed, phases := projectionstest.Pack(t, recorded, len(recorded)/3)
	require.Greater(t, phases, 10, "the scenario packs")
	require.Less(t, len(packed), len(recorded))

	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	cfg := &projections.ProjectorConfig{BatchSize: 3}
	p := startProjector(t, b, path, cfg)
	half := 2 * len(packed) / 3
	projectionstest.Publish(t, b, projectionstest.All(packed[:half]))
	require.NoError(t, p.CatchUp(ctxFor(t)))
	// A restart: the next projector goes on after the last message applied.
	require.NoError(t, p.Stop(ctxFor(t)))
	projectionstest.Publish(t, b, projectionstest.All(packed[half:]))
	p = startProjector(t, b, path, cfg)
	require.NoError(t, p.CatchUp(ctxFor(t)))
	require.Equal(t, uint64(len(packed)), p.LastSeq())
	live := openDB(t, path, true)
	rebuilt := build(t, b, 0)
	requireEqual(t, live, rebuilt)

	var facts int
	require.NoError(t, b.ReadLog(ctxFor(t), 1, nil, func(s bus.Stored) error {
		if s.Packed() {
			facts++
		}
		return nil
	}))
	require.Positive(t, facts)

	alone := bustest.Open(t, nil)
	projectionstest.Publish(t, alone, projectionstest.All(recorded))
	want := factRows(t, build(t, alone, 0))
	require.Greater(t, len(want), len(recorded)/2)
	require.Equal(t, want, factRows(t, live))

	// Rebuilt in transactions of any size, a message is applied whole.
	for _, size := range []int{1, 2, 5} {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("b%d.db", size))
		_, err := projections.Build(ctxFor(t), b, path, &projections.BuildConfig{BatchSize: size})
		require.NoError(t, err)
		requireEqual(t, live, openDB(t, path, true))
	}
}

// A batch is applied whole: Apply refuses a batch that ends or starts
// inside a message, changing nothing, and a message applied again is
// skipped whole.
func TestApplyWholeMessages(t *testing.T) {
	t.Parallel()
	recorded := projectionstest.ReadFile(t, projectionstest.ScenarioLog())
	packed, _ := projectionstest.Pack(t, recorded, 0)
	var first int
	var all []bus.Stored
	for i, m := range packed {
		ss := m.Stored(uint64(i + 1))
		if len(ss) > 1 && first == 0 {
			first = len(all)
		}
		all = append(all, ss...)
	}
	require.Positive(t, first)
	db := openDB(t, filepath.Join(t.TempDir(), "p.db"), false)
	ctx := context.Background()
	_, err := db.Apply(ctx, all[:first+1])
	require.ErrorIs(t, err, projections.ErrPartialMessage)
	n, err := db.LastSeq(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing applied")
	st, err := db.Apply(ctx, all[:first])
	require.NoError(t, err)
	require.Equal(t, first, st.Applied)
	_, err = db.Apply(ctx, all[first+1:])
	require.ErrorIs(t, err, projections.ErrPartialMessage, "from the middle of a message")
	st, err = db.Apply(ctx, all)
	require.NoError(t, err)
	require.Equal(t, first, st.Skipped)
	require.Equal(t, len(all)-first, st.Applied)
	st, err = db.Apply(ctx, all)
	require.NoError(t, err)
	require.Equal(t, len(all), st.Skipped)
}

// The facts of a phase message are checked one by one: those rejected are
// listed at their index, the others applied; a page of rejections ends
// after a whole message.
func TestRejectedPackedFacts(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	good := bustest.Fact("a", events.StorageGet, 0, `1`)
	unknown := bustest.Fact("a", events.WorkerStart, 0, `2`)
	unknown2 := bustest.Fact("a", events.WorkerStop, 0, `3`)
	seq := bustest.PublishPhase(t, b, events.PhaseIntake, "default", unknown, good, unknown2)
	bustest.PublishPhase(t, b, events.PhaseIntake, "default", bustest.Fact("b", events.WorkerStart, 0, `4`))
	db := build(t, b, 0)
	page, err := db.RejectedEvents(ctxFor(t), 0, 1)
	require.NoError(t, err)
	require.Len(t, page, 2, "the rest of the message's rejections")
	require.Equal(t, []int{0, 2}, []int{page[0].Index, page[1].Index})
	require.Equal(t, seq, page[1].Seq)
	require.Equal(t, events.FactSubject(events.WorkerStart, "default"), page[0].Subject)
	require.Contains(t, page[0].Reason, "process-scope trigger worker_start with a task id attribute")
	next, err := db.RejectedEvents(ctxFor(t), page[1].Seq, 1)
	require.NoError(t, err)
	require.Len(t, next, 1)
	require.Equal(t, seq+1, next[0].Seq)
	require.Equal(t, []string{"1 storage_get a:1:1:storage_get:0"}, positionsOf(t, db), "the good fact at its index")
}

// positionsOf lists the projection's facts as "index trigger id".
func positionsOf(t *testing.T, db *projections.DB) []string {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+db.Path()+"?mode=ro")
	require.NoError(t, err)
	defer raw.Close()
	rows, err := raw.QueryContext(ctxFor(t), `SELECT idx, trigger, event_id FROM facts ORDER BY pos`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var idx int
		var tr, id string
		require.NoError(t, rows.Scan(&idx, &tr, &id))
		out = append(out, fmt.Sprintf("%d %s %s", idx, tr, id))
	}
	require.NoError(t, rows.Err())
	return out
}

// SubmitMany packs the submit and queued facts of many tasks into one
// phase message per queue (protocol 3, PROTOCOL.md §4.4): the projection
// fed live equals a rebuild, every task of the batch is in it with its
// plugin's patch, an observer that reads batches is handed exactly the log's
// facts of its trigger in stream order, and the log's phase messages do
// hold several tasks each.
func TestSubmitManyPacksTasksRebuildEqualsLive(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	app := newApp(t, b)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	startPlugin(t, b, plugins.Spec{
		Name: "stamp", Version: "1", Triggers: []string{events.QTasksAddTaskBeforeBroker},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"B": 10}})
		}),
	})
	var mu sync.Mutex
	var seen []string
	startPlugin(t, b, plugins.Spec{
		Name: "seen", Version: "1", Mode: plugins.Observer, Triggers: []string{events.BrokerAddAfter},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%d/%d %s", c.Seq, c.Index, c.Event.ID))
			mu.Unlock()
			return nil, nil //nolint:nilnil // an observer answers nothing
		}),
	})
	startApp(t, app)

	const n = 700 // three chunks of SubmitMany
	reqs := make([]executor.SubmitRequest, n)
	for i := range reqs {
		reqs[i] = executor.SubmitRequest{Name: "add", Input: addArgs{A: i, B: 1}}
		if i%3 == 2 {
			// A queue no worker serves: its tasks stay queued.
			reqs[i].Options = &executor.SubmitOptions{Queue: "later"}
		}
	}
	ctx := ctxFor(t)
	res, err := app.SubmitMany(ctx, reqs)
	require.NoError(t, err)
	for i, r := range res {
		if i%3 == 2 {
			continue
		}
		got, err := app.Wait(ctx, r.Task.ID)
		require.NoError(t, err)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		require.JSONEq(t, strconv.Itoa(i+10), string(got.Result), "the plugin's patch reached the task")
	}

	// The phase messages of the submission hold many tasks each, of one
	// queue.
	tasksOf := map[uint64]map[string]bool{}
	var logged []string
	require.NoError(t, b.ReadLog(ctx, 1, nil, func(s bus.Stored) error {
		require.NoError(t, s.Err)
		phase, _, _ := events.ParsePhaseSubject(s.Phase)
		if s.Packed() && (phase == events.PhaseSubmit || phase == events.PhaseQueued) {
			if tasksOf[s.Seq] == nil {
				tasksOf[s.Seq] = map[string]bool{}
			}
			tasksOf[s.Seq][s.Event.TaskID] = true
		}
		if s.Event.Trigger == events.BrokerAddAfter {
			logged = append(logged, fmt.Sprintf("%d/%d %s", s.Seq, s.Index, s.Event.ID))
		}
		return nil
	}))
	require.Len(t, logged, n)
	most := 0
	for _, ids := range tasksOf {
		most = max(most, len(ids))
	}
	require.Greater(t, most, 100, "a phase message packs the facts of many tasks")
	chunks := (n + 249) / 250
	require.LessOrEqual(t, len(tasksOf), 2*2*chunks, "a chunk stores one message per phase and queue")

	bustest.WaitFor(t, time.Minute, "the observer's facts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= n
	})
	mu.Lock()
	require.Equal(t, logged, seen, "exactly its trigger's facts, in stream order, each once")
	mu.Unlock()

	require.NoError(t, p.CatchUp(ctx))
	live := openDB(t, path, true)
	requireEqual(t, live, build(t, b, 0))
	for i, r := range res {
		got, err := live.Task(ctx, r.Task.ID)
		require.NoError(t, err)
		want := events.StatusSuccess
		if i%3 == 2 {
			want = events.StatusNew
		}
		require.Equal(t, want, got.Status, "task %d", i)
		require.JSONEq(t, fmt.Sprintf(`{"A":%d,"B":10}`, i), string(got.KwSubmitted), "task %d: as the plugin patched it", i)
	}
}
