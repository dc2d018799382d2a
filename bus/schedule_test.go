package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// A plugin's user, with the least rights, can write neither a schedule
// event, nor a schedule, nor a delayed task message: nothing a plugin
// writes can make a tick or a task.
func TestPluginCannotWriteSchedules(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	perms := bus.PluginPermissions(events.PluginInfo{Name: "alice", Mode: events.ModeMutator})
	b := bustest.Open(t, &bus.Config{User: "admin", Password: "admin-pw", Users: []bus.User{
		{Name: "admin", Password: "admin-pw"},
		{Name: "alice", Password: "alice-pw", Permissions: &perms},
	}})
	nc, err := b.Dial(nats.UserInfo("alice", "alice-pw"), nats.CustomInboxPrefix(bus.PluginInboxPrefix("alice")))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	for _, subject := range []string{
		events.ScheduleSubject("nightly"),
		events.DelaySubject("default", "some-task"),
		"$KV." + bus.BucketSchedules + ".nightly",
	} {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = js.Publish(pctx, subject, []byte(`{}`))
		cancel()
		require.Error(t, err, subject)
	}
	ev, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	_, err = ev.GetLastMsgForSubject(ctx, events.SubjectSchedule+".>")
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	list, err := b.ListSchedules(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	delayed, err := b.Delayed(ctx, "default", "some-task")
	require.NoError(t, err)
	require.False(t, delayed)
}

// The task stream allows message schedules, and a delayed task message
// waits on its own subject (once per attempt) until it is due, then on its
// queue's run subject.
func TestDelayedEnqueue(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	require.True(t, b.SchedulesDelays())
	due := time.Now().Add(time.Hour)
	task := events.Task{ID: "t1", Name: "later", Queue: "default", Status: events.StatusNew, Attempt: 1, NotBefore: due}
	require.NoError(t, b.Enqueue(ctx, task, "test"))
	delayed, err := b.Delayed(ctx, "default", "t1")
	require.NoError(t, err)
	require.True(t, delayed)
	queued, err := b.QueuedTaskIDs(ctx, "default")
	require.NoError(t, err)
	require.Empty(t, queued)
	// The same attempt again is a duplicate: still one schedule.
	require.NoError(t, b.Enqueue(ctx, task, "test"))
	st, err := b.TaskStream().Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), st.State.Msgs)

	// Due soon: the server moves it to the run subject.
	soon := task
	soon.ID, soon.NotBefore = "t2", time.Now().Add(time.Second)
	require.NoError(t, b.Enqueue(ctx, soon, "test"))
	bustest.WaitFor(t, 30*time.Second, "the delayed task on its queue", func() bool {
		q, err := b.QueuedTaskIDs(ctx, "default")
		require.NoError(t, err)
		return q["t2"]
	})
	require.False(t, time.Now().Before(soon.NotBefore), "moved to its queue before its due time")
	delayed, err = b.Delayed(ctx, "default", "t2")
	require.NoError(t, err)
	require.False(t, delayed, "the schedule message is purged once it fired")
}

// A task stream made before delayed tasks (no message schedules, no delay
// subjects) is brought up to date when qtasksd next starts on it.
func TestTaskStreamUpgradedForDelays(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	b := bustest.Open(t, &bus.Config{DataDir: dir})
	js := b.JetStream()
	require.NoError(t, js.DeleteStream(ctx, bus.StreamTasks))
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: bus.StreamTasks, Subjects: []string{events.SubjectRun + ".>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, MaxBytes: -1, Duplicates: bus.DefaultDuplicateWindow,
	})
	require.NoError(t, err)
	b.Close()

	b = bustest.Open(t, &bus.Config{DataDir: dir})
	require.True(t, b.SchedulesDelays())
	task := events.Task{ID: "t1", Name: "later", Queue: "default", Status: events.StatusNew, Attempt: 1, NotBefore: time.Now().Add(time.Hour)}
	require.NoError(t, b.Enqueue(ctx, task, "test"))
	delayed, err := b.Delayed(ctx, "default", "t1")
	require.NoError(t, err)
	require.True(t, delayed)
}
