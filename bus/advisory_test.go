package bus_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// A plugin that never acknowledges a message runs out of deliveries; the
// bus records a dead letter pointing at the message's stream sequence.
func TestMaxDeliveriesBecomeDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	c, err := b.Consumer(ctx, bus.ConsumerConfig{
		Durable: "plugin-flaky", Subjects: []string{events.SubjectInvoke + ".flaky.>"},
		MaxDeliver: 2, AckWait: time.Second,
	})
	require.NoError(t, err)
	p := events.PluginInfo{Name: "flaky", Version: "1", Mode: events.ModeMutator, TimeoutMS: 100}
	inv := invocation("task9", p)
	inv.Type, inv.Plugin, inv.PluginVersion = events.TypeInvokePrefix+inv.Trigger, p.Name, p.Version
	ack, err := b.Publish(ctx, events.InvokeSubject(p.Name, inv.Trigger), inv.ID, &inv)
	require.NoError(t, err)

	// Nak twice: the second delivery is the last.
	for range 2 {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		require.NoError(t, err)
		got := 0
		for m := range batch.Messages() {
			got++
			require.NoError(t, m.Nak())
		}
		require.NoError(t, batch.Error())
		require.Equal(t, 1, got)
	}
	// The server notices the exhausted message when it next looks for
	// something to deliver.
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	for m := range batch.Messages() {
		t.Fatalf("delivered a third time: %s", m.Subject())
	}
	var dl events.DeadLetter
	bustest.WaitFor(t, 20*time.Second, "a dead letter", func() bool {
		evs := bustest.Events(t, b, events.DeadSubject("flaky"))
		if len(evs) == 0 {
			return false
		}
		require.Len(t, evs, 1)
		require.Equal(t, events.TypeDeadLetter, evs[0].Event.Type)
		require.NoError(t, json.Unmarshal(evs[0].Event.Data, &dl))
		return true
	})
	require.Equal(t, ack.Sequence, dl.Sequence)
	require.Equal(t, "plugin-flaky", dl.Consumer)
	require.Equal(t, 2, dl.Deliveries)
	require.Equal(t, events.InvokeSubject(p.Name, inv.Trigger), dl.Subject)
}
