package plugins_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

// seen records what an observer is handed: (sequence, index, fact id).
type seen struct {
	mu  sync.Mutex
	got []string
}

func (s *seen) plugin() plugins.Plugin {
	return plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.got = append(s.got, fmt.Sprintf("%d/%d %s", c.Seq, c.Index, c.Event.ID))
		return nil, nil
	})
}

func (s *seen) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// want is what an observer of triggers (every one when none) must see of
// the log: every fact of them, alone or packed, in stream order.
func want(t *testing.T, b *bus.Bus, triggers ...string) []string {
	t.Helper()
	var out []string
	for _, s := range bustest.Events(t, b) {
		if s.Err == nil && s.Event.Trigger != "" && (len(triggers) == 0 || slices.Contains(triggers, s.Event.Trigger)) {
			out = append(out, fmt.Sprintf("%d/%d %s", s.Seq, s.Index, s.Event.ID))
		}
	}
	return out
}

// publishMixed writes the facts of tasks as design (f) stores them: a
// lifecycle fact and the facts of alone (triggers an observer not reading
// batches is named for) alone, the others packed by phase.
func publishMixed(t *testing.T, b *bus.Bus, prefix string, tasks int, alone ...string) {
	t.Helper()
	for i := range tasks {
		id := fmt.Sprintf("%s-%d", prefix, i)
		var run []events.Event
		fire := func(trigger string, n int) {
			ev := bustest.Fact(id, trigger, n, fmt.Sprintf(`{"n":%d}`, n))
			if tr, _ := events.Lookup(trigger); tr.Lifecycle || slices.Contains(alone, trigger) {
				if len(run) > 0 {
					bustest.PublishPhase(t, b, events.PhaseIntake, "default", run...)
					run = nil
				}
				bustest.PublishFact(t, b, "default", ev)
				return
			}
			run = append(run, ev)
		}
		fire(events.StorageAdd, 0)
		fire(events.StorageGet, 0)
		fire(events.BrokerGet, 0)
		fire(events.StorageGet, 1)
		fire(events.WorkerAdd, 0)
		fire(events.StorageUpdate, 0)
		fire(events.StorageGet, 2)
		if len(run) > 0 {
			bustest.PublishPhase(t, b, events.PhaseFinish, "default", run...)
		}
	}
}

func startObserver(t *testing.T, b *bus.Bus, spec plugins.Spec) *plugins.Runner {
	t.Helper()
	spec.Version, spec.Mode = "1", plugins.Observer
	r, err := plugins.Start(context.Background(), b, spec)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	return r
}

func waitSeen(t *testing.T, s *seen, want []string) {
	t.Helper()
	bustest.WaitFor(t, time.Minute, fmt.Sprintf("%d facts", len(want)), func() bool { return len(s.list()) >= len(want) })
	require.Equal(t, want, s.list())
}

// Observers of one trigger see exactly that trigger's facts, in stream
// order, each once, on a log of facts alone and packed in phase messages:
// from the start of the log (they read the phase messages) and from now
// (the facts of their triggers then travel alone). A global observer sees
// every fact.
func TestObserversOnPackedLog(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	publishMixed(t, b, "old", 3)
	wantGets := want(t, b, events.StorageGet)
	require.Len(t, wantGets, 9)

	var named, global, fromNow seen
	rn := startObserver(t, b, plugins.Spec{Name: "gets", Triggers: []string{events.StorageGet}, Plugin: named.plugin()})
	require.True(t, rn.Info().ReadsBatches, "an observer from the start reads phase messages")
	rg := startObserver(t, b, plugins.Spec{Name: "all", Plugin: global.plugin()})
	require.True(t, rg.Info().ReadsBatches, "a global observer reads phase messages")
	rf := startObserver(t, b, plugins.Spec{Name: "now", Triggers: []string{events.BrokerGet}, DeliverNew: true, Plugin: fromNow.plugin()})
	require.False(t, rf.Info().ReadsBatches, "an observer from now needs not")
	require.NoError(t, b.Registry().WaitFor(context.Background(), "now", "1"))
	require.True(t, b.Registry().Alone(events.BrokerGet), "its trigger's facts travel alone")
	require.False(t, b.Registry().Alone(events.StorageGet))
	waitSeen(t, &named, wantGets)

	// New facts: broker_get alone now, as the executor writes it.
	publishMixed(t, b, "new", 2, events.BrokerGet)
	waitSeen(t, &named, want(t, b, events.StorageGet))
	waitSeen(t, &global, want(t, b))
	newGets := want(t, b, events.BrokerGet)[3:]
	require.Len(t, newGets, 2)
	waitSeen(t, &fromNow, newGets)
}

// An observer whose grant names its triggers may not read phase messages:
// starting from the beginning of the log, the runner registers it without
// reads_batches when the registrar refuses it, and it reads its triggers'
// facts alone (the writer keeps a trigger some grant names alone).
func TestRestrictedObserverRegistersWithoutBatches(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info := events.PluginInfo{Name: "olga", Mode: events.ModeObserver, Triggers: []string{events.StorageGet}}
	perms := bus.PluginPermissions(info)
	b := bustest.Open(t, &bus.Config{
		User: "admin", Password: "admin-pw",
		Users: []bus.User{
			{Name: "admin", Password: "admin-pw"},
			{Name: "olga", Password: "olga-pw", Permissions: &perms, Grant: &events.PluginGrant{Mode: info.Mode, Triggers: info.Triggers}},
		},
	})
	publishMixed(t, b, "t", 2, events.StorageGet)
	pb, err := bus.Open(ctx, bus.Config{URL: b.ClientURL(), User: "olga", Password: "olga-pw", Plugin: "olga", Logger: bustest.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(pb.Close)
	var s seen
	r := startObserver(t, pb, plugins.Spec{Name: "olga", Triggers: info.Triggers, Plugin: s.plugin()})
	require.False(t, r.Info().ReadsBatches)
	waitSeen(t, &s, want(t, b, events.StorageGet))
}

// A packed fact the plugin fails on, after its retries, is named in the
// dead letter of its phase message; the other facts of the message are
// handled, in order, and the message is not delivered again.
func TestObserverDeadLettersOnePackedFact(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	bad := bustest.Fact("a", events.BrokerGet, 0, `2`)
	seq := bustest.PublishPhase(t, b, events.PhaseIntake, "default",
		bustest.Fact("a", events.StorageGet, 0, `1`), bad, bustest.Fact("a", events.StorageGet, 1, `3`))
	var s seen
	startObserver(t, b, plugins.Spec{Name: "picky", MaxDeliver: 2, Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
		if c.Event.ID == bad.ID {
			return nil, fmt.Errorf("cannot take %s", c.Event.ID)
		}
		return s.plugin().Trigger(ctx, c)
	})})
	var dl []bus.Stored
	bustest.WaitFor(t, time.Minute, "the dead letter", func() bool {
		dl = bustest.Events(t, b, events.DeadSubject("picky"))
		return len(dl) == 1
	})
	var d events.DeadLetter
	require.NoError(t, json.Unmarshal(dl[0].Event.Data, &d))
	require.Equal(t, seq, d.Sequence)
	require.Equal(t, events.PhaseSubject(events.PhaseIntake, "default"), d.Subject)
	require.Contains(t, d.Reason, "fact 1 ("+bad.ID+") of the phase message: cannot take")
	require.Equal(t, []string{fmt.Sprintf("%d/0 a:1:1:storage_get:0", seq), fmt.Sprintf("%d/2 a:1:1:storage_get:1", seq)}, s.list())
	bustest.WaitFor(t, time.Minute, "the message to be settled", func() bool {
		c, err := b.JetStream().Consumer(context.Background(), bus.StreamEvents, plugins.DurableName("picky"))
		if err != nil {
			return false
		}
		ci, err := c.Info(context.Background())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	})
	require.Len(t, s.list(), 2, "the other facts handled once")
}
