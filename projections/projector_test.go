package projections_test

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/projections"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// Issue test 1: after a run with successes, errors, retries, a trigger
// error and a cancelled task, a rebuilt projection equals the live one, row
// for row; and the live one says what happened.
func TestRebuildEqualsLive(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)

	s := runScenario(t, b)
	s.stop(t)
	ctx := ctxFor(t)
	require.NoError(t, p.CatchUp(ctx))
	end := logEnd(t, b)
	require.Equal(t, end, p.LastSeq())

	live := openDB(t, path, true)
	requireEqual(t, live, build(t, b, 0))

	// Every task's projected state matches its final record.
	for label, want := range s.tasks {
		got, err := live.Task(ctx, want.ID)
		require.NoError(t, err, label)
		require.Equal(t, want.Status, got.Status, label)
		require.Equal(t, want.Attempt, got.Attempt, label)
		require.Equal(t, want.Name, got.Name, label)
		require.Equal(t, want.Error, got.Error, label)
		require.Equal(t, want.Reason, got.Reason, label)
		if len(want.Result) > 0 {
			require.JSONEq(t, string(want.Result), string(got.Result), label)
		}
		require.False(t, got.FinishedAt.IsZero(), label)
		require.NotEmpty(t, got.Attempts, label)
	}
	flaky, err := live.Task(ctx, s.tasks["flaky"].ID)
	require.NoError(t, err)
	require.Len(t, flaky.Attempts, 2)
	require.Equal(t, events.StatusRetry, flaky.Attempts[0].Status)
	require.Equal(t, flaky.ID+"#2", flaky.Attempts[0].RetryChild)
	require.Equal(t, flaky.ID+"#1", flaky.Attempts[1].RetryParent)
	require.Equal(t, events.StatusSuccess, flaky.Attempts[1].Status)
	require.Equal(t, []string{"flaky", "math", "extra-tag"}, flaky.Tags)

	add, err := live.Task(ctx, s.tasks["add1"].ID)
	require.NoError(t, err)
	require.JSONEq(t, `{"A":1,"B":1}`, string(add.KwSubmitted))
	require.JSONEq(t, `{"A":2,"B":100,"tagged":true}`, string(add.KwExecuted))
	require.JSONEq(t, `102`, string(add.Result))
	for _, ts := range []struct{ name, v string }{
		{"created", add.CreatedAt.String()},
		{"queued", add.QueuedAt.String()},
		{"started", add.StartedAt.String()},
		{"executed", add.ExecutedAt.String()},
		{"finished", add.FinishedAt.String()},
	} {
		require.NotContains(t, ts.v, "0001-01-01", ts.name)
	}
	require.False(t, add.FinishedAt.Before(add.ExecutedAt))

	// Queries: by status, name, tag; plugin calls by plugin and outcome.
	page, err := live.Tasks(ctx, projections.TaskFilter{Status: events.StatusError})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{s.tasks["fail"].ID, s.tasks["unknown"].ID}, taskIDs(page.Tasks))
	page, err = live.Tasks(ctx, projections.TaskFilter{Tag: "math"})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 4) // three adds and flaky
	page, err = live.Tasks(ctx, projections.TaskFilter{Name: "add", Limit: 2})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 2)
	require.NotEmpty(t, page.Next)
	next, err := live.Tasks(ctx, projections.TaskFilter{Name: "add", Limit: 2, Cursor: page.Next})
	require.NoError(t, err)
	require.Len(t, next.Tasks, 1)
	require.Empty(t, next.Next)
	all := append(taskIDs(page.Tasks), taskIDs(next.Tasks)...)
	require.ElementsMatch(t, []string{s.tasks["add0"].ID, s.tasks["add1"].ID, s.tasks["add2"].ID}, all)

	calls, err := live.PluginCalls(ctx, projections.CallFilter{Plugin: "tagger", Outcome: string(events.OutcomeApplied)})
	require.NoError(t, err)
	require.Len(t, calls.Calls, 3)
	for _, c := range calls.Calls {
		require.Equal(t, "2.1", c.Version)
		require.NotZero(t, c.InvokeSeq)
		require.NotZero(t, c.PatchSeq)
	}
	shadow, err := live.PluginCalls(ctx, projections.CallFilter{Plugin: "scale-next", Outcome: string(events.OutcomeShadow)})
	require.NoError(t, err)
	require.NotEmpty(t, shadow.Calls)
	none, err := live.RejectedEvents(ctx, 0, 0)
	require.NoError(t, err)
	require.Empty(t, none)
}

func taskIDs(ts []projections.Task) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// Issue test 3: messages on the stream that are not valid events of ours are
// recorded as rejected with their sequence and reason; the projector goes on
// and nothing else changes.
func TestRejectedEvents(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	app := newApp(t, b)
	type in struct{ N int }
	var done []string
	registerEcho(app)
	var before, after []byte
	startApp(t, app)
	done = append(done, submitAndWait(t, app, "echo", in{1}, nil).ID)

	ctx := ctxFor(t)
	require.NoError(t, p.CatchUp(ctx))
	live := openDB(t, path, true)
	before = dumpBytes(t, live)

	// A rogue publisher: garbage on a fact subject, an event of an unknown
	// type, a fact whose task id contradicts its subject, and a fact whose
	// data is not a fact.
	js := b.JetStream()
	seqs := map[uint64]string{}
	pub := func(m *nats.Msg, what string) {
		ack, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
		seqs[ack.Sequence] = what
	}
	pub(&nats.Msg{Subject: "qtasks.trigger.x.y", Data: []byte("\x00garbage{")}, "garbage")
	unknown := events.Event{ID: "u1", Source: "rogue", Type: "com.example.unknown", Data: []byte(`{}`), DataContentType: events.ContentTypeJSON}
	pub(bus.Message("qtasks.trigger.storage_add.t1", "", &unknown), "unknown type")
	mismatch := events.Event{
		ID: "m1", Source: "rogue", Type: events.TypeTriggerPrefix + events.StorageAdd, Trigger: events.StorageAdd,
		TaskID: "other", Data: []byte(`{"input":{}}`), DataContentType: events.ContentTypeJSON,
	}
	pub(bus.Message(events.FactSubject(events.StorageAdd, "t2"), "", &mismatch), "task id mismatch")
	notFact := events.Event{
		ID: "n1", Source: "rogue", Type: events.TypeTriggerPrefix + events.StorageAdd, Trigger: events.StorageAdd,
		TaskID: "t3", Data: []byte(`[1,2,3]`), DataContentType: events.ContentTypeJSON,
	}
	pub(bus.Message(events.FactSubject(events.StorageAdd, "t3"), "", &notFact), "not a fact")
	badModel := events.Event{
		ID: "b1", Source: "rogue", Type: events.TypeTriggerPrefix + events.StorageRemoveFinishedTask,
		Trigger: events.StorageRemoveFinishedTask, TaskID: done[0], Data: []byte(`{"input":{"model":{"id":"someone-else","attempt":1,"status":"success"}}}`),
		DataContentType: events.ContentTypeJSON,
	}
	pub(bus.Message(events.FactSubject(events.StorageRemoveFinishedTask, done[0]), "", &badModel), "final record of another task")

	// The projector goes on: a task after the garbage is projected.
	done = append(done, submitAndWait(t, app, "echo", in{2}, nil).ID)
	require.NoError(t, app.Stop(ctx)) // its last facts are in the log
	require.NoError(t, p.CatchUp(ctx))

	rej, err := live.RejectedEvents(ctx, 0, 0)
	require.NoError(t, err)
	require.Len(t, rej, len(seqs))
	for _, r := range rej {
		require.Contains(t, seqs, r.Seq, "rejected %+v", r)
		require.NotEmpty(t, r.Reason, seqs[r.Seq])
		t.Logf("seq %d (%s): %s", r.Seq, seqs[r.Seq], r.Reason)
	}
	got, err := live.Task(ctx, done[1])
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, got.Status)
	first, err := live.Task(ctx, done[0])
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, first.Status)
	require.JSONEq(t, `{"N":1}`, string(first.Result))

	// Nothing but rejected_events, meta and the second task's rows changed:
	// every line of the dump before is still there.
	after = dumpBytes(t, live)
	lines := splitLines(after)
	for _, l := range splitLines(before) {
		if isMetaLine(l) {
			continue
		}
		require.True(t, slices.Contains(lines, l), "line lost: %s", l)
	}
	requireEqual(t, live, build(t, b, 0))
}

func registerEcho(app *executor.App) {
	executor.MustRegister(app, "echo", func(_ context.Context, in map[string]any) (map[string]any, error) { return in, nil }, nil)
}

func dumpBytes(t *testing.T, db *projections.DB) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, db.Dump(ctxFor(t), &buf))
	return buf.Bytes()
}

func splitLines(b []byte) []string { return strings.Split(strings.TrimSpace(string(b)), "\n") }

func isMetaLine(l string) bool { return strings.HasPrefix(l, `["last_seq", `) }

// A rebuild while the projector runs: readers of the old file go on; the
// projector notices the swap, reopens and catches up from where the rebuild
// stopped; the result equals a rebuild.
func TestRebuildWhileProjecting(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, &projections.ProjectorConfig{SwapCheck: 10 * time.Millisecond})
	recorded := projectionstest.ReadFile(t, projectionstest.ScenarioLog())
	half := len(recorded) / 2
	projectionstest.Publish(t, b, projectionstest.All(recorded[:half]))
	ctx := ctxFor(t)
	require.NoError(t, p.CatchUp(ctx))
	old := openDB(t, path, true)
	before := dumpBytes(t, old)

	st, err := projections.Rebuild(ctx, b, path, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(half), st.LastSeq)
	projectionstest.Publish(t, b, projectionstest.All(recorded[half:]))
	end := logEnd(t, b)
	bustest.WaitFor(t, waitLimit, "the projector to reopen the rebuilt file and catch up", func() bool {
		db, err := projections.Open(ctx, path, &projections.Options{ReadOnly: true})
		if err != nil {
			return false
		}
		defer db.Close()
		n, err := db.LastSeq(ctx)
		return err == nil && n == end
	})
	requireEqual(t, openDB(t, path, true), build(t, b, 0))
	require.Equal(t, before, dumpBytes(t, old), "a reader of the old file sees it unchanged")
}
