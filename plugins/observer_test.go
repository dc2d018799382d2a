package plugins_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

// A slow observer's prefetched facts outlive their ack wait and are
// delivered again; the runner still calls the plugin once per fact, in
// stream order.
func TestObserverCalledOncePerFact(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := bustest.Open(t, nil)

	const n = 1000
	var acks bus.Acks
	for i := range n {
		id := fmt.Sprintf("task-%04d", i)
		data, err := (&events.Fact{Input: json.RawMessage(`{"uuid":"` + id + `"}`)}).AppendJSON(nil)
		require.NoError(t, err)
		ev := events.Event{
			ID: events.FactMsgID(id, 1, 0, events.StorageAdd, 0), Source: "qtasks/test", Type: events.TypeTriggerPrefix + events.StorageAdd,
			Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: data, Trigger: events.StorageAdd,
			Attempt: 1, Subject: id, TaskID: id, TaskName: "t",
		}
		f, err := b.PublishAsync(events.FactSubject(events.StorageAdd, "default"), "", &ev)
		require.NoError(t, err)
		acks.Add(f)
	}
	require.NoError(t, acks.Wait(ctx))

	var (
		mu   sync.Mutex
		seqs []uint64
		all  = make(chan struct{})
	)
	r, err := plugins.Start(ctx, b, plugins.Spec{
		Name: "slow", Version: "1", Mode: plugins.Observer, Triggers: []string{events.StorageAdd},
		// Hundreds of facts are prefetched, at 4 ms each: those at the back
		// wait longer than a second.
		AckWait: time.Second,
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			time.Sleep(4 * time.Millisecond) // the plugin's work
			mu.Lock()
			defer mu.Unlock()
			seqs = append(seqs, c.Seq)
			if len(seqs) == n {
				close(all)
			}
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Stop(context.Background())) }()
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatal("the observer did not see every fact")
	}
	// Redeliveries still arriving are skipped, not handed to the plugin.
	bustest.WaitFor(t, time.Minute, "every delivery to be acked", func() bool {
		info, err := b.JetStream().Consumer(ctx, bus.StreamEvents, plugins.DurableName("slow"))
		if err != nil {
			return false
		}
		ci, err := info.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seqs, n, "one call per fact")
	for i := 1; i < len(seqs); i++ {
		require.Greater(t, seqs[i], seqs[i-1], "in stream order, without repeats")
	}
}
