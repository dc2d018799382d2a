package bus_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

func names(ps []events.PluginInfo) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// register registers p and waits until the registry shows it.
func register(ctx context.Context, t *testing.T, r *bus.Registry, p events.PluginInfo) events.PluginInfo {
	t.Helper()
	got, err := r.Register(ctx, p)
	require.NoError(t, err)
	require.NoError(t, r.WaitFor(ctx, p.Name, p.Version))
	return got
}

func waitGone(t *testing.T, r *bus.Registry, name string) {
	t.Helper()
	bustest.WaitFor(t, wait, name+" to leave the registry", func() bool {
		_, ok := r.Get(name)
		return !ok
	})
}

func TestRegisterValidates(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	r := b.Registry()

	ok := events.PluginInfo{Name: "good", Version: "1", Mode: events.ModeMutator, Triggers: []string{invTrigger}}
	cases := map[string]func(p *events.PluginInfo){
		"empty name":         func(p *events.PluginInfo) { p.Name = "" },
		"dotted name":        func(p *events.PluginInfo) { p.Name = "a.b" },
		"wildcard name":      func(p *events.PluginInfo) { p.Name = "a*" },
		"spaced name":        func(p *events.PluginInfo) { p.Name = "a b" },
		"no mode":            func(p *events.PluginInfo) { p.Mode = "" },
		"bad mode":           func(p *events.PluginInfo) { p.Mode = "admin" },
		"unknown trigger":    func(p *events.PluginInfo) { p.Triggers = []string{invTrigger, "no_such_trigger"} },
		"never-fired":        func(p *events.PluginInfo) { p.Triggers = []string{events.QTasksPing} },
		"shadow of nothing":  func(p *events.PluginInfo) { p.Mode = events.ModeShadow },
		"bad failure policy": func(p *events.PluginInfo) { p.Policy = "retry" },
		"one-way trigger":    func(p *events.PluginInfo) { p.Triggers = []string{events.WorkerStart} },
		"above the cap":      func(p *events.PluginInfo) { p.TimeoutMS = bus.DefaultMaxPluginTimeout.Milliseconds() + 1 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			p := ok
			mutate(&p)
			_, err := r.Register(ctx, p)
			require.Error(t, err)
			if events.ValidName(p.Name) {
				// Refused by the registrar, which says why.
				require.ErrorIs(t, err, bus.ErrRegistrationRefused)
			}
		})
	}
	// None of them was stored.
	for _, k := range []string{"", "a.b", "a*", "a b"} {
		_, found := r.Get(k)
		require.False(t, found)
	}

	got, err := r.Register(ctx, ok)
	require.NoError(t, err)
	require.Equal(t, events.PolicyFail, got.Policy, "policy defaults to fail")
	require.NotZero(t, got.Order)
	require.False(t, got.RegisteredAt.IsZero())
	require.NoError(t, r.WaitFor(ctx, "good", "1"))
	stored, found := r.Get("good")
	require.True(t, found)
	require.Equal(t, got.Order, stored.Order)
	require.Equal(t, events.PolicyFail, stored.Policy)
	// Only the valid registration is listed.
	require.Equal(t, []events.PluginInfo{stored}, r.List())

	// Good variants.
	for _, p := range []events.PluginInfo{
		{Name: "ign", Version: "1", Mode: events.ModeObserver, Policy: events.PolicyIgnore},
		{Name: "shadowy", Version: "1", Mode: events.ModeShadow, ShadowOf: "good"},
		{Name: "proc", Version: "1", Mode: events.ModeObserver, Triggers: []string{events.WorkerStart}},
	} {
		_, err := r.Register(ctx, p)
		require.NoError(t, err, p.Name)
	}
}

func TestChainOrder(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	r := b.Registry()
	named := []string{invTrigger}

	g1 := register(ctx, t, r, events.PluginInfo{Name: "G1", Version: "1", Mode: events.ModeMutator})
	n1 := register(ctx, t, r, events.PluginInfo{Name: "N1", Version: "1", Mode: events.ModeMutator, Triggers: named})
	// Neither observers nor shadows are in a chain.
	register(ctx, t, r, events.PluginInfo{Name: "O1", Version: "1", Mode: events.ModeObserver})
	register(ctx, t, r, events.PluginInfo{Name: "S1", Version: "1", Mode: events.ModeShadow, ShadowOf: "N1", Triggers: named})
	g2 := register(ctx, t, r, events.PluginInfo{Name: "G2", Version: "1", Mode: events.ModeMutator})
	n2 := register(ctx, t, r, events.PluginInfo{Name: "N2", Version: "1", Mode: events.ModeMutator, Triggers: named})
	// A mutator named for another trigger only.
	register(ctx, t, r, events.PluginInfo{
		Name: "X1", Version: "1", Mode: events.ModeMutator,
		Triggers: []string{events.WorkerAdd},
	})

	require.Less(t, g1.Order, n1.Order)
	require.Less(t, n1.Order, g2.Order)
	require.Less(t, g2.Order, n2.Order)

	require.Equal(t, []string{"N1", "N2", "G1", "G2"}, names(r.Chain(invTrigger)))
	require.Equal(t, []string{"X1", "G1", "G2"}, names(r.Chain(events.WorkerAdd)))
	require.Equal(t, []string{"G1", "G2"}, names(r.Chain(events.BrokerGet)))
	require.Equal(t, []string{"G1", "N1", "O1", "S1", "G2", "N2", "X1"}, names(r.List()))

	// A new version of N1 keeps N1's place.
	n1v2 := register(ctx, t, r, events.PluginInfo{Name: "N1", Version: "2", Mode: events.ModeMutator, Triggers: named})
	require.Equal(t, n1.Order, n1v2.Order)
	chain := r.Chain(invTrigger)
	require.Equal(t, []string{"N1", "N2", "G1", "G2"}, names(chain))
	require.Equal(t, "2", chain[0].Version)

	// So does a global plugin that becomes named: it moves to the named part,
	// still by its original order.
	register(ctx, t, r, events.PluginInfo{Name: "G1", Version: "2", Mode: events.ModeMutator, Triggers: named})
	require.Equal(t, []string{"G1", "N1", "N2", "G2"}, names(r.Chain(invTrigger)))
	require.Equal(t, []string{"X1", "G2"}, names(r.Chain(events.WorkerAdd)))

	// Deregistering removes it from every chain.
	require.NoError(t, r.Deregister(ctx, "N2"))
	waitGone(t, r, "N2")
	require.Equal(t, []string{"G1", "N1", "G2"}, names(r.Chain(invTrigger)))

	// Registering again after a deregistration puts it last.
	n2again := register(ctx, t, r, events.PluginInfo{Name: "N2", Version: "1", Mode: events.ModeMutator, Triggers: named})
	require.Greater(t, n2again.Order, n2.Order)
	require.Equal(t, []string{"G1", "N1", "N2", "G2"}, names(r.Chain(invTrigger)))

	// A mutator turned observer leaves the chain.
	register(ctx, t, r, events.PluginInfo{Name: "G2", Version: "2", Mode: events.ModeObserver})
	require.Equal(t, []string{"G1", "N1", "N2"}, names(r.Chain(invTrigger)))
}

func TestRegistrySeenByAnotherConnection(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	named := []string{invTrigger}

	// Registered before the second connection opens: loaded at Open.
	register(ctx, t, b.Registry(), events.PluginInfo{Name: "early", Version: "1", Mode: events.ModeMutator})
	other := bustest.Connect(t, b, nil)
	p, ok := other.Registry().Get("early")
	require.True(t, ok, "registrations are loaded before Open returns")
	require.Equal(t, "1", p.Version)

	// Registered afterwards: seen through the watch.
	reg := register(ctx, t, b.Registry(), events.PluginInfo{Name: "late", Version: "1", Mode: events.ModeMutator, Triggers: named})
	require.NoError(t, other.Registry().WaitFor(ctx, "late", "1"))
	got, ok := other.Registry().Get("late")
	require.True(t, ok)
	require.Equal(t, reg.Order, got.Order)
	require.Equal(t, []string{"late", "early"}, names(other.Registry().Chain(invTrigger)))

	// A registration from the other side, and an upgrade.
	register(ctx, t, other.Registry(), events.PluginInfo{Name: "remote", Version: "1", Mode: events.ModeObserver})
	require.NoError(t, b.Registry().WaitFor(ctx, "remote", "1"))
	register(ctx, t, other.Registry(), events.PluginInfo{Name: "late", Version: "2", Mode: events.ModeMutator, Triggers: named})
	require.NoError(t, b.Registry().WaitFor(ctx, "late", "2"))
	got, _ = b.Registry().Get("late")
	require.Equal(t, reg.Order, got.Order)

	// Deregistration travels too.
	require.NoError(t, b.Registry().Deregister(ctx, "early"))
	waitGone(t, other.Registry(), "early")
	require.Equal(t, []string{"late"}, names(other.Registry().Chain(invTrigger)))

	// Both sides agree.
	bustest.WaitFor(t, wait, "both registries to agree", func() bool {
		return len(b.Registry().List()) == len(other.Registry().List())
	})
	require.Equal(t, b.Registry().List(), other.Registry().List())

	// WaitFor gives up with the context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, other.Registry().WaitFor(cctx, "never", ""), context.Canceled)
}

func TestSubscribed(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	r := b.Registry()

	require.False(t, r.Subscribed(events.WorkerAdd))
	register(ctx, t, r, events.PluginInfo{
		Name: "obs", Version: "1", Mode: events.ModeObserver,
		Triggers: []string{events.WorkerAdd},
	})
	require.True(t, r.Subscribed(events.WorkerAdd))
	require.False(t, r.Subscribed(events.BrokerGet))

	register(ctx, t, r, events.PluginInfo{
		Name: "sh", Version: "1", Mode: events.ModeShadow, ShadowOf: "m",
		Triggers: []string{events.BrokerGet},
	})
	require.True(t, r.Subscribed(events.BrokerGet))
	require.False(t, r.Subscribed(events.StorageGet))

	register(ctx, t, r, events.PluginInfo{
		Name: "mut", Version: "1", Mode: events.ModeMutator,
		Triggers: []string{events.StorageGet},
	})
	require.True(t, r.Subscribed(events.StorageGet))
	require.False(t, r.Subscribed(events.WorkerStart))

	register(ctx, t, r, events.PluginInfo{Name: "all", Version: "1", Mode: events.ModeObserver})
	for _, tr := range events.Catalog() {
		require.True(t, r.Subscribed(tr.Name), tr.Name)
	}
	require.NoError(t, r.Deregister(ctx, "all"))
	waitGone(t, r, "all")
	require.False(t, r.Subscribed(events.WorkerStart))

	require.NoError(t, r.Deregister(ctx, "obs"))
	waitGone(t, r, "obs")
	require.False(t, r.Subscribed(events.WorkerAdd))
}

func TestShadows(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	r := b.Registry()
	named := []string{invTrigger}

	register(ctx, t, r, events.PluginInfo{Name: "live", Version: "1", Mode: events.ModeMutator, Triggers: named})
	register(ctx, t, r, events.PluginInfo{Name: "cand-global", Version: "2", Mode: events.ModeShadow, ShadowOf: "live"})
	register(ctx, t, r, events.PluginInfo{Name: "cand-named", Version: "2", Mode: events.ModeShadow, ShadowOf: "live", Triggers: named})
	register(ctx, t, r, events.PluginInfo{
		Name: "cand-other", Version: "2", Mode: events.ModeShadow, ShadowOf: "live",
		Triggers: []string{events.WorkerAdd},
	})
	register(ctx, t, r, events.PluginInfo{Name: "elsewhere", Version: "2", Mode: events.ModeShadow, ShadowOf: "someone"})
	// Not a shadow, though it names live.
	register(ctx, t, r, events.PluginInfo{Name: "mut", Version: "1", Mode: events.ModeMutator, ShadowOf: "live"})

	// In registration order, so that the calls of a fact come out the same
	// every time.
	require.Equal(t, []string{"cand-global", "cand-named"}, names(r.Shadows("live", invTrigger)))
	require.Equal(t, []string{"cand-global", "cand-other"}, names(r.Shadows("live", events.WorkerAdd)))
	require.Equal(t, []string{"elsewhere"}, names(r.Shadows("someone", invTrigger)))
	require.Empty(t, r.Shadows("nobody", invTrigger))
	require.Equal(t, []string{"live", "mut"}, names(r.Chain(invTrigger)))

	require.NoError(t, r.Deregister(ctx, "cand-global"))
	waitGone(t, r, "cand-global")
	require.Equal(t, []string{"cand-named"}, names(r.Shadows("live", invTrigger)))
}

// Registrations racing from two connections: every plugin gets a distinct
// order, and both registries end up with the same list.
func TestRegistryConcurrentRegistrations(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	other := bustest.Connect(t, b, nil)
	regs := []*bus.Registry{b.Registry(), other.Registry()}

	const n = 20
	errs := make(chan error, 2*n)
	for i := range n {
		for j, r := range regs {
			go func() {
				// Both connections register every plugin: half the calls
				// are re-registrations racing with the first.
				_, err := r.Register(ctx, events.PluginInfo{
					Name: "p" + string(rune('a'+i)), Version: "v" + string(rune('0'+j)), Mode: events.ModeMutator, //nolint:gosec // G115: i < n = 20, j < 2
				})
				errs <- err
			}()
		}
	}
	for range 2 * n {
		select {
		case err := <-errs:
			require.NoError(t, err)
		case <-time.After(wait):
			t.Fatal("registrations did not finish")
		}
	}

	// Both sides converge on the bucket's content.
	kv, err := b.JetStream().KeyValue(ctx, bus.BucketPlugins)
	require.NoError(t, err)
	var want []events.PluginInfo
	for i := range n {
		e, err := kv.Get(ctx, "p"+string(rune('a'+i)))
		require.NoError(t, err)
		var p events.PluginInfo
		require.NoError(t, json.Unmarshal(e.Value(), &p))
		want = append(want, p)
	}
	slices.SortFunc(want, func(a, b events.PluginInfo) int { return cmp.Compare(a.Order, b.Order) })
	for _, r := range regs {
		bustest.WaitFor(t, wait, "registry to converge", func() bool {
			return reflect.DeepEqual(names(want), names(r.List())) && sameVersions(want, r.List())
		})
	}
	orders := map[uint64]bool{}
	for _, p := range want {
		require.NotZero(t, p.Order)
		require.False(t, orders[p.Order], "order %d given twice", p.Order)
		orders[p.Order] = true
	}
	require.Equal(t, names(want), names(b.Registry().Chain(invTrigger)))
	require.Equal(t, names(want), names(other.Registry().Chain(invTrigger)))
}

func sameVersions(a, b []events.PluginInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Version != b[i].Version || a[i].Order != b[i].Order {
			return false
		}
	}
	return true
}

// The registrar creates a plugin's consumer with the filters of its
// registration, before it stores the entry, and deletes it on
// deregistration.
func TestRegistrarConsumers(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	r := b.Registry()
	consumer := func(name string) *jetstream.ConsumerConfig {
		t.Helper()
		c, err := b.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName(name))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil
		}
		require.NoError(t, err)
		return &c.CachedInfo().Config
	}
	filters := func(c *jetstream.ConsumerConfig) []string {
		if c.FilterSubject != "" {
			return []string{c.FilterSubject}
		}
		return c.FilterSubjects
	}

	register(ctx, t, r, events.PluginInfo{Name: "mut", Version: "1", Mode: events.ModeMutator, Triggers: []string{invTrigger}, TimeoutMS: 4000})
	c := consumer("mut")
	require.NotNil(t, c)
	require.Equal(t, []string{events.SubjectInvoke + ".mut.>"}, filters(c))
	require.Equal(t, jetstream.DeliverNewPolicy, c.DeliverPolicy)
	require.Equal(t, 8*time.Second, c.AckWait, "2 × the timeout")

	_, err := r.RegisterWith(ctx, bus.Registration{
		PluginInfo: events.PluginInfo{Name: "obs", Version: "1", Mode: events.ModeObserver, Triggers: []string{events.WorkerStart, events.WorkerStop}},
		Consumer:   &bus.ConsumerSettings{AckWaitMS: 1500, MaxDeliver: 3, MaxAckPending: 7},
	})
	require.NoError(t, err)
	c = consumer("obs")
	require.ElementsMatch(t, []string{events.SubjectTrigger + "." + events.WorkerStart + ".>", events.SubjectTrigger + "." + events.WorkerStop + ".>"}, filters(c))
	require.Equal(t, jetstream.DeliverAllPolicy, c.DeliverPolicy)
	require.Equal(t, 1500*time.Millisecond, c.AckWait)
	require.Equal(t, 3, c.MaxDeliver)
	require.Equal(t, 7, c.MaxAckPending)

	// Registering again with other triggers moves the filters.
	register(ctx, t, r, events.PluginInfo{Name: "obs", Version: "2", Mode: events.ModeObserver})
	require.Equal(t, []string{events.SubjectTrigger + ".>"}, filters(consumer("obs")))

	// Settings out of bounds are refused; a local plugin gets no consumer.
	_, err = r.RegisterWith(ctx, bus.Registration{
		PluginInfo: events.PluginInfo{Name: "greedy", Version: "1", Mode: events.ModeObserver},
		Consumer:   &bus.ConsumerSettings{MaxAckPending: 1_000_000},
	})
	require.ErrorIs(t, err, bus.ErrRegistrationRefused)
	require.ErrorContains(t, err, "max_ack_pending")
	require.Nil(t, consumer("greedy"))
	register(ctx, t, r, events.PluginInfo{Name: "inproc", Version: "1", Mode: events.ModeMutator, Local: true})
	require.Nil(t, consumer("inproc"))

	// Deregistration removes the entry, then the consumer.
	require.NoError(t, r.Deregister(ctx, "mut"))
	_, ok := r.Get("mut")
	require.False(t, ok, "gone once Deregister returns")
	require.Nil(t, consumer("mut"))
	require.NoError(t, r.Deregister(ctx, "never-registered"))
}

// An executor that logs in to a secured server does not answer
// registrations (it knows no grants); without any registrar, a
// registration fails at once, saying so.
func TestRegistrarOnlyWhereGrantsAreKnown(t *testing.T) {
	ctx := testCtx(t)
	b := bustest.Open(t, &bus.Config{User: "admin", Password: "pw", Users: []bus.User{{Name: "admin", Password: "pw"}}, Registrar: bus.RegistrarOff})
	other := bustest.Connect(t, b, &bus.Config{User: "admin", Password: "pw"})
	_, err := other.Registry().Register(ctx, events.PluginInfo{Name: "p", Version: "1", Mode: events.ModeObserver})
	require.ErrorIs(t, err, bus.ErrNoRegistrar)
	on := bustest.Connect(t, b, &bus.Config{User: "admin", Password: "pw", Registrar: bus.RegistrarOn})
	_, err = other.Registry().Register(ctx, events.PluginInfo{Name: "p", Version: "1", Mode: events.ModeObserver})
	require.NoError(t, err)
	require.NoError(t, on.Registry().WaitFor(ctx, "p", "1"))
}

// The registrar accepts protocol 3, and protocol 2 for a plugin that reads
// no phase message (version 3 changes nothing else for it); it refuses
// version 2 with reads_batches, since a phase message may now hold several
// tasks' facts, and versions it does not know, each with a reason that
// says what to change (events.CheckProtocol).
func TestRegistrarProtocolVersions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b := bustest.Open(t, nil)
	r := b.Registry()
	for _, c := range []struct {
		name    string
		info    events.PluginInfo
		refused string
	}{
		{"v3-mutator", events.PluginInfo{Protocol: 3, Mode: events.ModeMutator, Triggers: []string{events.StorageAdd}}, ""},
		{"v3-batches", events.PluginInfo{Protocol: 3, Mode: events.ModeObserver, ReadsBatches: true}, ""},
		{"v2-mutator", events.PluginInfo{Protocol: 2, Mode: events.ModeMutator, Triggers: []string{events.StorageAdd}}, ""},
		{"v2-observer", events.PluginInfo{Protocol: 2, Mode: events.ModeObserver, Triggers: []string{events.StorageGet}}, ""},
		{"v2-batches", events.PluginInfo{Protocol: 2, Mode: events.ModeObserver, ReadsBatches: true}, `several tasks; read each element by its own "taskid"`},
		{"v4", events.PluginInfo{Protocol: 4, Mode: events.ModeObserver}, "protocol version 4; this registrar speaks version 3"},
		{"v1", events.PluginInfo{Protocol: -1, Mode: events.ModeObserver}, "protocol version -1"},
	} {
		c.info.Name, c.info.Version = c.name, "1"
		got, err := r.Register(ctx, c.info)
		if c.refused == "" {
			require.NoError(t, err, c.name)
			require.Equal(t, c.info.Protocol, got.Protocol, c.name)
			continue
		}
		require.ErrorIs(t, err, bus.ErrRegistrationRefused, c.name)
		require.ErrorContains(t, err, c.refused, c.name)
		_, ok := r.Get(c.name)
		require.False(t, ok, "%s: refused, not registered", c.name)
	}
}
