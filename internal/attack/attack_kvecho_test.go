package attack

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A plugin with its least rights has the server write on the control
// bucket's keys, which workers obey: the publish ack of one of its patches
// on the default queue's pause key, JetStream's account information on
// another queue's pause key, and a direct get's echo of a mark of its own
// making ("alice" cancelled a task) on a cancel key. Before, the watch
// decoded the ack into a zero mark and the default queue's worker paused
// (this test's task never ran), and the echo read as alice's cancel. A
// mark is taken only with its by and at and no other field, and never
// from an echo; a refused one leaves the worker as it was, and is logged.
func TestAttackControlEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	executor.MustRegister(e.app, "victim", func(_ context.Context, _ struct{}) (string, error) { return "real", nil }, nil)
	integrityStart(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	nc := integrityPluginBus(t, e, mallory.Name).Conn()

	updates := make(chan bus.ControlUpdate, 16)
	ready, err := e.b.WatchControl(ctx, func(u bus.ControlUpdate) { updates <- u })
	require.NoError(t, err)
	<-ready

	kvForge(ctx, t, e.b, bus.BucketControl, "pause."+executor.DefaultQueue, func() {
		kvAck(t, nc, mallory.Name, kvKey(bus.BucketControl, "pause."+executor.DefaultQueue))
	})
	kvForge(ctx, t, e.b, bus.BucketControl, "pause.other", func() {
		kvAPIReply(t, nc, kvKey(bus.BucketControl, "pause.other"))
	})
	mark, err := json.Marshal(bus.Mark{Attempt: 1, By: "alice", Reason: "she never did this", At: time.Now()})
	require.NoError(t, err)
	kvForge(ctx, t, e.b, bus.BucketControl, "cancel.someone", func() {
		kvEchoValue(ctx, t, nc, mallory.Name, kvKey(bus.BucketControl, "cancel.someone"), mark)
	})
	// An operator's pause, after the forgeries: the watch has seen them
	// when it delivers this one.
	_, err = e.b.SetPause(ctx, "sentinel", bus.Mark{By: "op", At: time.Now()})
	require.NoError(t, err)
	for u := range updates {
		require.Equal(t, "sentinel", u.Pause, "a forged control entry was taken: %+v", u)
		break
	}

	// The default queue still runs tasks, and a reader of its pause is
	// told what the key holds is no mark.
	final := integrityRun(t, e, "victim", nil)
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	_, err = e.b.Paused(ctx, executor.DefaultQueue)
	require.ErrorContains(t, err, "not a control mark")
	_, err = e.b.Paused(ctx, "other")
	require.ErrorContains(t, err, "not a control mark")
	require.NoError(t, e.b.ClearCancel(ctx, "someone"))
	require.True(t, e.logs.has("WARN", "ignoring a control entry that is not a mark"))
	require.True(t, e.logs.has("WARN", "Nats-Stream"))
}

// A plugin has the server write on another plugin's registry key: its
// publish ack, JetStream's account information, and a direct get's echo
// of a registration of bob's with a one-millisecond timeout and policy
// ignore. Before, the ack and the API reply decoded as entries with no
// mode (a reserved key, not a plugin) and took bob out of every chain, and
// the echo replaced his registration; bob's next registration and his
// deregistration then read the echo's own Nats-Sequence for the key's
// revision and retried their compare-and-set for ever. Each is refused,
// counted and logged, and bob's registration stays as the registrar wrote
// it; he can register again and deregister.
func TestAttackRegistryKVEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	bob := events.PluginInfo{Name: "bob", Version: "1", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}, TimeoutMS: 2000}
	e := integritySetup(t, mallory, bob)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	bobBus := integrityPluginBus(t, e, bob.Name)
	stored, err := bobBus.Registry().Register(ctx, bob)
	require.NoError(t, err)
	require.NoError(t, e.b.Registry().WaitFor(ctx, bob.Name, bob.Version))
	nc := integrityPluginBus(t, e, mallory.Name).Conn()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(e.b.Registry().Metrics()))

	key := kvKey(bus.BucketPlugins, bob.Name)
	kvForge(ctx, t, e.b, bus.BucketPlugins, bob.Name, func() { kvAck(t, nc, mallory.Name, key) })
	kvForge(ctx, t, e.b, bus.BucketPlugins, bob.Name, func() { kvAPIReply(t, nc, key) })
	forged := stored
	forged.TimeoutMS, forged.Policy = 1, events.PolicyIgnore
	body, err := json.Marshal(forged)
	require.NoError(t, err)
	kvForge(ctx, t, e.b, bus.BucketPlugins, bob.Name, func() { kvEchoValue(ctx, t, nc, mallory.Name, key, body) })

	bustest.WaitFor(t, integrityWait, "three entries ignored", func() bool {
		return kvCounter(t, reg, "qtasks_registry_entries_ignored_total") >= 3
	})
	got, ok := e.b.Registry().Get(bob.Name)
	require.True(t, ok, "bob was taken out of the registry")
	require.Equal(t, stored, got)
	chain := e.b.Registry().Chain(events.TaskExecutorRunTask)
	require.Len(t, chain, 1)
	require.Equal(t, bob.Name, chain[0].Name)
	require.True(t, e.logs.has("WARN", "ignoring invalid plugin registration"))

	// Bob registers again over the forgery, in his place, and leaves.
	bob.Version = "2"
	again, err := bobBus.Registry().Register(ctx, bob)
	require.NoError(t, err)
	require.Equal(t, stored.Order, again.Order)
	require.NoError(t, e.b.Registry().WaitFor(ctx, bob.Name, "2"))
	require.NoError(t, bobBus.Registry().Deregister(ctx, bob.Name))
	bustest.WaitFor(t, integrityWait, "bob deregistered", func() bool {
		_, ok := e.b.Registry().Get(bob.Name)
		return !ok
	})
}

// A plugin has the server write on a task's record: its publish ack, then
// a direct get's echo of a record of its own making (status success,
// result "pwned"). Before, the echo read as the task's record (Wait,
// qtasksd get, the worker's intake all took the task for finished), and
// the ack as a record with no id. Neither is a record: the readers refuse
// both (ErrNotRecord) and the watch skips them, then sees the executor's
// next write.
func TestAttackTaskRecordEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	nc := integrityPluginBus(t, e, mallory.Name).Conn()
	task := events.Task{
		ID: "victim-1", Name: "victim", Queue: executor.DefaultQueue, Status: events.StatusNew,
		Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{}`), Attempt: 1, Retry: 1, UpdatedAt: time.Now().UTC(),
	}
	_, created, err := e.b.CreateTask(ctx, task)
	require.NoError(t, err)
	require.True(t, created)
	watch, err := e.b.WatchTask(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusNew, (<-watch).Status)

	key := kvKey(bus.BucketTasks, task.ID)
	kvForge(ctx, t, e.b, bus.BucketTasks, task.ID, func() { kvAck(t, nc, mallory.Name, key) })
	for _, get := range []func(context.Context, string) (bus.TaskRecord, error){e.b.GetTask, e.b.GetTaskLatest} {
		_, err := get(ctx, task.ID)
		require.ErrorIs(t, err, bus.ErrNotRecord)
	}
	forged := task
	forged.Status, forged.Result = events.StatusSuccess, json.RawMessage(`"pwned"`)
	body, err := json.Marshal(forged)
	require.NoError(t, err)
	kvForge(ctx, t, e.b, bus.BucketTasks, task.ID, func() { kvEchoValue(ctx, t, nc, mallory.Name, key, body) })
	for _, get := range []func(context.Context, string) (bus.TaskRecord, error){e.b.GetTask, e.b.GetTaskLatest} {
		rec, err := get(ctx, task.ID)
		require.ErrorIs(t, err, bus.ErrNotRecord, "read as %+v", rec.Task)
		require.ErrorContains(t, err, "Nats-Stream")
	}

	// The executor's next write is seen; neither forgery was.
	next := task
	next.Status = events.StatusProcess
	_, err = e.b.UpdateTask(ctx, next, kvLast(ctx, t, e.b, bus.BucketTasks, task.ID))
	require.NoError(t, err)
	require.Equal(t, events.StatusProcess, (<-watch).Status)
	rec, err := e.b.GetTask(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusProcess, rec.Task.Status)
	require.True(t, e.logs.has("WARN", "ignoring a task record that is not one"))
}

// A plugin has the server write on the schedule bucket, which every
// scheduler watches and fires: its publish ack on a schedule's key, and a
// direct get's echo of a schedule of its own making (the task "victim"
// every minute, added by "alice"). Before, every scheduler took the echo
// for a schedule an operator added, and the ack for one with no
// definition. Neither is a schedule: the watch and the list leave them
// out, a read refuses them (ErrNotSchedule), and the real schedules are
// still listed.
func TestAttackScheduleEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	nc := integrityPluginBus(t, e, mallory.Name).Conn()
	nightly := bus.ScheduleState{
		Spec:    events.Schedule{Name: "nightly", Task: "report", EveryMS: 3_600_000},
		AddedBy: "op", AddedAt: time.Now().UTC(), LastTick: time.Now().UTC(),
	}
	_, err := e.b.CreateSchedule(ctx, nightly)
	require.NoError(t, err)
	watch, err := e.b.WatchSchedules(ctx)
	require.NoError(t, err)
	require.Equal(t, "nightly", (<-watch).Name)
	require.Empty(t, (<-watch).Name, "the end of the initial values")

	kvForge(ctx, t, e.b, bus.BucketSchedules, "nightly", func() {
		kvAck(t, nc, mallory.Name, kvKey(bus.BucketSchedules, "nightly"))
	})
	forged := nightly
	forged.Spec = events.Schedule{Name: "pwn", Task: "victim", EveryMS: 60_000}
	forged.AddedBy = "alice"
	body, err := json.Marshal(forged)
	require.NoError(t, err)
	kvForge(ctx, t, e.b, bus.BucketSchedules, "pwn", func() {
		kvEchoValue(ctx, t, nc, mallory.Name, kvKey(bus.BucketSchedules, "pwn"), body)
	})
	// An operator's schedule after the forgeries: the watch has seen them
	// when it delivers this one.
	sentinel := nightly
	sentinel.Spec.Name = "sentinel"
	_, err = e.b.CreateSchedule(ctx, sentinel)
	require.NoError(t, err)
	u := <-watch
	require.Equal(t, "sentinel", u.Name, "a forged schedule was taken: %+v", u.Entry)

	for _, name := range []string{"nightly", "pwn"} {
		_, err := e.b.GetSchedule(ctx, name)
		require.ErrorIs(t, err, bus.ErrNotSchedule)
	}
	list, err := e.b.ListSchedules(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "sentinel", list[0].State.Spec.Name)
	require.True(t, e.logs.has("WARN", "ignoring a schedule that is not one"))
}

// A plugin has the server write a direct get's echo of values of its own
// making on another plugin's state and on the state tasks share. Before,
// bob read mallory's value as his own, a task read it as shared state,
// and a write to that key read the echo's own Nats-Sequence as the key's
// revision and retried its compare-and-set for ever. Both reads refuse it
// (ErrNotState); a write replaces it, and its state event's Prev names a
// revision no state event made: the missing link that shows the forgery.
func TestAttackStateEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	bob := events.PluginInfo{Name: "bob", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory, bob)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	nc := integrityPluginBus(t, e, mallory.Name).Conn()
	bobState := integrityPluginBus(t, e, bob.Name).PluginState(bob.Name)
	_, err := bobState.Put(ctx, "limit", []byte(`10`))
	require.NoError(t, err)

	kvForge(ctx, t, e.b, bus.BucketPluginState, "bob.limit", func() {
		kvEchoValue(ctx, t, nc, mallory.Name, kvKey(bus.BucketPluginState, "bob.limit"), []byte(`1000000`))
	})
	_, rev, err := bobState.Get(ctx, "limit")
	require.ErrorIs(t, err, bus.ErrNotState)
	require.ErrorContains(t, err, "Nats-Stream")
	_, err = bobState.Update(ctx, "limit", []byte(`10`), rev)
	require.NoError(t, err, "bob puts his value back")
	v, _, err := bobState.Get(ctx, "limit")
	require.NoError(t, err)
	require.Equal(t, `10`, string(v))

	by := bus.StateWriter{Source: "qtasks/test", Queue: executor.DefaultQueue, By: "test"}
	_, err = e.b.WriteState(ctx, by, events.StateShared, "quota", "left", json.RawMessage(`5`), 0)
	require.NoError(t, err)
	key := "s.quota.left"
	kvForge(ctx, t, e.b, bus.BucketState, key, func() {
		kvEchoValue(ctx, t, nc, mallory.Name, kvKey(bus.BucketState, key), []byte(`1000000`))
	})
	forgedRev := kvLast(ctx, t, e.b, bus.BucketState, key)
	_, err = e.b.GetState(ctx, events.StateShared, "quota", "left")
	require.ErrorIs(t, err, bus.ErrNotState)
	list, err := e.b.ListState(ctx, events.StateShared, "quota")
	require.NoError(t, err)
	require.Empty(t, list)
	w, err := e.b.WriteState(ctx, by, events.StateShared, "quota", "left", json.RawMessage(`4`), bus.Any)
	require.NoError(t, err)
	require.Equal(t, forgedRev, w.Prev, "the write names the forged revision it replaced")
	got, err := e.b.GetState(ctx, events.StateShared, "quota", "left")
	require.NoError(t, err)
	require.JSONEq(t, `4`, string(got.Value))
}

// A plugin's deliveries, sent where it asks, land on no bucket's key. A
// consumer with a deliver subject of its choosing (a push consumer on a
// stream it may read, delivering onto a control key, messages without a
// Nats-Stream header) would write stored messages there: the plugin's
// user may create no consumer, so the server refuses it. The deliveries
// of its own pull consumer go to the reply subject of its pull request,
// and a stream that holds that subject stores them, but under the
// message's own subject (a fact's, in the log's namespace), where no
// reader of the bucket looks.
func TestAttackDeliveriesOntoBucket(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	integrityStart(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	pb := integrityPluginBus(t, e, mallory.Name)
	_, err := pb.Registry().Register(ctx, mallory)
	require.NoError(t, err)
	nc := pb.Conn()
	pause := kvKey(bus.BucketControl, "pause."+executor.DefaultQueue)

	create := `{"stream_name":"KV_` + bus.BucketPluginState + `","config":{"deliver_subject":"` + pause + `","ack_policy":"none"}}`
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = nc.RequestWithContext(rctx, "$JS.API.CONSUMER.CREATE.KV_"+bus.BucketPluginState, []byte(create))
	rcancel()
	require.Error(t, err, "the server answered a consumer create of a plugin's user")
	info, err := e.b.JetStream().Stream(ctx, "KV_"+bus.BucketPluginState)
	require.NoError(t, err)
	require.Zero(t, info.CachedInfo().State.Consumers)

	pull := nats.NewMsg("$JS.API.CONSUMER.MSG.NEXT." + bus.StreamEvents + "." + bus.DurableName(mallory.Name))
	pull.Reply = pause
	pull.Data = []byte(`{"batch":1,"expires":20000000000}`)
	require.NoError(t, nc.PublishMsg(pull))
	require.NoError(t, nc.Flush())
	integrityRun(t, e, "nosuch", nil) // its worker_add fact is delivered
	s, err := e.b.JetStream().Stream(ctx, "KV_"+bus.BucketControl)
	require.NoError(t, err)
	bustest.WaitFor(t, integrityWait, "the delivery stored", func() bool {
		i, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
		require.NoError(t, err)
		return i.State.Msgs > 0
	})
	i, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	require.NoError(t, err)
	for subject := range i.State.Subjects {
		require.Equal(t, events.FactSubject(events.WorkerAdd, executor.DefaultQueue), subject)
	}
	m, err := e.b.Paused(ctx, executor.DefaultQueue)
	require.NoError(t, err)
	require.Nil(t, m)
}

// A plugin has the server write direct get echoes on the limits bucket: a
// concurrency slot of task "held" leased until 2100, and the rate cell of
// task "rated" with its next start in 2100. Before, every worker read
// them as an executor's lease and cell: neither task ever ran again. A
// value no executor wrote is read as written when it was stored (a lease
// of Lease from then; a cell with the burst spent then), no earlier than
// what it replaced: the slot and the rate come back within one lease, one
// interval, and the waits are logged.
func TestAttackLimitEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	run := func(_ context.Context, _ struct{}) (string, error) { return "real", nil }
	executor.MustRegister(e.app, "held", run, nil)
	executor.MustRegister(e.app, "rated", run, nil)
	require.NoError(t, e.app.SetLimit(executor.Limit{Task: "held", Concurrency: 1, Lease: time.Second}))
	require.NoError(t, e.app.SetLimit(executor.Limit{Task: "rated", Rate: 1}))
	integrityStart(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	nc := integrityPluginBus(t, e, mallory.Name).Conn()
	far := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

	slot, err := json.Marshal(map[string]any{"holder": "x", "node": "y", "expires": far})
	require.NoError(t, err)
	kvForge(ctx, t, e.b, bus.BucketLimits, "c.t-held.0", func() {
		kvEchoValue(ctx, t, nc, mallory.Name, kvKey(bus.BucketLimits, "c.t-held.0"), slot)
	})
	cell, err := json.Marshal(map[string]any{"tat": far})
	require.NoError(t, err)
	kvForge(ctx, t, e.b, bus.BucketLimits, "r.t-rated", func() {
		kvEchoValue(ctx, t, nc, mallory.Name, kvKey(bus.BucketLimits, "r.t-rated"), cell)
	})

	for _, name := range []string{"held", "rated"} {
		final := integrityRun(t, e, name, nil)
		require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	}
	require.True(t, e.logs.has("WARN", "a limit slot holds no lease an executor wrote"))
	require.True(t, e.logs.has("WARN", "a rate cell holds no cell an executor wrote"))
}

// A plugin has the server write its publish ack over the record of a task
// waiting in its queue. Before, that task never ran: the worker could not
// read the record, handed the message back, and did so until JetStream
// stopped delivering it. The worker now writes the record again from the
// task message over the forged value (at that value's revision), as it
// does for a missing record, and runs the task.
func TestAttackForgedRecordStillRuns(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	nc := integrityPluginBus(t, e, mallory.Name).Conn()
	executor.MustRegister(e.app, "victim", func(context.Context, struct{}) (string, error) { return "ran", nil }, nil)
	require.NoError(t, e.app.Pause(ctx, executor.DefaultQueue, executor.Action{By: "op"}))
	integrityStart(t, e)
	task, err := e.app.Submit(ctx, "victim", struct{}{}, nil)
	require.NoError(t, err)
	key := kvKey(bus.BucketTasks, task.ID)
	kvForge(ctx, t, e.b, bus.BucketTasks, task.ID, func() { kvAck(t, nc, mallory.Name, key) })
	_, err = e.b.GetTask(ctx, task.ID)
	require.ErrorIs(t, err, bus.ErrNotRecord)
	require.NoError(t, e.app.Resume(ctx, executor.DefaultQueue, executor.Action{By: "op"}))
	var rec bus.TaskRecord
	bustest.WaitFor(t, integrityWait, "the task run despite its forged record", func() bool {
		rec, err = e.b.GetTask(ctx, task.ID)
		return err == nil && events.FinalStatus(rec.Task.Status)
	})
	require.Equal(t, events.StatusSuccess, rec.Task.Status)
	require.JSONEq(t, `"ran"`, string(rec.Task.Result))
	require.True(t, e.logs.has("WARN", "replacing a forged task record"))
}
