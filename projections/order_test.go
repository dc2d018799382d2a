package projections_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// storage_add's fact is held until the task is queued (executor/submit.go),
// so a worker that takes the task at once can write the run's
// storage_update before it: the projection must still learn when the task
// was queued from the storage_add that comes second (CI saw a task with no
// queued_at in TestRebuildEqualsLive).
func TestStorageAddAfterTheRunStarted(t *testing.T) {
	t.Parallel()
	msgs := projectionstest.ReadFile(t, logFixture)
	trigger := func(m projectionstest.Msg) string {
		if v := m.Header["ce-trigger"]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	subject := func(m projectionstest.Msg) string {
		if v := m.Header["ce-subject"]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	// The first task's storage_add moves to just after its storage_update.
	add := -1
	for i, m := range msgs {
		if trigger(m) == events.StorageAdd {
			add = i
			break
		}
	}
	require.GreaterOrEqual(t, add, 0)
	id := subject(msgs[add])
	upd := -1
	for i := add + 1; i < len(msgs); i++ {
		if trigger(msgs[i]) == events.StorageUpdate && subject(msgs[i]) == id {
			upd = i
			break
		}
	}
	require.Greater(t, upd, add, "task %s has no storage_update after its storage_add", id)
	moved := append([]projectionstest.Msg{}, msgs[:add]...)
	moved = append(moved, msgs[add+1:upd+1]...)
	moved = append(moved, msgs[add])
	moved = append(moved, msgs[upd+1:]...)

	for _, size := range []int{1, len(moved)} {
		db := openDB(t, t.TempDir()+"/p.db", false)
		for start := 0; start < len(moved); start += size {
			var batch []bus.Stored
			for i := start; i < min(start+size, len(moved)); i++ {
				batch = append(batch, moved[i].Stored(uint64(i+1))...)
			}
			_, err := db.Apply(ctxFor(t), batch)
			require.NoError(t, err)
		}
		task, err := db.Task(ctxFor(t), id)
		require.NoError(t, err)
		require.False(t, task.QueuedAt.IsZero(), "batch size %d: task %s has no queued_at", size, id)
		require.False(t, task.CreatedAt.IsZero())
		require.NotEmpty(t, task.Attempts)
		require.False(t, task.Attempts[0].QueuedAt.IsZero(), "batch size %d: attempt 1 has no queued_at", size)
	}
}
