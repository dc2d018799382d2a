package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// logMessage is one message of a task's history: the phase it packs (""
// for a fact alone) and its facts' triggers, in order.
type logMessage struct {
	Phase    events.Phase
	Triggers []string
}

func (m logMessage) String() string {
	if m.Phase == "" {
		return m.Triggers[0]
	}
	return string(m.Phase) + strings.ReplaceAll(fmt.Sprint(m.Triggers), " ", ",")
}

// taskMessages returns the messages holding task id's facts of the client
// (run 0) and of its workers, each in stream order, after checking that
// packed facts are on their phase subject of the task's queue.
func taskMessages(t *testing.T, b *bus.Bus, id, queue string) (client, worker []logMessage) {
	t.Helper()
	lastSeq := map[bool]uint64{}
	for _, f := range logFactsOf(t, b, id) {
		w := f.Event.Run > 0
		out := &client
		if w {
			out = &worker
		}
		if f.Index < 0 {
			require.Equal(t, events.FactSubject(f.Event.Trigger, queue), f.Subject)
			*out = append(*out, logMessage{Triggers: []string{f.Event.Trigger}})
			continue
		}
		phase, q, err := events.ParsePhaseSubject(f.Subject)
		require.NoError(t, err)
		require.Equal(t, queue, q)
		if f.Index == 0 || lastSeq[w] != f.Seq {
			*out = append(*out, logMessage{Phase: phase})
		}
		lastSeq[w] = f.Seq
		m := &(*out)[len(*out)-1]
		m.Triggers = append(m.Triggers, f.Event.Trigger)
	}
	return client, worker
}

func messageStrings(ms []logMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	return out
}

// The shape of a recorded task's history under design (f): each phase's
// facts in one message on qtasks.phase.<phase>.<queue>, lifecycle facts
// and the final fact alone on their trigger subjects, and the stream
// holds them in firing order (issue #15).
func TestPhaseMessages(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, app)
	sub := submit(t, app, "add", addArgs{A: 1, B: 2}, nil)
	require.Equal(t, events.StatusSuccess, waitTask(t, app, sub.ID).Status)
	waitQueueEmpty(t, b)

	client, worker := taskMessages(t, b, sub.ID, executor.DefaultQueue)
	require.Equal(t, []string{
		"submit[qtasks_add_task_before_broker,broker_add_before]",
		"storage_add",
		"queued[broker_add_after,qtasks_add_task_after_broker]",
	}, messageStrings(client))
	require.Equal(t, []string{
		"intake[storage_add_process,storage_get,broker_get,broker_add_worker,worker_add,worker_execute_before,broker_update]",
		"storage_update",
		"prepare[worker_run_task_before,task_executor_middlewares_execute,task_executor_args_replace,task_executor_before_execute]",
		"finish[task_executor_run_task,task_executor_after_execute,task_executor_after_execute_result_replace," +
			"task_executor_middlewares_execute,task_executor_decode,task_executor_task_close,worker_remove_finished_task,broker_remove_finished_task]",
		"storage_remove_finished_task",
		"end[worker_execute_after]",
	}, messageStrings(worker))

	// Packed facts keep their ids.
	seen := map[string]int{}
	for _, f := range logFactsOf(t, b, sub.ID) {
		if f.Event.Trigger == events.StorageRemoveFinishedTask {
			require.Equal(t, events.FinalMsgID(sub.ID, 1), f.Event.ID)
			continue
		}
		if f.Event.Run > 0 {
			n := seen[f.Event.Trigger]
			seen[f.Event.Trigger]++
			require.Equal(t, events.FactMsgID(sub.ID, 1, f.Event.Run, f.Event.Trigger, n), f.Event.ID)
		}
	}
}

// An error path has phases too: a task that fails goes from prepare to
// finish (the failure's facts) without a task function.
func TestPhaseMessagesOfAFailure(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "boom", func(_ context.Context, _ addArgs) (int, error) { return 0, fmt.Errorf("boom") }, nil)
	start(t, app)
	sub := submit(t, app, "boom", addArgs{}, nil)
	require.Equal(t, events.StatusError, waitTask(t, app, sub.ID).Status)
	waitQueueEmpty(t, b)
	_, worker := taskMessages(t, b, sub.ID, executor.DefaultQueue)
	require.Equal(t, []string{
		"intake[storage_add_process,storage_get,broker_get,broker_add_worker,worker_add,worker_execute_before,broker_update]",
		"storage_update",
		"prepare[worker_run_task_before,task_executor_middlewares_execute,task_executor_args_replace,task_executor_before_execute]",
		"finish[task_executor_task_close,worker_remove_finished_task,broker_remove_finished_task]",
		"storage_remove_finished_task",
		"end[worker_execute_after]",
	}, messageStrings(worker))
}

// Which facts travel alone: lifecycle ones; those of Config.AloneTriggers;
// those of a trigger a registered observer that does not read batches is
// named for, from its registration on; never those of an observer that
// reads batches.
func TestAloneTriggers(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, &bus.Config{AloneTriggers: []string{events.WorkerAdd}})
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, app)
	run := func() []string {
		sub := submit(t, app, "add", addArgs{A: 1, B: 2}, nil)
		require.Equal(t, events.StatusSuccess, waitTask(t, app, sub.ID).Status)
		waitQueueEmpty(t, b)
		_, worker := taskMessages(t, b, sub.ID, executor.DefaultQueue)
		return messageStrings(worker)[:3]
	}
	require.Equal(t, []string{
		"intake[storage_add_process,storage_get,broker_get,broker_add_worker]",
		"worker_add",
		"intake[worker_execute_before,broker_update]",
	}, run(), "an AloneTriggers entry travels alone, the phase's batch flushed before it")

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := b.Registry().Register(ctx, events.PluginInfo{
		Name: "batch-reader", Version: "1", Mode: events.ModeObserver,
		Triggers: []string{events.StorageGet}, ReadsBatches: true,
	})
	require.NoError(t, err)
	require.Equal(t, []string{
		"intake[storage_add_process,storage_get,broker_get,broker_add_worker]",
		"worker_add",
		"intake[worker_execute_before,broker_update]",
	}, run(), "an observer that reads batches changes nothing")

	_, err = b.Registry().Register(ctx, events.PluginInfo{
		Name: "alone-reader", Version: "1", Mode: events.ModeObserver,
		Triggers: []string{events.StorageGet},
	})
	require.NoError(t, err)
	require.Equal(t, []string{
		"intake[storage_add_process]",
		"storage_get",
		"intake[broker_get,broker_add_worker]",
	}, run(), "a named observer without reads_batches has its trigger alone from its registration on")
}

// Design (d): the task record is written at submission, once when a run
// claims the attempt (status process, before the intake's triggers), and at
// the end: no write at the end of intake. Every write to the record's key
// is seen on a plain subscription, in order.
func TestRecordWrites(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, app)
	key := executor.GeneratedKeyPrefix + uuid.NewString()
	id := executor.KeyTaskID(key)
	writes, err := b.Conn().SubscribeSync("$KV." + bus.BucketTasks + "." + id)
	require.NoError(t, err)
	require.NoError(t, b.Conn().Flush())
	sub := submit(t, app, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: key})
	require.Equal(t, id, sub.ID)
	require.Equal(t, events.StatusSuccess, waitTask(t, app, sub.ID).Status)
	var statuses []string
	for !slices.Contains(statuses, events.StatusSuccess) {
		m, err := writes.NextMsg(waitLimit)
		require.NoError(t, err, "writes so far: %v", statuses)
		var rec events.Task
		require.NoError(t, json.Unmarshal(m.Data, &rec))
		statuses = append(statuses, rec.Status)
	}
	require.Equal(t, []string{events.StatusNew, events.StatusProcess, events.StatusSuccess}, statuses)
}
