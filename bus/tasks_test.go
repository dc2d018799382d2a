package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

func newTask(id string) events.Task {
	return events.Task{
		ID: id, Name: "add", Queue: "default", Priority: 1, Status: events.StatusNew,
		Args: json.RawMessage(`[1,2]`), Kw: json.RawMessage(`{"x":1}`),
		Attempt: 1, Retry: 2, Tags: []string{"a"},
		CreatedAt: fixedTime, UpdatedAt: fixedTime,
		Trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

func recv(t *testing.T, ch <-chan events.Task) events.Task {
	t.Helper()
	select {
	case task, ok := <-ch:
		require.True(t, ok, "watch closed early")
		return task
	case <-time.After(wait):
		t.Fatalf("no task update in %v", wait)
		return events.Task{}
	}
}

func TestCreateTaskIsIdempotent(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)

	task := newTask("t1")
	rec, created, err := b.CreateTask(ctx, task)
	require.NoError(t, err)
	require.True(t, created)
	require.NotZero(t, rec.Revision)
	require.Equal(t, task, rec.Task)

	again := task
	again.Priority = 9
	again.Args = json.RawMessage(`["other"]`)
	rec2, created, err := b.CreateTask(ctx, again)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, rec, rec2, "the first record wins")

	got, err := b.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, rec, got)
}

func TestUpdateTaskCompareAndSet(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	rec, _, err := b.CreateTask(ctx, newTask("t1"))
	require.NoError(t, err)

	running := rec.Task
	running.Status = events.StatusProcess
	running.Worker = "w1"
	rev, err := b.UpdateTask(ctx, running, rec.Revision)
	require.NoError(t, err)
	require.Greater(t, rev, rec.Revision)

	// A second writer still holding the first revision loses.
	other := rec.Task
	other.Status = events.StatusCancel
	_, err = b.UpdateTask(ctx, other, rec.Revision)
	require.ErrorIs(t, err, bus.ErrConflict)

	got, err := b.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, bus.TaskRecord{Task: running, Revision: rev}, got)

	// Updating with the current revision works again.
	done := running
	done.Status = events.StatusSuccess
	done.Result = json.RawMessage(`3`)
	rev2, err := b.UpdateTask(ctx, done, got.Revision)
	require.NoError(t, err)
	got, err = b.GetTask(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, bus.TaskRecord{Task: done, Revision: rev2}, got)

	// A revision from the future conflicts too.
	_, err = b.UpdateTask(ctx, done, rev2+100)
	require.ErrorIs(t, err, bus.ErrConflict)
	// And so does "must not exist yet" for an existing task.
	_, err = b.UpdateTask(ctx, done, 0)
	require.ErrorIs(t, err, bus.ErrConflict)
}

func TestWatchTask(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	rec, _, err := b.CreateTask(ctx, newTask("t1"))
	require.NoError(t, err)

	wctx, stop := context.WithCancel(ctx)
	ch, err := b.WatchTask(wctx, "t1")
	require.NoError(t, err)
	require.Equal(t, rec.Task, recv(t, ch), "the current record comes first")

	task := rec.Task
	rev := rec.Revision
	for _, st := range []string{events.StatusProcess, events.StatusSuccess} {
		task.Status = st
		rev, err = b.UpdateTask(ctx, task, rev)
		require.NoError(t, err)
		require.Equal(t, task, recv(t, ch))
	}

	// Another task's changes are not delivered.
	_, _, err = b.CreateTask(ctx, newTask("t2"))
	require.NoError(t, err)
	task.Error = "late note"
	_, err = b.UpdateTask(ctx, task, rev)
	require.NoError(t, err)
	require.Equal(t, task, recv(t, ch))

	stop()
	select {
	case _, ok := <-ch:
		for ok { // drain whatever was in flight
			_, ok = <-ch
		}
	case <-time.After(wait):
		t.Fatal("watch channel not closed after the context ended")
	}
}

func TestWatchTaskBeforeItExists(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	ch, err := b.WatchTask(ctx, "future")
	require.NoError(t, err)
	rec, created, err := b.CreateTask(ctx, newTask("future"))
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, rec.Task, recv(t, ch))
}

func TestTaskNotFoundAndInvalidIDs(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)

	_, err := b.GetTask(ctx, "nope")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)

	for _, id := range []string{"", "a.b", "a b", "a*", ">", "a\nb"} {
		_, err := b.GetTask(ctx, id)
		require.ErrorIs(t, err, bus.ErrTaskNotFound, "GetTask(%q)", id)
		_, err = b.WatchTask(ctx, id)
		require.Error(t, err, "WatchTask(%q)", id)
		_, _, err = b.CreateTask(ctx, newTask(id))
		require.Error(t, err, "CreateTask(%q)", id)
		_, err = b.UpdateTask(ctx, newTask(id), 0)
		require.Error(t, err, "UpdateTask(%q)", id)
	}
	// Nothing was stored by the rejected calls.
	require.Zero(t, streamMsgs(ctx, t, b, "KV_"+bus.BucketTasks))
}

func TestEnqueueDeduplicatesAttempts(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)

	task := newTask("t1")
	require.NoError(t, b.Enqueue(ctx, task, "qtasks/test"))
	require.NoError(t, b.Enqueue(ctx, task, "qtasks/test"))
	require.Equal(t, uint64(1), streamMsgs(ctx, t, b, bus.StreamTasks))

	s, err := b.JetStream().Stream(ctx, bus.StreamTasks)
	require.NoError(t, err)
	raw, err := s.GetLastMsgForSubject(ctx, events.RunSubject("default"))
	require.NoError(t, err)
	require.Equal(t, "t1:1", raw.Header.Get(events.HeaderMsgID))
	ev, err := events.Decode(events.Headers(raw.Header), raw.Data)
	require.NoError(t, err)
	require.Equal(t, events.TypeTask, ev.Type)
	require.Equal(t, "t1", ev.TaskID)
	require.Equal(t, 1, ev.Attempt)
	require.Equal(t, task.Trace, ev.TraceParent)
	var got events.Task
	require.NoError(t, json.Unmarshal(ev.Data, &got))
	require.Equal(t, task, got)

	// The next attempt is a new message.
	task.Attempt = 2
	require.NoError(t, b.Enqueue(ctx, task, "qtasks/test"))
	require.Equal(t, uint64(2), streamMsgs(ctx, t, b, bus.StreamTasks))

	// Work-queue retention: a worker's ack removes the task from the queue.
	c, err := b.TaskConsumer(ctx, "default", 30*time.Second, -1)
	require.NoError(t, err)
	for _, attempt := range []int{1, 2} {
		m, err := c.Next(jetstream.FetchMaxWait(wait))
		require.NoError(t, err)
		ev, err := events.Decode(events.Headers(m.Headers()), m.Data())
		require.NoError(t, err)
		require.Equal(t, attempt, ev.Attempt)
		require.NoError(t, m.DoubleAck(ctx))
	}
	// The server removes acked messages asynchronously.
	bustest.WaitFor(t, wait, "acked tasks to leave the queue", func() bool {
		return streamMsgs(ctx, t, b, bus.StreamTasks) == 0
	})

	_, err = b.TaskConsumer(ctx, "bad.queue", time.Second, 1)
	require.Error(t, err)
}

func TestPluginState(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	a, o := b.PluginState("alpha"), b.PluginState("omega")

	_, _, err := a.Get(ctx, "k")
	require.ErrorIs(t, err, bus.ErrStateNotFound)

	rev, err := a.Put(ctx, "k", []byte("a1"))
	require.NoError(t, err)
	v, got, err := a.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("a1"), v)
	require.Equal(t, rev, got)

	// Another plugin's key of the same name is another key.
	_, _, err = o.Get(ctx, "k")
	require.ErrorIs(t, err, bus.ErrStateNotFound)
	_, err = o.Put(ctx, "k", []byte("o1"))
	require.NoError(t, err)
	v, _, err = a.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("a1"), v)

	// Compare-and-set.
	rev2, err := a.Update(ctx, "k", []byte("a2"), rev)
	require.NoError(t, err)
	_, err = a.Update(ctx, "k", []byte("lost"), rev)
	require.Error(t, err, "stale revision")
	v, got, err = a.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("a2"), v)
	require.Equal(t, rev2, got)

	// Revision 0 means "create".
	_, err = a.Update(ctx, "fresh", []byte("f1"), 0)
	require.NoError(t, err)
	_, err = a.Update(ctx, "fresh", []byte("f2"), 0)
	require.Error(t, err, "already exists")

	// Delete.
	require.NoError(t, a.Delete(ctx, "k"))
	_, _, err = a.Get(ctx, "k")
	require.ErrorIs(t, err, bus.ErrStateNotFound)
	v, _, err = o.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("o1"), v, "deleting one plugin's key leaves the other's")
	_, err = a.Update(ctx, "k", []byte("a3"), 0)
	require.NoError(t, err, "a deleted key can be created again")

	// Invalid keys are rejected before anything is written.
	before := streamMsgs(ctx, t, b, "KV_"+bus.BucketPluginState)
	for _, k := range []string{"", "a.b", "a b", "*", ">"} {
		_, _, err := a.Get(ctx, k)
		require.Error(t, err, "Get(%q)", k)
		require.NotErrorIs(t, err, bus.ErrStateNotFound, "Get(%q)", k)
		_, err = a.Put(ctx, k, []byte("x"))
		require.Error(t, err, "Put(%q)", k)
		_, err = a.Update(ctx, k, []byte("x"), 0)
		require.Error(t, err, "Update(%q)", k)
		require.Error(t, a.Delete(ctx, k), "Delete(%q)", k)
	}
	// One plugin cannot reach into another's namespace with a dotted key.
	_, _, err = a.Get(ctx, "..omega.k")
	require.Error(t, err)
	require.Equal(t, before, streamMsgs(ctx, t, b, "KV_"+bus.BucketPluginState))
}

// A finished record expires after Config.FinishedTaskTTL; a record still in
// play does not.
func TestFinishedTaskRecordsExpire(t *testing.T) {
	ctx := testCtx(t)
	ttl := func(b *bus.Bus, id string) string {
		t.Helper()
		s, err := b.JetStream().Stream(ctx, "KV_"+bus.BucketTasks)
		require.NoError(t, err)
		m, err := s.GetLastMsgForSubject(ctx, "$KV."+bus.BucketTasks+"."+id)
		require.NoError(t, err)
		return m.Header.Get("Nats-TTL")
	}
	finish := func(b *bus.Bus, id, status string) {
		t.Helper()
		rec, _, err := b.CreateTask(ctx, newTask(id))
		require.NoError(t, err)
		m := rec.Task
		m.Status = status
		_, err = b.UpdateTask(ctx, m, rec.Revision)
		require.NoError(t, err)
	}

	b := bustest.Open(t, &bus.Config{FinishedTaskTTL: time.Second})
	for _, st := range []string{events.StatusSuccess, events.StatusError, events.StatusCancel} {
		finish(b, "done-"+st, st)
		require.Equal(t, "1s", ttl(b, "done-"+st), st)
	}
	for _, st := range []string{events.StatusProcess, events.StatusRetry} {
		finish(b, "live-"+st, st)
		require.Empty(t, ttl(b, "live-"+st), "%s records stay", st)
	}
	bustest.WaitFor(t, wait, "finished records to expire", func() bool {
		for _, st := range []string{events.StatusSuccess, events.StatusError, events.StatusCancel} {
			if _, err := b.GetTask(ctx, "done-"+st); !errors.Is(err, bus.ErrTaskNotFound) {
				return false
			}
		}
		return true
	})
	for _, st := range []string{events.StatusProcess, events.StatusRetry} {
		_, err := b.GetTask(ctx, "live-"+st)
		require.NoError(t, err, st)
	}

	// Negative keeps them.
	keep := bustest.Open(t, &bus.Config{FinishedTaskTTL: -1})
	finish(keep, "kept", events.StatusSuccess)
	require.Empty(t, ttl(keep, "kept"))
}

// A bucket made without TTLs (an older qtasks, or FinishedTaskTTL < 0)
// takes them on when the bus opens again with them.
func TestTaskBucketTakesTTLsOnReopen(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	open := func(ttl time.Duration) *bus.Bus {
		t.Helper()
		b, err := bus.Open(ctx, bus.Config{DataDir: dir, FinishedTaskTTL: ttl, Logger: bustest.Logger(t)})
		require.NoError(t, err)
		return b
	}
	b := open(-1)
	_, _, err := b.CreateTask(ctx, newTask("old"))
	require.NoError(t, err)
	b.Close()

	b = open(time.Second)
	defer b.Close()
	rec, err := b.GetTask(ctx, "old")
	require.NoError(t, err)
	m := rec.Task
	m.Status = events.StatusSuccess
	_, err = b.UpdateTask(ctx, m, rec.Revision)
	require.NoError(t, err)
	bustest.WaitFor(t, wait, "the finished record to expire", func() bool {
		_, err := b.GetTask(ctx, "old")
		return errors.Is(err, bus.ErrTaskNotFound)
	})
}

// GetTask reads a record with a direct get, and through the API when the
// bucket does not allow direct gets (made so by an older version): the
// same record and revision either way, and a record taken back is not
// found either way.
func TestGetTaskWithAndWithoutDirectGets(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	rec, _, err := b.CreateTask(ctx, newTask("direct-1"))
	require.NoError(t, err)
	gone, _, err := b.CreateTask(ctx, newTask("direct-2"))
	require.NoError(t, err)
	require.NoError(t, b.DeleteTask(ctx, "direct-2", gone.Revision))
	check := func(how string) {
		t.Helper()
		got, err := b.GetTask(ctx, "direct-1")
		require.NoError(t, err, how)
		require.Equal(t, rec, got, how)
		_, err = b.GetTask(ctx, "direct-2")
		require.ErrorIs(t, err, bus.ErrTaskNotFound, how)
		_, err = b.GetTask(ctx, "direct-3")
		require.ErrorIs(t, err, bus.ErrTaskNotFound, how)
	}
	check("direct get")

	s, err := b.JetStream().Stream(ctx, "KV_"+bus.BucketTasks)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.AllowDirect = false
	_, err = b.JetStream().UpdateStream(ctx, cfg)
	require.NoError(t, err)
	check("no direct gets")
}

// A reader that holds a record's bytes decoded gets its decoding back when
// the record is stored as those bytes, and the stored record otherwise.
func TestGetTaskLatestLike(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	task := newTask("like-1")
	rec, _, err := b.CreateTask(ctx, task)
	require.NoError(t, err)
	stored, err := task.AppendJSON(nil)
	require.NoError(t, err)

	// The same bytes: the caller's decoding, marked so that it shows.
	known := task
	known.Reason = "decoded by the caller"
	got, err := b.GetTaskLatestLike(ctx, task.ID, stored, &known)
	require.NoError(t, err)
	require.Equal(t, bus.TaskRecord{Task: known, Revision: rec.Revision}, got)

	// Other bytes: the record as stored.
	other := task
	other.Priority = 9
	otherData, err := other.AppendJSON(nil)
	require.NoError(t, err)
	got, err = b.GetTaskLatestLike(ctx, task.ID, otherData, &other)
	require.NoError(t, err)
	require.Equal(t, rec, got)

	// A record that is not there is not found, whatever the caller holds.
	_, err = b.GetTaskLatestLike(ctx, "like-2", stored, &known)
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
}
