package bus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

const invTrigger = events.TaskExecutorArgsReplace

func invocation(taskID string, p events.PluginInfo) events.Event {
	return events.Event{
		ID:          events.InvocationID(taskID, 1, 1, invTrigger, 0, p.Name),
		Source:      "qtasks/test/executor",
		Subject:     taskID,
		TaskID:      taskID,
		TaskName:    "add",
		Trigger:     invTrigger,
		Attempt:     1,
		Run:         1,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Data:        []byte(`{"args":[1,2],"kw":{}}`),
	}
}

// requireSameEvent compares two events, their times as instants: a time
// read back from the log is in UTC and has no monotonic reading.
func requireSameEvent(t *testing.T, want, got events.Event) {
	t.Helper()
	require.True(t, want.Time.Equal(got.Time), "time %v, want %v", got.Time, want.Time)
	want.Time, got.Time = time.Time{}, time.Time{}
	require.Equal(t, want, got)
}

// ackSeqs waits for publishes and returns their stream sequences.
func ackSeqs(t *testing.T, futs []jetstream.PubAckFuture) []uint64 {
	t.Helper()
	var out []uint64
	for _, f := range futs {
		select {
		case ack := <-f.Ok():
			out = append(out, ack.Sequence)
		case err := <-f.Err():
			t.Fatalf("publishing %s: %v", f.Msg().Subject, err)
		case <-time.After(wait):
			t.Fatalf("no ack for %s in %v", f.Msg().Subject, wait)
		}
	}
	return out
}

type invokeResult struct {
	reply bus.Reply
	err   error
}

// invokeAsync runs Invoke in the background, so that the test goroutine can
// play the plugin.
func invokeAsync(ctx context.Context, b *bus.Bus, p events.PluginInfo, inv events.Event) <-chan invokeResult {
	ch := make(chan invokeResult, 1)
	go func() {
		r, err := b.Invoke(ctx, p, inv)
		ch <- invokeResult{r, err}
	}()
	return ch
}

func awaitResult(t *testing.T, ch <-chan invokeResult) invokeResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(wait):
		t.Fatalf("Invoke did not return in %v", wait)
		return invokeResult{}
	}
}

// pluginConsumer is the durable consumer a remote plugin reads its
// invocations from, created on the plugin's own connection.
func pluginConsumer(ctx context.Context, t *testing.T, pb *bus.Bus, name string) jetstream.Consumer {
	t.Helper()
	c, err := pb.Consumer(ctx, bus.ConsumerConfig{
		Durable:  "plugin-" + name,
		Subjects: []string{events.SubjectInvoke + "." + name + ".>"},
	})
	require.NoError(t, err)
	return c
}

// nextInvocation fetches and decodes the plugin's next invocation.
func nextInvocation(t *testing.T, c jetstream.Consumer) (events.Event, jetstream.Msg) {
	t.Helper()
	m, err := c.Next(jetstream.FetchMaxWait(wait))
	require.NoError(t, err)
	inv, err := events.Decode(events.Headers(m.Headers()), m.Data())
	require.NoError(t, err)
	return inv, m
}

func TestInvokeRemote(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	pb := bustest.Connect(t, b, &bus.Config{Name: "plugin"})
	p := events.PluginInfo{
		Name: "argfix", Version: "1.2.0", Mode: events.ModeMutator, TimeoutMS: 15000,
		Triggers: []string{invTrigger},
	}
	c := pluginConsumer(ctx, t, pb, p.Name)

	inv := invocation("task1", p)
	res := invokeAsync(ctx, b, p, inv)

	// The plugin's side, on its own connection.
	got, m := nextInvocation(t, c)
	require.Equal(t, events.InvokeSubject(p.Name, invTrigger), m.Subject())
	// Published once: no Nats-Msg-Id for the server's duplicate window
	// to hold.
	require.Empty(t, m.Headers().Get(events.HeaderMsgID))
	require.Equal(t, inv.ID, got.ID)
	require.Equal(t, events.TypeInvokePrefix+invTrigger, got.Type)
	require.Equal(t, p.Name, got.Plugin)
	require.Equal(t, p.Version, got.PluginVersion)
	require.Equal(t, 15000, got.TimeoutMS)
	require.Equal(t, events.ContentTypeJSON, got.DataContentType)
	require.Equal(t, "task1", got.TaskID)
	require.Equal(t, inv.TraceParent, got.TraceParent)
	require.JSONEq(t, string(inv.Data), string(got.Data))
	require.False(t, got.Time.IsZero())

	patch := events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"args":[1,2,3]}`)}
	bus.FillPatch(&patch, p, got)
	require.Equal(t, inv.ID, patch.Invocation)
	require.NoError(t, patch.Validate())
	pack, err := pb.Publish(ctx, events.PatchSubject(p.Name, got.Trigger), "", &patch)
	require.NoError(t, err)
	require.NoError(t, m.Ack())

	r := awaitResult(t, res)
	require.NoError(t, r.err)
	require.Equal(t, events.TypePatch, r.reply.Patch.Type)
	require.Equal(t, inv.ID, r.reply.Patch.Invocation)
	require.Equal(t, inv.ID+":patch", r.reply.Patch.ID)
	require.Equal(t, p.Name, r.reply.Patch.Plugin)
	require.Equal(t, p.Version, r.reply.Patch.PluginVersion)
	require.Equal(t, events.ContentTypeMergePatch, r.reply.Patch.DataContentType)
	require.Equal(t, `{"args":[1,2,3]}`, string(r.reply.Patch.Data)) //nolint:testifylint // encoded-compare: the plugin's bytes travel as they are
	require.NotZero(t, r.reply.InvokeSeq)
	require.Equal(t, pack.Sequence, r.reply.PatchSeq, "the patch is taken from the log, where it is stored")
	require.Empty(t, r.reply.Pending, "a remote invocation is acked before its reply returns")

	// Both are in the log: the invocation at InvokeSeq, the patch after it.
	stored, _ := decodeStored(ctx, t, b, r.reply.InvokeSeq)
	require.Equal(t, inv.ID, stored.ID)
	require.Equal(t, events.TypeInvokePrefix+invTrigger, stored.Type)
	storedPatch, _ := decodeStored(ctx, t, b, pack.Sequence)
	requireSameEvent(t, r.reply.Patch, storedPatch)
	require.Greater(t, pack.Sequence, r.reply.InvokeSeq)
}

func TestInvokeTimesOut(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	p := events.PluginInfo{Name: "silent", Version: "1", Mode: events.ModeMutator, TimeoutMS: 200}

	start := time.Now()
	_, err := b.Invoke(ctx, p, invocation("task1", p))
	require.ErrorIs(t, err, bus.ErrPluginTimeout)
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)

	// The invocation was still recorded: the log says the plugin was asked.
	ev := lastOn(ctx, t, b, events.InvokeSubject(p.Name, invTrigger))
	require.Equal(t, 200, ev.TimeoutMS)

	// A caller's own deadline is reported as such, not as a plugin timeout.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p.TimeoutMS = 60000
	_, err = b.Invoke(cctx, p, invocation("task2", p))
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, bus.ErrPluginTimeout)
}

// A patch sent after the invocation's deadline (ce-time + ce-timeoutms,
// PROTOCOL.md §9.2: the plugin's own rule) is a timeout, whenever it
// reaches the executor. The executor's wait once started when it published,
// after ce-time, and a late error patch (a plugin that gave up at its
// deadline) was taken as the answer: a "timeout" case recorded "error" in CI.
func TestInvokeLatePatchIsATimeout(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	pb := bustest.Connect(t, b, &bus.Config{Name: "plugin"})
	p := events.PluginInfo{Name: "late", Version: "1", Mode: events.ModeMutator, TimeoutMS: 400, Triggers: []string{invTrigger}}
	c := pluginConsumer(ctx, t, pb, p.Name)

	inv := invocation("task1", p)
	inv.Time = time.Now().Add(-200 * time.Millisecond) // the firing began before the publish
	res := invokeAsync(ctx, b, p, inv)
	got, m := nextInvocation(t, c)
	deadline := got.Time.Add(time.Duration(got.TimeoutMS) * time.Millisecond)
	// The plugin answers after its deadline: this wait is the scenario,
	// not a guess at how long something takes.
	time.Sleep(time.Until(deadline) + 20*time.Millisecond)
	patch := events.Event{PluginError: "gave up at the deadline"}
	bus.FillPatch(&patch, p, got)
	_, err := pb.Publish(ctx, events.PatchSubject(p.Name, got.Trigger), "", &patch)
	require.NoError(t, err)
	require.NoError(t, m.Ack())

	r := awaitResult(t, res)
	require.ErrorIs(t, r.err, bus.ErrPluginTimeout, "a patch after the deadline is not the answer")
}

func TestInvokeIgnoresReplyOnAnotherPluginsSubject(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	pb := bustest.Connect(t, b, &bus.Config{Name: "intruder"})
	p := events.PluginInfo{Name: "victim", Version: "1", Mode: events.ModeMutator, TimeoutMS: 15000}
	other := events.PluginInfo{Name: "intruder", Version: "1", Mode: events.ModeMutator}
	c := pluginConsumer(ctx, t, pb, p.Name)

	inv := invocation("task1", p)
	res := invokeAsync(ctx, b, p, inv)
	got, m := nextInvocation(t, c)
	require.NoError(t, m.Ack())

	// Same invocation id, but published where the other plugin answers: it
	// neither decides nor fails the call.
	patch := events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"args":[666]}`)}
	bus.FillPatch(&patch, other, got)
	require.Equal(t, inv.ID, patch.Invocation)
	_, err := pb.Publish(ctx, events.PatchSubject(other.Name, got.Trigger), "", &patch)
	require.NoError(t, err)

	// The invoked plugin's own answer, with the header name in another case
	// (as a client in another language may send it), is the one taken.
	own := events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"args":[1]}`)}
	bus.FillPatch(&own, p, got)
	msg := bus.Message(events.PatchSubject(p.Name, got.Trigger), "", &own)
	v := msg.Header.Get(events.HeaderPrefix + events.ExtInvocation)
	msg.Header.Del(events.HeaderPrefix + events.ExtInvocation)
	msg.Header["Ce-Invocation"] = []string{v}
	_, err = pb.JetStream().PublishMsg(ctx, msg)
	require.NoError(t, err)

	r := awaitResult(t, res)
	require.NoError(t, r.err)
	require.JSONEq(t, `{"args":[1]}`, string(r.reply.Patch.Data))
	require.Equal(t, p.Name, r.reply.Patch.Plugin)
}

func TestInvokeRejectsReplyThatIsNotAPatch(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	pb := bustest.Connect(t, b, nil)
	p := events.PluginInfo{Name: "confused", Version: "1", Mode: events.ModeMutator, TimeoutMS: 15000}
	c := pluginConsumer(ctx, t, pb, p.Name)

	res := invokeAsync(ctx, b, p, invocation("task1", p))
	got, m := nextInvocation(t, c)
	require.NoError(t, m.Ack())

	reply := events.Event{DataContentType: events.ContentTypeJSON, Data: []byte(`{}`)}
	bus.FillPatch(&reply, p, got)
	reply.Type = events.TypeTask // on the right subject, with the right invocation, but not a patch
	_, err := pb.Publish(ctx, events.PatchSubject(p.Name, got.Trigger), reply.ID, &reply)
	require.NoError(t, err)

	r := awaitResult(t, res)
	require.ErrorIs(t, r.err, events.ErrInvalidEvent)
	require.NotErrorIs(t, r.err, bus.ErrPluginTimeout)
}

func TestInvokeLocal(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	p := events.PluginInfo{Name: "inproc", Version: "3", Mode: events.ModeMutator, Local: true, TimeoutMS: 15000}

	var calls atomic.Int32
	b.RegisterLocal(p.Name, func(_ context.Context, inv events.Event) (events.Event, error) {
		calls.Add(1)
		if inv.Plugin != p.Name || inv.Type != events.TypeInvokePrefix+invTrigger || inv.TimeoutMS != 15000 {
			return events.Event{}, errors.New("unexpected invocation attributes")
		}
		return events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"kw":{"local":true}}`)}, nil
	})

	inv := invocation("task1", p)
	r, err := b.Invoke(ctx, p, inv)
	require.NoError(t, err)
	require.Equal(t, int32(1), calls.Load())
	require.Empty(t, r.Patch.PluginError)
	require.Equal(t, events.TypePatch, r.Patch.Type)
	require.Equal(t, inv.ID, r.Patch.Invocation)
	require.Equal(t, p.Name, r.Patch.Plugin)
	require.Equal(t, p.Version, r.Patch.PluginVersion)
	require.Equal(t, events.ContentTypeMergePatch, r.Patch.DataContentType)
	require.Equal(t, `{"kw":{"local":true}}`, string(r.Patch.Data)) //nolint:testifylint // encoded-compare: the plugin's bytes travel as they are

	// Both invocation and patch are in the log, as for a remote plugin, once
	// the publishes the reply hands back are acked.
	seqs := ackSeqs(t, r.Pending)
	require.Len(t, seqs, 2)
	storedInv, rawInv := decodeStored(ctx, t, b, seqs[0])
	require.Equal(t, events.InvokeSubject(p.Name, invTrigger), rawInv.Subject)
	require.Equal(t, inv.ID, storedInv.ID)
	require.Equal(t, p.Name, storedInv.Plugin)
	require.Empty(t, rawInv.Header.Get(events.HeaderMsgID))
	storedPatch, rawPatch := decodeStored(ctx, t, b, seqs[1])
	require.Equal(t, events.PatchSubject(p.Name, invTrigger), rawPatch.Subject)
	requireSameEvent(t, r.Patch, storedPatch)
	require.Greater(t, seqs[1], seqs[0])

	// Once unregistered, the plugin is invoked remotely, and nobody answers.
	b.UnregisterLocal(p.Name)
	p.TimeoutMS = 200
	_, err = b.Invoke(ctx, p, invocation("task2", p))
	require.ErrorIs(t, err, bus.ErrPluginTimeout)
	require.Equal(t, int32(1), calls.Load())
}

func TestInvokeLocalFailuresBecomePluginErrors(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)

	cases := []struct {
		name    string
		handler bus.LocalHandler
		reason  string
	}{
		{"panics", func(context.Context, events.Event) (events.Event, error) { panic("kaboom") }, "kaboom"},
		{"fails", func(context.Context, events.Event) (events.Event, error) {
			return events.Event{DataContentType: events.ContentTypeMergePatch, Data: []byte(`{"args":[]}`)},
				errors.New("database unreachable")
		}, "database unreachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := events.PluginInfo{Name: "local-" + tc.name, Version: "1", Mode: events.ModeMutator, TimeoutMS: 15000}
			b.RegisterLocal(p.Name, tc.handler)
			inv := invocation("task-"+tc.name, p)
			r, err := b.Invoke(ctx, p, inv)
			require.NoError(t, err)
			require.Contains(t, r.Patch.PluginError, tc.reason)
			require.Empty(t, r.Patch.Data, "a failed call changes nothing")
			require.Equal(t, events.TypePatch, r.Patch.Type)
			require.Equal(t, inv.ID, r.Patch.Invocation)

			seqs := ackSeqs(t, r.Pending)
			require.Len(t, seqs, 2)
			stored, _ := decodeStored(ctx, t, b, seqs[1])
			require.Equal(t, events.TypePatch, stored.Type)
			require.Contains(t, stored.PluginError, tc.reason)
			require.Equal(t, inv.ID, stored.Invocation)
		})
	}
}

func TestInvokeLocalTimesOut(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	p := events.PluginInfo{Name: "slowpoke", Version: "1", Mode: events.ModeMutator, TimeoutMS: 200}
	release := make(chan struct{})
	returned := make(chan struct{})
	b.RegisterLocal(p.Name, func(context.Context, events.Event) (events.Event, error) {
		defer close(returned)
		<-release
		return events.Event{}, nil
	})
	_, err := b.Invoke(ctx, p, invocation("task1", p))
	require.ErrorIs(t, err, bus.ErrPluginTimeout)
	close(release)
	select {
	case <-returned:
	case <-time.After(wait):
		t.Fatal("handler did not return")
	}
}

// Many invocations in flight at once, answered by a plugin in another
// connection in whatever order its consumer delivers them: each caller gets
// the patch of its own invocation.
func TestInvokeConcurrentCorrelation(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	pb := bustest.Connect(t, b, &bus.Config{Name: "plugin"})
	p := events.PluginInfo{Name: "echo", Version: "1", Mode: events.ModeMutator, TimeoutMS: 15000}
	c := pluginConsumer(ctx, t, pb, p.Name)

	pluginErrs := make(chan error, 100)
	report := func(err error) {
		select {
		case pluginErrs <- err:
		default:
		}
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		inv, err := events.Decode(events.Headers(m.Headers()), m.Data())
		if err != nil {
			report(err)
			_ = m.Term()
			return
		}
		patch := events.Event{
			DataContentType: events.ContentTypeMergePatch,
			Data:            []byte(`{"kw":{"task":"` + inv.TaskID + `"}}`),
		}
		bus.FillPatch(&patch, p, inv)
		if _, err := pb.Publish(ctx, events.PatchSubject(p.Name, inv.Trigger), "", &patch); err != nil {
			report(err)
			return
		}
		_ = m.Ack()
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)

	const n = 40
	results := make([]<-chan invokeResult, n)
	for i := range n {
		results[i] = invokeAsync(ctx, b, p, invocation("task"+string(rune('A'+i%26))+string(rune('a'+i/26)), p))
	}
	seen := map[uint64]bool{}
	for i := range n {
		taskID := "task" + string(rune('A'+i%26)) + string(rune('a'+i/26))
		r := awaitResult(t, results[i])
		require.NoError(t, r.err, taskID)
		require.Equal(t, events.InvocationID(taskID, 1, 1, invTrigger, 0, p.Name), r.reply.Patch.Invocation)
		require.Equal(t, taskID, r.reply.Patch.TaskID)
		require.Equal(t, `{"kw":{"task":"`+taskID+`"}}`, string(r.reply.Patch.Data))
		require.NotZero(t, r.reply.InvokeSeq)
		require.False(t, seen[r.reply.InvokeSeq], "two invocations at one sequence")
		seen[r.reply.InvokeSeq] = true
	}
	select {
	case err := <-pluginErrs:
		t.Fatalf("plugin: %v", err)
	default:
	}
}
