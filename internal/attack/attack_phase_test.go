package attack_test

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

// Phase messages (issue #15, design (f)) hold the packed facts of every
// trigger of a phase. No plugin may write one: a forged phase message
// would put facts in the log that the projection, replay and observers
// take for the executor's. Every plugin user, the global observer's
// included, is refused by the server.
func TestAttackForgedPhaseMessage(t *testing.T) {
	t.Parallel()
	e := regSetup(t)
	ctx := e.ctx
	data, err := events.EncodeBatch([]events.Event{bustest.Fact("victim", events.StorageGet, 0, `{"forged":true}`)})
	require.NoError(t, err)
	before, err := e.admin.EventStream().Info(ctx)
	require.NoError(t, err)
	for _, name := range []string{"bob", "olga", "gus"} {
		r := e.raw(name)
		m := &nats.Msg{Subject: events.PhaseSubject(events.PhaseIntake, "default"), Header: nats.Header{}, Data: data}
		m.Header.Set("Content-Type", events.ContentTypeBatch)
		require.NoError(t, r.nc.PublishMsg(m))
		r.denied(t, name+" publishing a phase message")
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := r.js.PublishMsg(pctx, m)
		cancel()
		require.Error(t, err, "%s: a JetStream publish of a phase message", name)
	}
	after, err := e.admin.EventStream().Info(ctx)
	require.NoError(t, err)
	require.Equal(t, before.State.LastSeq, after.State.LastSeq, "nothing stored")
}

// An observer whose grant names triggers reads their facts only: it cannot
// register to read phase messages (they hold every trigger's facts), is
// told why, gets no consumer for it, and cannot read them around its
// consumer. A global observer may, and its consumer then reads them.
func TestAttackRestrictedObserverReadsNoPhaseMessages(t *testing.T) {
	t.Parallel()
	e := regSetup(t)
	ctx := e.ctx
	bustest.PublishPhase(t, e.admin, events.PhaseIntake, "default", bustest.Fact("secret", events.StorageGet, 0, `{"secret":1}`))

	olga := e.plugin("olga")
	p := e.info("olga")
	p.ReadsBatches = true
	_, err := olga.Registry().Register(ctx, p)
	require.ErrorIs(t, err, bus.ErrRegistrationRefused)
	require.ErrorContains(t, err, "reads_batches is not granted")
	_, err = e.admin.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName("olga"))
	require.ErrorIs(t, err, jetstream.ErrConsumerNotFound, "no consumer for a refused registration")

	// Without it she registers; her consumer reads her triggers only.
	_, err = olga.Registry().Register(ctx, e.info("olga"))
	require.NoError(t, err)
	c, err := e.admin.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName("olga"))
	require.NoError(t, err)
	for _, f := range append(c.CachedInfo().Config.FilterSubjects, c.CachedInfo().Config.FilterSubject) {
		require.NotContains(t, f, events.SubjectPhase, "her consumer reads no phase message")
	}
	// Around her consumer: a consumer of her own, or a message by sequence.
	r := e.raw("olga")
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = r.js.CreateOrUpdateConsumer(cctx, bus.StreamEvents, jetstream.ConsumerConfig{Durable: "plugin-olga", FilterSubject: events.PhaseSubjects})
	cancel()
	require.Error(t, err)
	r.denied(t, "a consumer of phase messages")
	sub, err := r.nc.SubscribeSync(events.PhaseSubjects)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }() // the server refused it: nothing to undo there
	r.denied(t, "a subscription to phase messages")

	// A mutator may not say it reads batches either: it reads no facts.
	bob := e.plugin("bob")
	pb := e.info("bob")
	pb.ReadsBatches = true
	_, err = bob.Registry().Register(ctx, pb)
	require.ErrorIs(t, err, bus.ErrRegistrationRefused)
	require.ErrorContains(t, err, "reads_batches is for observers")

	// The global observer may; its consumer reads the phase messages.
	gus := e.plugin("gus")
	pg := e.info("gus")
	pg.ReadsBatches = true
	got, err := gus.Registry().Register(ctx, pg)
	require.NoError(t, err)
	require.True(t, got.ReadsBatches)
	c, err = e.admin.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName("gus"))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{events.SubjectTrigger + ".>", events.PhaseSubjects}, c.CachedInfo().Config.FilterSubjects)
}
