package attack

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the projection's driver
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// A plugin publishes, on its own dead-letter subject, a message under the
// id of an attempt's final fact, with a record of its choosing (status
// retry, another task name): the executor's own final fact is dropped as
// a duplicate. The executor must not take the plugin's record for the
// attempt's: it checks what the duplicate ack points at, records the
// forgery, and writes its final fact again under an id nobody can predict.
func TestAttackFinalFactForgery(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeMutator, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	var evilRan atomic.Bool
	executor.MustRegister(e.app, "victim", func(_ context.Context, _ struct{}) (string, error) { return "real", nil }, nil)
	executor.MustRegister(e.app, "evil", func(_ context.Context, _ struct{}) (string, error) {
		evilRan.Store(true)
		return "evil ran", nil
	}, nil)
	integrityStart(t, e)

	forgedSeq := make(chan uint64, 4)
	var pb *bus.Bus
	pb = integrityPlugin(t, e, plugins.Spec{
		Name: mallory.Name, Triggers: mallory.Triggers,
		Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
			if c.TaskName != "victim" {
				return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
			}
			model := events.Task{
				ID: c.TaskID, Name: "evil", Queue: executor.DefaultQueue, Status: events.StatusRetry,
				Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{}`), Result: json.RawMessage(`"pwned"`),
				Attempt: c.Attempt, Retry: 5, UpdatedAt: time.Now().UTC(),
			}
			data, _ := json.Marshal(map[string]any{"input": map[string]any{"model": model}})
			id := events.FinalMsgID(c.TaskID, c.Attempt)
			ev := events.Event{
				ID: id, Source: "qtasks/" + e.app.NodeID(), Type: events.TypeTriggerPrefix + events.StorageRemoveFinishedTask,
				Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: data, Subject: c.TaskID,
				TaskID: c.TaskID, TaskName: c.TaskName, Trigger: events.StorageRemoveFinishedTask, Attempt: c.Attempt, Run: c.Run,
			}
			ack, err := pb.Publish(ctx, events.DeadSubject(mallory.Name), id, &ev)
			if err != nil {
				return nil, err
			}
			forgedSeq <- ack.Sequence
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})

	bystander := integrityRun(t, e, "victim", nil) // not attacked: the plugin answers it too
	final := integrityRun(t, e, "victim", nil)
	<-forgedSeq        // the bystander's
	seq := <-forgedSeq // the second task's

	// The attack fails: the attempt is the executor's.
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	require.JSONEq(t, `"real"`, string(final.Result))
	require.Equal(t, "victim", final.Name)
	require.Equal(t, 1, final.Attempt, "no attempt 2 of the plugin's choosing")
	require.False(t, evilRan.Load(), "the task the plugin named never ran")
	finals := integrityFinals(t, e.b, final.ID)
	require.Len(t, finals, 1)
	require.JSONEq(t, `"real"`, string(finals[0].Result))

	// It is visible: a metric, an error log line, an alert in the log that
	// points at the forged message.
	require.Equal(t, 2, integrityForgeries(t, e.reg))
	require.True(t, e.logs.has("ERROR", "forgery detected"))
	alerts := integrityAlerts(t, e.b)
	require.Len(t, alerts, 2)
	require.Equal(t, events.AlertForgedMsgID, alerts[1].Kind)
	require.Equal(t, seq, alerts[1].Sequence)
	require.Equal(t, events.DeadSubject(mallory.Name), alerts[1].Subject)
	require.Equal(t, events.FinalMsgID(final.ID, 1), alerts[1].MsgID)

	// The projection shows it with the dead letters, blaming the plugin.
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.db")
	_, err := projections.Build(ctx, e.b, path, nil)
	require.NoError(t, err)
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	require.NoError(t, err)
	defer db.Close()
	var plugin string
	var sequence uint64
	require.NoError(t, db.QueryRowContext(ctx, `SELECT plugin, sequence FROM dead_letters WHERE consumer = ? ORDER BY seq DESC LIMIT 1`,
		"alert:"+events.AlertForgedMsgID).Scan(&plugin, &sequence))
	require.Equal(t, mallory.Name, plugin)
	require.Equal(t, seq, sequence)

	// Nothing else is touched: the first task too ended as it should.
	require.Equal(t, events.StatusSuccess, bystander.Status)
	require.JSONEq(t, `"real"`, string(bystander.Result))
	got, err := e.app.Get(ctx, final.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, got.Status)
}

// A plugin publishes, on its own patch subject, a patch naming another
// plugin's (predictable) invocation, under the Nats-Msg-Id that plugin's
// patch would carry in protocol 1: the honest patch was dropped from the
// log as a duplicate, and still applied from a core subscription. Now a
// patch carries no Nats-Msg-Id, the executor reads patches from the log
// only, and the forged one is reported.
func TestAttackPatchIDForgery(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeMutator, Triggers: []string{events.WorkerAdd}}
	honest := events.PluginInfo{Name: "honest", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorArgsReplace}}
	e := integritySetup(t, mallory, honest)
	executor.MustRegister(e.app, "who", func(_ context.Context, in map[string]string) (string, error) { return in["by"], nil }, nil)
	integrityStart(t, e)

	integrityPlugin(t, e, plugins.Spec{
		Name: honest.Name, Triggers: honest.Triggers,
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return &plugins.Patch{ContentType: events.ContentTypeMergePatch, Body: []byte(`{"kw":{"by":"honest"}}`)}, nil
		}),
	})
	var pb *bus.Bus
	pb = integrityPlugin(t, e, plugins.Spec{
		Name: mallory.Name, Triggers: mallory.Triggers,
		Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
			target := events.Event{ID: events.InvocationID(c.TaskID, c.Attempt, c.Run, events.TaskExecutorArgsReplace, 0, honest.Name), Trigger: events.TaskExecutorArgsReplace}
			forged := events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"kw":{"by":"mallory"}}`)}
			bus.FillPatch(&forged, mallory, target)
			forged.Invocation = target.ID
			if _, err := pb.Publish(ctx, events.PatchSubject(mallory.Name, events.TaskExecutorArgsReplace), target.ID+":patch", &forged); err != nil {
				return nil, err
			}
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})

	final := integrityRun(t, e, "who", map[string]string{"by": "nobody"})
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	require.JSONEq(t, `"honest"`, string(final.Result))
	call := integrityCall(t, e.b, final.ID, events.TaskExecutorArgsReplace, honest.Name)
	require.Equal(t, events.OutcomeApplied, call.Outcome)
	// The honest patch is in the log: the log says who changed the task.
	var honestPatches int
	for _, s := range bustest.EventsOf(t, e.b, final.ID, events.SubjectPatch+"."+honest.Name+".>") {
		require.Equal(t, call.Invocation, s.Event.Invocation)
		require.JSONEq(t, `{"kw":{"by":"honest"}}`, string(s.Event.Data))
		honestPatches++
	}
	require.Equal(t, 1, honestPatches)
	// The forgery is reported.
	require.Equal(t, 1, integrityForgeries(t, e.reg))
	require.True(t, e.logs.has("ERROR", "forgery detected: a patch on another plugin's subject"))
}

// A plugin answers with a patch whose headers are over JetStream's limit
// (64 KiB): the log refuses it, but a core subscriber would still read it.
// The executor acts only on stored patches: the patch decides nothing, and
// the call times out.
func TestAttackPatchTheLogRefuses(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}}
	e := integritySetup(t, mallory)
	executor.MustRegister(e.app, "victim", func(_ context.Context, _ struct{}) (string, error) { return "real", nil }, nil)
	integrityStart(t, e)
	refused := make(chan error, 1)
	var pb *bus.Bus
	pb = integrityPlugin(t, e, plugins.Spec{
		Name: mallory.Name, Triggers: mallory.Triggers, Timeout: time.Second, Policy: events.PolicyIgnore,
		Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
			p := events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"result":"pwned"}`)}
			bus.FillPatch(&p, mallory, c.Event)
			m := bus.Message(events.PatchSubject(mallory.Name, c.Trigger), "", &p)
			m.Header.Set("x-pad", strings.Repeat("x", 70*1024))
			_, err := pb.JetStream().PublishMsg(ctx, m)
			refused <- err
			<-ctx.Done() // no honest answer: only the refused one was sent
			return nil, ctx.Err()
		}),
	})
	final := integrityRun(t, e, "victim", nil)
	require.Error(t, <-refused, "JetStream refuses headers over 64 KiB")
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	require.JSONEq(t, `"real"`, string(final.Result), "a patch the log does not hold decides nothing")
	call := integrityCall(t, e.b, final.ID, events.TaskExecutorRunTask, mallory.Name)
	require.NotEqual(t, events.OutcomeApplied, call.Outcome)
	for _, s := range bustest.Events(t, e.b, events.SubjectPatch+".>") {
		require.NotContains(t, string(s.Event.Data), "pwned")
	}
}

// A patch carrying a Nats-Msg-Id is rejected with a reason that says so
// (protocol version 2): a plugin may not claim an id that could silence
// another message, and an honest plugin that still sends one learns why.
func TestAttackPatchWithMsgIDRejected(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}}
	e := integritySetup(t, mallory)
	executor.MustRegister(e.app, "victim", func(_ context.Context, _ struct{}) (string, error) { return "real", nil }, nil)
	integrityStart(t, e)
	var pb *bus.Bus
	pb = integrityPlugin(t, e, plugins.Spec{
		Name: mallory.Name, Triggers: mallory.Triggers, Timeout: 5 * time.Second, Policy: events.PolicyIgnore,
		Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
			p := events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"result":"patched"}`)}
			bus.FillPatch(&p, mallory, c.Event)
			if _, err := pb.Publish(ctx, events.PatchSubject(mallory.Name, c.Trigger), p.ID, &p); err != nil {
				return nil, err
			}
			// The runner's own answer comes second: the first one counts.
			return nil, errors.New("answered already")
		}),
	})
	final := integrityRun(t, e, "victim", nil)
	require.JSONEq(t, `"real"`, string(final.Result))
	call := integrityCall(t, e.b, final.ID, events.TaskExecutorRunTask, mallory.Name)
	require.Equal(t, events.OutcomeRejected, call.Outcome)
	require.Contains(t, call.Reason, events.HeaderMsgID)
}

// A consumer of dead letters that never acks them: JetStream gives up on
// each after its max deliveries, and the bus turns that advisory into a
// dead letter, which the consumer never acks either, and so on forever. A
// dead letter is never dead-lettered.
func TestAttackDeadLetterAmplification(t *testing.T) {
	t.Parallel()
	e := integritySetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	js := e.b.JetStream()
	// What the test watches: the advisories, in the order the bus gets them.
	advisories := make(chan *nats.Msg, 16)
	sub, err := e.b.Conn().ChanSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+bus.StreamEvents+".>", advisories)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	sink, err := js.CreateOrUpdateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{
		Durable: plugins.DurableName("sink"), FilterSubject: events.SubjectDead + ".>",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: 2,
	})
	require.NoError(t, err)
	require.NoError(t, e.b.DeadLetter(ctx, "somebody", "qtasks/test", events.DeadLetter{
		Stream: bus.StreamEvents, Sequence: 1, Subject: events.InvokeSubject("somebody", events.WorkerAdd), Reason: "first",
	}))
	// The sink takes the dead letter twice and never acks.
	for range 2 {
		batch, err := sink.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		require.NoError(t, err)
		n := 0
		for range batch.Messages() {
			n++
		}
		require.Equal(t, 1, n)
	}
	// JetStream gives up on it when it would deliver it a third time (to a
	// waiting pull, so the test pulls until the advisory comes).
	integrityPullUntilAdvisory(ctx, t, sink, advisories)
	// A second advisory, for an ordinary message, after it: once its dead
	// letter is written the bus has handled the sink's advisory.
	other, err := js.CreateOrUpdateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{
		Durable: plugins.DurableName("other"), FilterSubject: events.SubjectInvoke + ".other.>",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: 1,
	})
	require.NoError(t, err)
	inv := events.Event{ID: "x", Source: "qtasks/test", Type: events.TypeInvokePrefix + events.WorkerAdd, Trigger: events.WorkerAdd, Plugin: "other", TaskID: "t", Time: time.Now()}
	_, err = e.b.Publish(ctx, events.InvokeSubject("other", events.WorkerAdd), "", &inv)
	require.NoError(t, err)
	batch, err := other.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	for range batch.Messages() {
	}
	integrityPullUntilAdvisory(ctx, t, other, advisories)
	bustest.WaitFor(t, integrityWait, "the dead letter of the ordinary message", func() bool {
		return len(bustest.Events(t, e.b, events.DeadSubject("other"))) == 1
	})

	// The sink's unacked dead letter produced none.
	for _, s := range bustest.Events(t, e.b, events.SubjectDead+".>") {
		var dl events.DeadLetter
		require.NoError(t, json.Unmarshal(s.Event.Data, &dl))
		require.False(t, events.IsDeadSubject(dl.Subject), "dead letter %d records dead letter %d", s.Seq, dl.Sequence)
	}
	require.Empty(t, bustest.Events(t, e.b, events.DeadSubject("sink")))
	require.True(t, e.logs.has("WARN", "not dead-lettering a dead letter"))
}

// Two honest plugins grow a task's payload until a fact of its run is too
// large for the log: a failure that repeats on every run. The task ends in
// error at once, with a reason, and its message is not redelivered.
func TestAttackPoisonGrowingPayload(t *testing.T) {
	t.Parallel()
	grow := events.PluginInfo{Name: "grow", Mode: events.ModeMutator, Triggers: []string{events.BrokerAddWorker, events.WorkerAdd, events.TaskExecutorArgsReplace}}
	e := integritySetup(t, grow)
	var ran atomic.Int32
	executor.MustRegister(e.app, "victim", func(_ context.Context, _ map[string]any) (string, error) {
		ran.Add(1)
		return "ran", nil
	}, &executor.TaskOptions{Retry: 3}) // retries would fail the same way
	integrityStart(t, e)
	integrityPlugin(t, e, plugins.Spec{
		Name: grow.Name, Triggers: grow.Triggers,
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			// Each patch is under the patch limit; together they are not.
			body, _ := json.Marshal(map[string]any{"kw": map[string]string{c.Trigger: strings.Repeat("g", 250*1024)}})
			if c.Trigger == events.TaskExecutorArgsReplace {
				return &plugins.Patch{ContentType: events.ContentTypeMergePatch, Body: body}, nil
			}
			return &plugins.Patch{ContentType: events.ContentTypeMergePatch, Body: body}, nil
		}),
	})
	final := integrityRun(t, e, "victim", nil)
	require.Equal(t, events.StatusError, final.Status)
	require.Contains(t, final.Error, events.ErrTooLarge.Error())
	require.NotEmpty(t, final.Reason)
	require.Zero(t, ran.Load(), "the task does not run with a history the log cannot hold")
	require.Equal(t, 1, final.Run, "decided on its first delivery")
	require.Equal(t, 1, final.Attempt, "and not retried")
	finals := integrityFinals(t, e.b, final.ID)
	require.Len(t, finals, 1)
	require.Equal(t, events.StatusError, finals[0].Status)
	require.Empty(t, bustest.EventsOf(t, e.b, final.ID, events.SubjectTrigger+"."+events.BrokerRunningOlderTasks+".*"), "never redelivered")
	// The queue is empty: the message was acked, not handed back.
	bustest.WaitFor(t, integrityWait, "the task queue to empty", func() bool {
		info, err := e.b.TaskStream().Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
	// Nothing else is touched: a task the plugin does not grow past the
	// limits still runs.
	require.Equal(t, 0, integrityForgeries(t, e.reg))
}
