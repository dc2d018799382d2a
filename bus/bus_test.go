package bus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/bus/embedded"
	"github.com/qtasks/qtasks-go/events"
)

// wait bounds every blocking step of these tests. It is generous on
// purpose: a loaded 2-core machine running -race is slow, and no test waits
// for it unless something is broken.
const wait = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fixedTime survives an RFC 3339 round trip unchanged, nanoseconds included.
var fixedTime = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func factEvent(trigger, taskID, id string) events.Event {
	return events.Event{
		ID:              id,
		Source:          "qtasks/test",
		Type:            events.TypeTriggerPrefix + trigger,
		Subject:         taskID,
		Time:            fixedTime,
		DataContentType: events.ContentTypeJSON,
		Data:            []byte(`{"input":{"n":1}}`),
		TaskID:          taskID,
		TaskName:        "add",
		Trigger:         trigger,
		Attempt:         1,
		Run:             2,
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

func streamInfo(ctx context.Context, t *testing.T, b *bus.Bus, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := b.JetStream().Stream(ctx, name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	return info
}

func streamMsgs(ctx context.Context, t *testing.T, b *bus.Bus, name string) uint64 {
	t.Helper()
	return streamInfo(ctx, t, b, name).State.Msgs
}

// decodeStored reads the message at seq of the event log as an event.
func decodeStored(ctx context.Context, t *testing.T, b *bus.Bus, seq uint64) (events.Event, *jetstream.RawStreamMsg) {
	t.Helper()
	raw, err := b.EventStream().GetMsg(ctx, seq)
	require.NoError(t, err)
	ev, err := events.Decode(events.Headers(raw.Header), raw.Data)
	require.NoError(t, err)
	return ev, raw
}

// lastOn returns the last stored event on subject, waiting for it to be
// stored: local invocations are written asynchronously.
func lastOn(ctx context.Context, t *testing.T, b *bus.Bus, subject string) events.Event {
	t.Helper()
	var raw *jetstream.RawStreamMsg
	bustest.WaitFor(t, wait, "an event on "+subject, func() bool {
		m, err := b.EventStream().GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return false
		}
		raw = m
		return true
	})
	ev, err := events.Decode(events.Headers(raw.Header), raw.Data)
	require.NoError(t, err)
	return ev
}

func TestProvisionIsIdempotent(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	cfg := &bus.Config{DataDir: dir, Port: -1}

	b1 := bustest.Open(t, cfg)
	names := []string{
		bus.StreamEvents, bus.StreamTasks,
		"KV_" + bus.BucketTasks, "KV_" + bus.BucketPlugins, "KV_" + bus.BucketPluginState,
	}
	// Something in every stream, so that "nothing lost" means something.
	for i := range 5 {
		ev := factEvent(events.WorkerAdd, fmt.Sprintf("t%d", i), fmt.Sprintf("e%d", i))
		_, err := b1.Publish(ctx, events.FactSubject(ev.Trigger, "default"), ev.ID, &ev)
		require.NoError(t, err)
	}
	task := events.Task{
		ID: "t0", Name: "add", Queue: "default", Status: events.StatusNew, Attempt: 1,
		Args: []byte(`[1,2]`), Kw: []byte(`{}`), CreatedAt: fixedTime, UpdatedAt: fixedTime,
	}
	_, created, err := b1.CreateTask(ctx, task)
	require.NoError(t, err)
	require.True(t, created)
	require.NoError(t, b1.Enqueue(ctx, task, "qtasks/test"))
	_, err = b1.Registry().Register(ctx, events.PluginInfo{Name: "p1", Version: "1", Mode: events.ModeObserver})
	require.NoError(t, err)
	_, err = b1.PluginState("p1").Put(ctx, "k", []byte("v"))
	require.NoError(t, err)

	before := map[string]*jetstream.StreamInfo{}
	for _, n := range names {
		before[n] = streamInfo(ctx, t, b1, n)
		require.NotZero(t, before[n].State.Msgs, "stream %s is empty", n)
	}
	require.Equal(t, jetstream.LimitsPolicy, before[bus.StreamEvents].Config.Retention)
	require.Equal(t, jetstream.WorkQueuePolicy, before[bus.StreamTasks].Config.Retention)
	b1.Close()

	b2 := bustest.Open(t, cfg)
	for _, n := range names {
		after := streamInfo(ctx, t, b2, n)
		require.Equal(t, before[n].Config, after.Config, "config of %s", n)
		require.Equal(t, before[n].Created, after.Created, "%s was recreated", n)
		require.Equal(t, before[n].State.Msgs, after.State.Msgs, "messages of %s", n)
		require.Equal(t, before[n].State.FirstSeq, after.State.FirstSeq, "first sequence of %s", n)
		require.Equal(t, before[n].State.LastSeq, after.State.LastSeq, "last sequence of %s", n)
	}
	require.Equal(t, jetstream.LimitsPolicy, streamInfo(ctx, t, b2, bus.StreamEvents).Config.Retention)
	require.Equal(t, jetstream.WorkQueuePolicy, streamInfo(ctx, t, b2, bus.StreamTasks).Config.Retention)

	// The data itself came back.
	for seq := uint64(1); seq <= 5; seq++ {
		ev, _ := decodeStored(ctx, t, b2, seq)
		want := factEvent(events.WorkerAdd, fmt.Sprintf("t%d", seq-1), fmt.Sprintf("e%d", seq-1))
		require.Equal(t, want, ev)
	}
	rec, err := b2.GetTask(ctx, "t0")
	require.NoError(t, err)
	require.Equal(t, task, rec.Task)
	require.NoError(t, b2.Registry().WaitFor(ctx, "p1", "1"))
	v, _, err := b2.PluginState("p1").Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("v"), v)

	// A republish of an event from before the restart is still a duplicate.
	ev := factEvent(events.WorkerAdd, "t0", "e0")
	ack, err := b2.Publish(ctx, events.FactSubject(ev.Trigger, "default"), ev.ID, &ev)
	require.NoError(t, err)
	require.True(t, ack.Duplicate)
}

// A second process opening the bus on a running server must not touch the
// streams: no create, no update.
func TestProvisionOnRunningServerChangesNothing(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	before := map[string]*jetstream.StreamInfo{
		bus.StreamEvents: streamInfo(ctx, t, b, bus.StreamEvents),
		bus.StreamTasks:  streamInfo(ctx, t, b, bus.StreamTasks),
	}

	// Watch the JetStream API for stream creations and updates.
	sub, err := b.Conn().SubscribeSync("$JS.API.STREAM.*.*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, b.Conn().Flush())

	bustest.Connect(t, b, nil)
	// The requests of the second connection reached the server before its
	// replies did; a round trip on ours delivers them to the subscription.
	require.NoError(t, b.Conn().Flush())
	seen := map[string]bool{}
	for {
		m, err := sub.NextMsg(0)
		if err != nil {
			break
		}
		seen[m.Subject] = true
	}
	for _, name := range []string{bus.StreamEvents, bus.StreamTasks} {
		require.True(t, seen["$JS.API.STREAM.INFO."+name], "%s was not looked up: %v", name, seen)
		require.False(t, seen["$JS.API.STREAM.CREATE."+name], "%s was re-created", name)
		require.False(t, seen["$JS.API.STREAM.UPDATE."+name], "%s was updated", name)
	}
	for name, info := range before {
		require.Equal(t, info.Config, streamInfo(ctx, t, b, name).Config, name)
	}
}

func TestOpenRefusesToChangeRetention(t *testing.T) {
	ctx := testCtx(t)
	cfg := &bus.Config{DataDir: t.TempDir()}
	b1 := bustest.Open(t, cfg)
	js := b1.JetStream()
	require.NoError(t, js.DeleteStream(ctx, bus.StreamTasks))
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      bus.StreamTasks,
		Subjects:  []string{events.SubjectRun + ".>"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
	})
	require.NoError(t, err)
	b1.Close()

	c := *cfg
	c.Logger = bustest.Logger(t)
	b2, err := bus.Open(ctx, c)
	if b2 != nil {
		b2.Close()
	}
	require.ErrorContains(t, err, "retention")
	require.Nil(t, b2)
}

func TestPublishDeduplicatesAndRoundTrips(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)

	ev := factEvent(events.WorkerAdd, "task1", "fact-1")
	subject := events.FactSubject(ev.Trigger, "default")
	msgID := events.FactMsgID(ev.TaskID, ev.Attempt, ev.Run, ev.Trigger, 0)

	ack1, err := b.Publish(ctx, subject, msgID, &ev)
	require.NoError(t, err)
	require.False(t, ack1.Duplicate)
	require.Equal(t, bus.StreamEvents, ack1.Stream)
	require.NotZero(t, ack1.Sequence)

	ack2, err := b.Publish(ctx, subject, msgID, &ev)
	require.NoError(t, err)
	require.True(t, ack2.Duplicate)
	require.Equal(t, ack1.Sequence, ack2.Sequence)
	require.Equal(t, uint64(1), streamMsgs(ctx, t, b, bus.StreamEvents))

	got, raw := decodeStored(ctx, t, b, ack1.Sequence)
	require.Equal(t, ev, got)
	require.Equal(t, subject, raw.Subject)
	require.Equal(t, msgID, raw.Header.Get(events.HeaderMsgID))
	require.Equal(t, events.ContentTypeJSON, raw.Header.Get(events.HeaderContentType))

	// Without a message id nothing is deduplicated.
	_, err = b.Publish(ctx, subject, "", &ev)
	require.NoError(t, err)
	_, err = b.Publish(ctx, subject, "", &ev)
	require.NoError(t, err)
	require.Equal(t, uint64(3), streamMsgs(ctx, t, b, bus.StreamEvents))

	// A subject no stream captures is an error, not a silent loss.
	_, err = b.Publish(ctx, "nowhere.at.all", "x", &ev)
	require.Error(t, err)
}

func TestAcksWait(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)

	const n = 200
	var acks bus.Acks
	for i := range n {
		ev := factEvent(events.WorkerAdd, fmt.Sprintf("t%d", i), fmt.Sprintf("e%d", i))
		f, err := b.PublishAsync(events.FactSubject(ev.Trigger, "default"), ev.ID, &ev)
		require.NoError(t, err)
		acks.Add(f)
	}
	// Duplicates are acked too.
	dup := factEvent(events.WorkerAdd, "t0", "e0")
	f, err := b.PublishAsync(events.FactSubject(dup.Trigger, "default"), dup.ID, &dup)
	require.NoError(t, err)
	acks.Add(f)

	require.NoError(t, acks.Wait(ctx))
	// Once Wait returns, every tracked publish is stored.
	info := streamInfo(ctx, t, b, bus.StreamEvents)
	require.Equal(t, uint64(n), info.State.Msgs)
	require.Equal(t, uint64(n), info.State.LastSeq)
	// Nothing left to wait for.
	require.NoError(t, acks.Wait(ctx))

	// Errors: one recorded with Fail, one from a publish nobody stores.
	boom := errors.New("boom")
	ev := factEvent(events.WorkerAdd, "t0", "lost")
	f, err = b.PublishAsync("nowhere.at.all", "lost", &ev)
	require.NoError(t, err)
	acks.Add(f)
	acks.Fail(boom)
	acks.Fail(errors.New("second failure is dropped"))
	err = acks.Wait(ctx)
	require.ErrorIs(t, err, boom)
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
	require.NotContains(t, err.Error(), "second failure")
	require.NoError(t, acks.Wait(ctx), "errors are forgotten after Wait")
}

func TestShouldRecord(t *testing.T) {
	ctx := testCtx(t)

	all := bustest.Open(t, nil)
	require.Equal(t, bus.RecordAll, all.RecordMode())
	for _, tr := range events.Catalog() {
		require.True(t, all.ShouldRecord(tr.Name), tr.Name)
	}

	b := bustest.Connect(t, all, &bus.Config{Record: bus.RecordLifecycle})
	require.Equal(t, bus.RecordLifecycle, b.RecordMode())
	lifecycle := 0
	for _, tr := range events.Catalog() {
		require.Equal(t, tr.Lifecycle, b.ShouldRecord(tr.Name), tr.Name)
		if tr.Lifecycle {
			lifecycle++
		}
	}
	require.NotZero(t, lifecycle)
	require.False(t, b.ShouldRecord("no_such_trigger"))

	// A plugin subscribing to a trigger makes its facts recorded.
	_, err := b.Registry().Register(ctx, events.PluginInfo{
		Name: "watcher", Version: "1", Mode: events.ModeObserver,
		Triggers: []string{events.WorkerExecuteBefore},
	})
	require.NoError(t, err)
	require.NoError(t, b.Registry().WaitFor(ctx, "watcher", "1"))
	require.True(t, b.ShouldRecord(events.WorkerExecuteBefore))
	require.True(t, b.ShouldRecord(events.StorageAdd))
	require.False(t, b.ShouldRecord(events.BrokerGet))
	require.False(t, b.ShouldRecord(events.TaskExecutorArgsReplace))

	// So does a mutator named for a trigger.
	_, err = b.Registry().Register(ctx, events.PluginInfo{
		Name: "fixer", Version: "1", Mode: events.ModeMutator,
		Triggers: []string{events.TaskExecutorArgsReplace},
	})
	require.NoError(t, err)
	require.NoError(t, b.Registry().WaitFor(ctx, "fixer", "1"))
	require.True(t, b.ShouldRecord(events.TaskExecutorArgsReplace))
	require.False(t, b.ShouldRecord(events.BrokerGet))

	// A global plugin receives everything, so everything is recorded.
	_, err = b.Registry().Register(ctx, events.PluginInfo{Name: "audit", Version: "1", Mode: events.ModeObserver})
	require.NoError(t, err)
	require.NoError(t, b.Registry().WaitFor(ctx, "audit", "1"))
	for _, tr := range events.Catalog() {
		require.True(t, b.ShouldRecord(tr.Name), tr.Name)
	}

	// Deregistering takes it back.
	require.NoError(t, b.Registry().Deregister(ctx, "audit"))
	bustest.WaitFor(t, wait, "audit to be deregistered", func() bool {
		_, ok := b.Registry().Get("audit")
		return !ok
	})
	require.False(t, b.ShouldRecord(events.BrokerGet))
	require.True(t, b.ShouldRecord(events.WorkerExecuteBefore))
}

func TestDeadLetter(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	dl := events.DeadLetter{
		Stream: bus.StreamEvents, Sequence: 42, Consumer: "plugin-p", Subject: "qtasks.invoke.p.worker_add.t1",
		Deliveries: 5, Reason: "max deliveries",
	}
	require.NoError(t, b.DeadLetter(ctx, "p", "qtasks/test", dl))
	require.NoError(t, b.DeadLetter(ctx, "p", "qtasks/test", dl)) // deduplicated
	require.Equal(t, uint64(1), streamMsgs(ctx, t, b, bus.StreamEvents))

	ev := lastOn(ctx, t, b, events.DeadSubject("p"))
	require.Equal(t, events.TypeDeadLetter, ev.Type)
	require.Equal(t, "p", ev.Plugin)
	require.JSONEq(t, `{"stream":"QTASKS_EVENTS","sequence":42,"consumer":"plugin-p",
		"subject":"qtasks.invoke.p.worker_add.t1","deliveries":5,"reason":"max deliveries"}`, string(ev.Data))
}

func TestConsumerKeepsDeliverPolicy(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	ev := factEvent(events.WorkerAdd, "t1", "old")
	_, err := b.Publish(ctx, events.FactSubject(ev.Trigger, "default"), ev.ID, &ev)
	require.NoError(t, err)

	cfg := bus.ConsumerConfig{Durable: "obs", Subjects: []string{events.SubjectTrigger + ".>"}, DeliverNew: true}
	c, err := b.Consumer(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, jetstream.DeliverNewPolicy, c.CachedInfo().Config.DeliverPolicy)
	require.Equal(t, 5, c.CachedInfo().Config.MaxDeliver)

	// Re-creating it without DeliverNew, with two filters, updates it in
	// place instead of failing.
	cfg.DeliverNew = false
	cfg.Subjects = []string{events.SubjectTrigger + ".>", events.SubjectDead + ".>"}
	c, err = b.Consumer(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, jetstream.DeliverNewPolicy, c.CachedInfo().Config.DeliverPolicy)
	require.Equal(t, cfg.Subjects, c.CachedInfo().Config.FilterSubjects)

	ev = factEvent(events.WorkerAdd, "t1", "new")
	_, err = b.Publish(ctx, events.FactSubject(ev.Trigger, "default"), ev.ID, &ev)
	require.NoError(t, err)
	m, err := c.Next(jetstream.FetchMaxWait(wait))
	require.NoError(t, err)
	got, err := events.Decode(events.Headers(m.Headers()), m.Data())
	require.NoError(t, err)
	require.Equal(t, "new", got.ID)
	require.NoError(t, m.Ack())
}

func TestReadLog(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)

	collect := func(from uint64, subjects ...string) []bus.Stored {
		t.Helper()
		var out []bus.Stored
		require.NoError(t, b.ReadLog(ctx, from, subjects, func(s bus.Stored) error {
			out = append(out, s)
			return nil
		}))
		return out
	}
	require.Empty(t, collect(1), "empty log")

	// Tasks t0 and t1 in queues q0 and q1.
	var want []string
	var mid time.Time
	for i := range 6 {
		ev := factEvent(events.WorkerAdd, fmt.Sprintf("t%d", i%2), fmt.Sprintf("e%d", i))
		if i%3 == 2 {
			ev = factEvent(events.BrokerGet, fmt.Sprintf("t%d", i%2), fmt.Sprintf("e%d", i))
		}
		_, err := b.Publish(ctx, events.FactSubject(ev.Trigger, fmt.Sprintf("q%d", i%2)), "", &ev)
		require.NoError(t, err)
		want = append(want, ev.ID)
		if i == 2 {
			mid = time.Now()
		}
	}
	// Something that is not an event at all.
	_, err := b.JetStream().Publish(ctx, events.FactSubject(events.WorkerAdd, "junk"), []byte("not an event"))
	require.NoError(t, err)

	all := collect(1)
	require.Len(t, all, 7)
	for i, s := range all[:6] {
		require.Equal(t, uint64(i+1), s.Seq)
		require.NoError(t, s.Err)
		require.Equal(t, want[i], s.Event.ID)
		require.Equal(t, events.FactSubject(s.Event.Trigger, "q"+s.Event.TaskID[1:]), s.Subject)
	}
	require.ErrorIs(t, all[6].Err, events.ErrInvalidEvent)
	require.Equal(t, uint64(7), all[6].Seq)

	ids := func(ss []bus.Stored) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Event.ID)
		}
		return out
	}
	require.Equal(t, []string{"e2", "e5"}, ids(collect(1, events.FactSubject(events.BrokerGet, "*"))))
	require.Equal(t, []string{"e0", "e2", "e4"}, ids(collect(1, events.SubjectTrigger+".*.q0")))
	require.Equal(t, []string{"e4", "e5"}, ids(collect(5, events.SubjectTrigger+".*.q0", events.SubjectTrigger+".*.q1")))
	require.Empty(t, collect(8))
	require.Empty(t, collect(1, events.SubjectInvoke+".>"))

	// fn's error stops the read and comes back.
	stop := errors.New("stop")
	n := 0
	err = b.ReadLog(ctx, 1, nil, func(bus.Stored) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 2, n)

	// From a time: the server stamped e3.. after mid.
	var since []string
	require.NoError(t, b.ReadLogSince(ctx, mid, []string{events.SubjectTrigger + ".>"}, func(s bus.Stored) error {
		since = append(since, s.Event.ID)
		return nil
	}))
	require.Equal(t, []string{"e3", "e4", "e5", ""}, since)

	// A task's events, by attribute; a start time reads TaskClockSkew
	// earlier, so events written just before it are found too.
	var t1 []string
	require.NoError(t, b.TaskEvents(ctx, "t1", mid, []string{events.SubjectTrigger + ".>"}, func(s bus.Stored) error {
		t1 = append(t1, s.Event.ID)
		return nil
	}))
	require.Equal(t, []string{"e1", "e3", "e5"}, t1)
	t1 = nil
	require.NoError(t, b.TaskEvents(ctx, "t1", time.Time{}, []string{events.FactSubject(events.BrokerGet, "*")}, func(s bus.Stored) error {
		t1 = append(t1, s.Event.ID)
		return nil
	}))
	require.Equal(t, []string{"e5"}, t1)

	one, err := b.Event(ctx, 6)
	require.NoError(t, err)
	require.Equal(t, uint64(6), one.Seq)
	require.Equal(t, "e5", one.Event.ID)
	require.NoError(t, one.Err)
	_, err = b.Event(ctx, 99)
	require.ErrorIs(t, err, bus.ErrNoMessage)
}

func TestTaskIDTime(t *testing.T) {
	t.Parallel()
	before := time.Now().Add(-time.Millisecond)
	id, err := uuid.NewV7()
	require.NoError(t, err)
	got := bus.TaskIDTime(id.String())
	require.WithinRange(t, got, before, time.Now().Add(time.Millisecond))
	for _, other := range []string{uuid.NewString(), uuid.NewSHA1(uuid.NameSpaceURL, []byte("k")).String(), "not-a-uuid", ""} {
		require.True(t, bus.TaskIDTime(other).IsZero(), other)
	}
}

// Two embedded servers on one data directory would damage its store: the
// second Open is refused, naming the holder, until the first closes. A
// taken port is refused at once, not after the server's 30 s readiness
// wait.
func TestOpenRefusesSharedDataDirAndTakenPort(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	b1, err := bus.Open(ctx, bus.Config{DataDir: dir, Port: -1, Logger: bustest.Logger(t)})
	require.NoError(t, err)

	_, err = bus.Open(ctx, bus.Config{DataDir: dir, Port: -1, Logger: bustest.Logger(t)})
	require.ErrorIs(t, err, embedded.ErrDataDirInUse)
	require.ErrorContains(t, err, "pid "+strconv.Itoa(os.Getpid()))

	b1.Close()
	b2, err := bus.Open(ctx, bus.Config{DataDir: dir, Port: -1, Logger: bustest.Logger(t)})
	require.NoError(t, err, "closing released the directory")
	b2.Close()

	var lc net.ListenConfig
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	start := time.Now()
	_, err = bus.Open(ctx, bus.Config{DataDir: t.TempDir(), Port: ln.Addr().(*net.TCPAddr).Port, Logger: bustest.Logger(t)})
	require.ErrorIs(t, err, embedded.ErrPortInUse)
	require.Less(t, time.Since(start), 10*time.Second)
}
