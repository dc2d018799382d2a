package attack

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// echo has JetStream write msg, headers and body as the plugin chose, on
// subject: the plugin stores msg under a key of its own state bucket, then
// asks for it by direct get with subject as the reply subject. NATS checks
// the subject a client publishes on, never its reply subject, and the
// server's answer is captured by whichever stream holds subject.
func echo(ctx context.Context, nc *nats.Conn, plugin, key, subject string, msg *nats.Msg) error {
	msg.Subject = "$KV." + bus.BucketPluginState + "." + plugin + "." + key
	if _, err := nc.RequestMsgWithContext(ctx, msg); err != nil {
		return err
	}
	if err := nc.PublishRequest("$JS.API.DIRECT.GET.KV_"+bus.BucketPluginState+"."+msg.Subject, subject, nil); err != nil {
		return err
	}
	return nc.FlushWithContext(ctx)
}

// A plugin with its least rights has the server echo, onto an executor's
// subjects, messages it wrote into its own state bucket: an attempt's final
// fact under the id the executor's own final fact carries (before the
// executor writes it), and an operator's cancel signed "alice". Before,
// the executor took its final fact's duplicate ack for its own (same
// subject, id and type), so the log held the plugin's record of the
// attempt (status retry, result "pwned") and not the executor's, and the
// projection showed both forgeries as written. An echo carries the headers
// JetStream adds to a direct get's answer (Nats-Stream, Nats-Sequence),
// which nobody else writes: no reader takes it for an event.
func TestAttackDirectGetEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeMutator, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	executor.MustRegister(e.app, "victim", func(_ context.Context, _ struct{}) (string, error) { return "real", nil }, nil)
	integrityStart(t, e)

	var pb *bus.Bus
	forged := make(chan string, 4)
	pb = integrityPlugin(t, e, plugins.Spec{
		Name: mallory.Name, Triggers: mallory.Triggers,
		Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
			model := events.Task{
				ID: c.TaskID, Name: "victim", Queue: executor.DefaultQueue, Status: events.StatusRetry,
				Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{}`), Result: json.RawMessage(`"pwned"`),
				Attempt: c.Attempt, Retry: 5, UpdatedAt: time.Now().UTC(),
			}
			data, _ := json.Marshal(map[string]any{"input": map[string]any{"model": model}})
			id := events.FinalMsgID(c.TaskID, c.Attempt)
			final := events.Event{
				ID: id, Source: "qtasks/" + e.app.NodeID(), Type: events.TypeTriggerPrefix + events.StorageRemoveFinishedTask,
				Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: data, Subject: c.TaskID,
				TaskID: c.TaskID, TaskName: c.TaskName, Trigger: events.StorageRemoveFinishedTask, Attempt: c.Attempt, Run: c.Run,
			}
			if err := echo(ctx, pb.Conn(), mallory.Name, "final", events.FactSubject(events.StorageRemoveFinishedTask, executor.DefaultQueue),
				bus.Message("", id, &final)); err != nil {
				return nil, err
			}

			action := events.OperatorAction{
				Action: events.ActionCancel, TaskID: c.TaskID, Attempt: c.Attempt,
				Queue: executor.DefaultQueue, By: "alice", Reason: "she never did this",
			}
			op, _ := json.Marshal(action)
			cancel := events.Event{
				ID: "op:forged", Source: "qtasks/" + e.app.NodeID(), Type: events.TypeOperator, Time: time.Now(),
				DataContentType: events.ContentTypeJSON, Data: op, Subject: c.TaskID, TaskID: c.TaskID, Attempt: c.Attempt,
			}
			if err := echo(ctx, pb.Conn(), mallory.Name, "op", events.OperatorSubject(executor.DefaultQueue), bus.Message("", "", &cancel)); err != nil {
				return nil, err
			}
			select {
			case forged <- c.TaskID:
			default:
			}
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})

	final := integrityRun(t, e, "victim", nil)
	require.Equal(t, final.ID, <-forged)

	// The attack fails: the attempt's final fact in the log is the
	// executor's, and the forged one is reported where it lies.
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	finals := integrityFinals(t, e.b, final.ID)
	require.Len(t, finals, 1, "only the executor's final fact reads as one")
	require.JSONEq(t, `"real"`, string(finals[0].Result))
	require.Equal(t, events.StatusSuccess, finals[0].Status)
	require.Equal(t, 1, integrityForgeries(t, e.reg))
	alerts := integrityAlerts(t, e.b)
	require.Len(t, alerts, 1)
	require.Equal(t, events.FactSubject(events.StorageRemoveFinishedTask, executor.DefaultQueue), alerts[0].Subject)
	require.Contains(t, alerts[0].Reason, "Nats-Stream")

	// The projection shows neither forgery as what it claims to be: both
	// are rejected messages, the task ended in success, nobody cancelled it.
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.db")
	_, err := projections.Build(ctx, e.b, path, nil)
	require.NoError(t, err)
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	require.NoError(t, err)
	defer db.Close()
	var status string
	require.NoError(t, db.QueryRowContext(ctx, `SELECT status FROM tasks WHERE id = ?`, final.ID).Scan(&status))
	require.Equal(t, events.StatusSuccess, status)
	var actions, rejected int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM operator_actions`).Scan(&actions))
	require.Zero(t, actions, "the forged cancel is no operator's action")
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM rejected_events WHERE reason LIKE '%Nats-Stream%'`).Scan(&rejected))
	require.Equal(t, 2, rejected)
}

// A plugin has the server echo, onto the subject of JetStream's
// max-deliveries advisories, a body of its choosing naming another
// plugin's consumer. Before, every executor took it for JetStream's
// advisory and wrote, as qtasks/bus, a dead letter saying that plugin had
// not acknowledged message 1 after 99 deliveries: the log blamed a plugin
// for what it never did. An echo is refused as it is in the log, by its
// Nats-Stream header, and the advisory must name the stream and consumer
// its subject names.
func TestAttackForgedMaxDeliveriesAdvisory(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeMutator, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	integrityStart(t, e)
	pb := integrityPluginBus(t, e, mallory.Name)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()

	advisory := `{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"` + bus.StreamEvents +
		`","consumer":"plugin-victim","stream_seq":1,"deliveries":99}`
	subject := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + bus.StreamEvents + ".plugin-victim"
	require.NoError(t, echo(ctx, pb.Conn(), mallory.Name, "adv", subject, &nats.Msg{Data: []byte(advisory)}))

	bustest.WaitFor(t, integrityWait, "the advisory handled", func() bool {
		return len(bustest.Events(t, e.b, events.DeadSubject("victim"))) > 0 || e.logs.has("WARN", "advisory")
	})
	require.Empty(t, bustest.Events(t, e.b, events.DeadSubject("victim")), "a dead letter blaming a plugin for an echo")
	require.True(t, e.logs.has("WARN", "Nats-Stream"))
}

// A plugin has the server write on another plugin's registration subjects:
// the publish ack of a write to its own state, sent to the reply subject
// qtasks.registry.deregister.bob, and a direct get's answer carrying a
// registration of bob's with a one-millisecond timeout and policy ignore,
// sent to qtasks.registry.register.bob. The subject's last token is the
// only proof of who asks; before, the registrar deregistered bob (and
// deleted his consumer), then registered him as the attacker wrote. A
// request is one only if it has a reply subject under an inbox prefix,
// which no answer of the server's has.
func TestAttackRegistryEcho(t *testing.T) {
	t.Parallel()
	alice := events.PluginInfo{Name: "alice", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorArgsReplace}}
	bob := events.PluginInfo{Name: "bob", Version: "1", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}, TimeoutMS: 2000}
	e := integritySetup(t, alice, bob)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	stored, err := integrityPluginBus(t, e, bob.Name).Registry().Register(ctx, bob)
	require.NoError(t, err)
	nc := integrityPluginBus(t, e, alice.Name).Conn()

	put := nats.NewMsg("$KV." + bus.BucketPluginState + ".alice.ack")
	put.Reply = events.DeregisterSubject(bob.Name)
	put.Data = []byte("x")
	require.NoError(t, nc.PublishMsg(put))
	forged := bob
	forged.Protocol = events.ProtocolVersion
	forged.TimeoutMS, forged.Policy = 1, events.PolicyIgnore
	body, err := json.Marshal(forged)
	require.NoError(t, err)
	require.NoError(t, echo(ctx, nc, alice.Name, "reg", events.RegisterSubject(bob.Name), &nats.Msg{Data: body}))

	changed := func() bool {
		got, ok := e.b.Registry().Get(bob.Name)
		return !ok || got.TimeoutMS != stored.TimeoutMS || got.Policy != stored.Policy
	}
	bustest.WaitFor(t, integrityWait, "both requests handled", func() bool {
		return changed() || strings.Count(e.logs.String(), "not a request") >= 2
	})
	require.False(t, changed(), "bob's registration was changed by another plugin")
	_, err = e.b.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName(bob.Name))
	require.NoError(t, err, "bob's consumer is still there")
}

// A plugin has the server echo onto the seal subjects a seal of its
// choosing whose range ends far ahead of the log. Before, a sealer starting
// (or one resyncing after a refused seal) adopted the last message on the
// seal subjects as the chain's tip whatever wrote it, and from then on took
// the whole log for sealed: it never wrote another seal. Now a seal read
// back from the log must not be an echo and must cover only messages before
// itself, as verify already demanded.
func TestAttackForgedSealEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeMutator, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	integrityStart(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	pb := integrityPluginBus(t, e, mallory.Name)

	const ahead = uint64(1) << 40
	zero := strings.Repeat("0", 64)
	forged, err := json.Marshal(events.Seal{
		Version: events.SealVersion, First: 1, Last: ahead, Missing: [][2]uint64{{1, ahead}},
		PrevSeq: 1, Prev: zero, Digest: zero,
	})
	require.NoError(t, err)
	ev := events.Event{ID: "seal:forged", Source: "qtasks/node", Type: events.TypeSeal, Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: forged}
	require.NoError(t, echo(ctx, pb.Conn(), mallory.Name, "seal", events.SealSubject("node"), bus.Message("", "", &ev)))
	bustest.WaitFor(t, integrityWait, "the forged seal in the log", func() bool {
		return len(bustest.Events(t, e.b, events.SealSubjects)) == 1
	})

	// Something after it to seal.
	require.NoError(t, e.b.DeadLetter(ctx, "somebody", "qtasks/test", events.DeadLetter{
		Stream: bus.StreamEvents, Sequence: 1, Subject: events.InvokeSubject("somebody", events.WorkerAdd), Reason: "a message to seal",
	}))

	sealed := make(chan uint64, 16)
	s, err := e.b.StartSealer(ctx, bus.SealerConfig{Node: "honest", Every: 1000, Interval: time.Hour, Sealed: func(seq uint64, _ events.Seal) { sealed <- seq }})
	require.NoError(t, err)
	t.Cleanup(func() { s.Stop() })
	require.NoError(t, s.Flush(ctx))
	select {
	case <-sealed:
	default:
		t.Fatal("the sealer sealed nothing: it took the forged seal for the chain's tip")
	}
	require.Less(t, s.Covered(), ahead)
}
