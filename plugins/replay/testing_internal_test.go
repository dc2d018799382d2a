package replay

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// Without Since and TaskIDs, tasks run under test are known from one scan
// of the storage_add facts, with no lookup per task; an invocation recent
// enough that its task's storage_add fact may have come after the scan is
// looked up.
func TestTestingScan(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := bustest.Open(t, nil)
	old := time.Now().Add(-time.Hour)
	publish := func(subject string, ev events.Event) {
		t.Helper()
		_, err := b.Publish(ctx, subject, ev.ID, &ev)
		require.NoError(t, err)
	}
	storageAdd := func(id string, extra map[string]any) {
		t.Helper()
		task := map[string]any{"id": id, "task_name": "calc", "extra": extra}
		data, err := json.Marshal(events.Fact{
			Input:  mustMarshal(t, map[string]any{"uuid": id, "task_status": task}),
			Output: mustMarshal(t, map[string]any{"uuid": id, "task_status": task}),
		})
		require.NoError(t, err)
		publish(events.FactSubject(events.StorageAdd, id), events.Event{
			ID: id + ":1:0:storage_add:0", Source: "qtasks/n", Type: events.TypeTriggerPrefix + events.StorageAdd,
			Time: old, DataContentType: events.ContentTypeJSON, Data: data, TaskID: id, TaskName: "calc",
			Trigger: events.StorageAdd, Attempt: 1,
		})
	}
	invoke := func(id string, at time.Time) {
		t.Helper()
		publish(events.InvokeSubject("p", events.TaskExecutorArgsReplace), events.Event{
			ID: events.InvocationID(id, 1, 1, events.TaskExecutorArgsReplace, 0, "p"), Source: "qtasks/n",
			Type: events.TypeInvokePrefix + events.TaskExecutorArgsReplace, Time: at, DataContentType: events.ContentTypeJSON,
			Data: []byte(`{"args":[],"kw":{}}`), TaskID: id, TaskName: "calc", Trigger: events.TaskExecutorArgsReplace,
			Attempt: 1, Run: 1, Plugin: "p", TimeoutMS: 5000,
		})
	}
	storageAdd("prod", nil)
	storageAdd("test", map[string]any{"testing": true})
	invoke("prod", old)
	invoke("test", old)
	invoke("never-stored", old) // no storage_add fact: not under test

	read := func(f Filter, now time.Time) ([]string, *logSource) {
		t.Helper()
		s, err := newLogSource(b, "p", f)
		require.NoError(t, err)
		s.now = func() time.Time { return now }
		var ids []string
		require.NoError(t, s.each(ctx, func(r Record) error {
			ids = append(ids, r.Invocation.TaskID)
			return nil
		}, nil))
		return ids, s
	}
	ids, s := read(Filter{}, time.Now())
	require.Equal(t, []string{"prod", "never-stored"}, ids)
	require.True(t, s.scanned)
	require.Equal(t, map[string]bool{"test": true}, s.markedIDs)
	require.Empty(t, s.underTest, "no task was looked up")

	// Invocations within a minute of the scan are looked up.
	ids, s = read(Filter{}, old.Add(30*time.Second))
	require.Equal(t, []string{"prod", "never-stored"}, ids)
	require.Len(t, s.underTest, 3)

	// A Since window looks tasks up by their records instead of scanning.
	for _, id := range []string{"prod", "test", "never-stored"} {
		_, _, err := b.CreateTask(ctx, events.Task{ID: id, Name: "calc", Queue: "default", Status: events.StatusSuccess, Attempt: 1, CreatedAt: old})
		require.NoError(t, err)
	}
	ids, s = read(Filter{Since: old.Add(-time.Minute)}, time.Now())
	require.Equal(t, []string{"prod", "never-stored"}, ids)
	require.False(t, s.scanned)
	require.Equal(t, map[string]bool{"prod": false, "test": true, "never-stored": false}, s.underTest)
	// The lookup of prod noted test too, which took no read of its own;
	// never-stored has no fact to note.
	require.Equal(t, 2, s.lookups)

	// A task whose record is gone (finished records expire) makes one scan
	// for all, not a read of the whole log for each.
	rec, err := b.GetTask(ctx, "prod")
	require.NoError(t, err)
	require.NoError(t, b.DeleteTask(ctx, "prod", rec.Revision))
	ids, s = read(Filter{Since: old.Add(-time.Minute)}, time.Now())
	require.Equal(t, []string{"prod", "never-stored"}, ids)
	require.True(t, s.scanned)
	require.Equal(t, map[string]bool{"test": true}, s.markedIDs)
	require.Empty(t, s.underTest, "after the scan, the scan answers")
	require.Zero(t, s.lookups)

	ids, s = read(Filter{IncludeTesting: true}, time.Now())
	require.Equal(t, []string{"prod", "test", "never-stored"}, ids)
	require.False(t, s.scanned)
}

func mustMarshal(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
