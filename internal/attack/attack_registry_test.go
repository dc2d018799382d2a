package attack_test

// Attacks on the plugin registry and on plugins' rights (issue #11 items
// 2-4): each test runs a real embedded server with users, plugin users
// holding exactly bus.PluginPermissions and a grant, and checks that the
// attack fails, is visible (an error with a reason, a permission
// violation, a metric), and touches nothing else.

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// regGrants are the plugin users of the registry attacks.
var regGrants = map[string]events.PluginGrant{
	"alice": {Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorArgsReplace}, MaxTimeoutMS: 10_000},
	"bob":   {Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}},
	// Two triggers: version 1 gave such an observer a consumer-create
	// right with any filter.
	"olga":  {Mode: events.ModeObserver, Triggers: []string{events.WorkerStart, events.WorkerStop}},
	"shade": {Mode: events.ModeShadow, Triggers: []string{events.TaskExecutorArgsReplace}, ShadowOf: "alice"},
	// A global observer: allowed every trigger, so it may read phase
	// messages (reads_batches).
	"gus": {Mode: events.ModeObserver},
}

// regMaxTimeout is the registrar's global cap in these tests.
const regMaxTimeout = 30 * time.Second

type regEnv struct {
	t     *testing.T
	ctx   context.Context
	admin *bus.Bus // qtasksd's: the registrar, with the grants
	dir   string
	users []bus.User
}

func regUsers() []bus.User {
	users := []bus.User{{Name: "admin", Password: "admin-pw"}}
	for name, g := range regGrants {
		perms := bus.PluginPermissions(events.PluginInfo{Name: name, Mode: g.Mode, Triggers: g.Triggers})
		users = append(users, bus.User{Name: name, Password: name + "-pw", Permissions: &perms, Grant: &g})
	}
	return users
}

func regSetup(t *testing.T) *regEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	e := &regEnv{t: t, ctx: ctx, dir: t.TempDir(), users: regUsers()}
	e.admin = bustest.Open(t, &bus.Config{
		DataDir: e.dir, User: "admin", Password: "admin-pw", Users: e.users, MaxPluginTimeout: regMaxTimeout,
	})
	return e
}

// plugin opens name's bus as the plugin would: its own user, least rights.
func (e *regEnv) plugin(name string) *bus.Bus {
	e.t.Helper()
	b, err := bus.Open(e.ctx, bus.Config{
		URL: e.admin.ClientURL(), User: name, Password: name + "-pw", Plugin: name,
		Logger: bustest.Logger(e.t),
	})
	require.NoError(e.t, err)
	e.t.Cleanup(b.Close)
	return b
}

// regRaw is a raw connection of plugin name that records the server's
// permission violations.
type regRaw struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	violations chan error
}

func (e *regEnv) raw(name string) *regRaw {
	e.t.Helper()
	r := &regRaw{violations: make(chan error, 64)}
	nc, err := nats.Connect(e.admin.ClientURL(), nats.UserInfo(name, name+"-pw"),
		nats.CustomInboxPrefix(bus.PluginInboxPrefix(name)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { r.violations <- err }))
	require.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	r.nc = nc
	r.js, err = jetstream.New(nc)
	require.NoError(e.t, err)
	return r
}

// denied waits for the server's permission violation of what.
func (r *regRaw) denied(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-r.violations:
		require.ErrorIs(t, err, nats.ErrPermissionViolation, what)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no permission violation", what)
	}
}

func (e *regEnv) info(name string) events.PluginInfo {
	g := regGrants[name]
	return events.PluginInfo{Name: name, Version: "1", Mode: g.Mode, Triggers: g.Triggers, ShadowOf: g.ShadowOf, TimeoutMS: 2000}
}

// regIgnored is qtasks_registry_entries_ignored_total{reason} of b.
func regIgnored(t *testing.T, b *bus.Bus, reason string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(b.Registry().Metrics()))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// "Nats-Rollup: all" on a plugin's own state key would delete every other
// plugin's state; on a registry key, every registration. Both buckets
// refuse rollups, and a bucket provisioned with rollups allowed (by an
// older version) is mended at start-up.
func TestAttackRollupRefused(t *testing.T) {
	t.Parallel()
	e := regSetup(t)
	ctx := e.ctx
	_, err := e.plugin("bob").Registry().Register(ctx, e.info("bob"))
	require.NoError(t, err)
	_, err = e.admin.PluginState("bob").Put(ctx, "k", []byte("bob's"))
	require.NoError(t, err)

	alice := e.raw("alice")
	msg := nats.NewMsg("$KV." + bus.BucketPluginState + ".alice.k")
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	msg.Data = []byte("wipe")
	_, err = alice.js.PublishMsg(ctx, msg)
	require.ErrorContains(t, err, "rollup", "a rollup on its own state key")

	v, _, err := e.admin.PluginState("bob").Get(ctx, "k")
	require.NoError(t, err, "bob's state survives")
	require.Equal(t, "bob's", string(v))

	// The registry: a plugin may not write it at all; even an operator's
	// rollup is refused.
	msg = nats.NewMsg("$KV." + bus.BucketPlugins + ".alice")
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	msg.Data = []byte("{}")
	c, cancel := context.WithTimeout(ctx, time.Second)
	_, err = alice.js.PublishMsg(c, msg)
	cancel()
	require.Error(t, err)
	alice.denied(t, "registry write")
	_, err = e.admin.JetStream().PublishMsg(ctx, msg)
	require.ErrorContains(t, err, "rollup")
	_, ok := e.admin.Registry().Get("bob")
	require.True(t, ok, "bob's registration survives")

	// A bucket that allows rollups (as nats.go and version 1 made them) is
	// mended when qtasksd starts again.
	for _, bucket := range []string{bus.BucketPlugins, bus.BucketPluginState} {
		s, err := e.admin.JetStream().Stream(ctx, "KV_"+bucket)
		require.NoError(t, err)
		cfg := s.CachedInfo().Config
		require.False(t, cfg.AllowRollup, bucket)
		cfg.AllowRollup = true
		_, err = e.admin.JetStream().UpdateStream(ctx, cfg)
		require.NoError(t, err)
	}
	e.admin.Close()
	again := bustest.Open(t, &bus.Config{DataDir: e.dir, User: "admin", Password: "admin-pw", Users: e.users})
	for _, bucket := range []string{bus.BucketPlugins, bus.BucketPluginState} {
		s, err := again.JetStream().Stream(ctx, "KV_"+bucket)
		require.NoError(t, err)
		require.False(t, s.CachedInfo().Config.AllowRollup, bucket)
	}
}

// A plugin registers under its own name only: the subject of another
// name is denied to it, and a body naming another plugin is refused.
func TestAttackRegisterAsAnother(t *testing.T) {
	t.Parallel()
	e := regSetup(t)
	ctx := e.ctx
	bob, err := e.plugin("bob").Registry().Register(ctx, e.info("bob"))
	require.NoError(t, err)

	alice := e.raw("alice")
	forged := e.info("bob")
	forged.Triggers = []string{events.TaskExecutorArgsReplace}
	forged.Protocol = events.ProtocolVersion
	body, err := json.Marshal(forged)
	require.NoError(t, err)

	// On bob's subject: the server refuses the publish.
	c, cancel := context.WithTimeout(ctx, time.Second)
	_, err = alice.nc.RequestWithContext(c, events.RegisterSubject("bob"), body)
	cancel()
	require.Error(t, err)
	alice.denied(t, "register as bob")
	c, cancel = context.WithTimeout(ctx, time.Second)
	_, err = alice.nc.RequestWithContext(c, events.DeregisterSubject("bob"), nil)
	cancel()
	require.Error(t, err)
	alice.denied(t, "deregister bob")

	// On her own subject, naming bob: refused, with the reason.
	m, err := alice.nc.RequestWithContext(ctx, events.RegisterSubject("alice"), body)
	require.NoError(t, err)
	var rep bus.RegistrationReply
	require.NoError(t, json.Unmarshal(m.Data, &rep))
	require.Contains(t, rep.Error, "under its own name only")
	require.Nil(t, rep.Plugin)

	// Through the SDK the same is an error wrapping ErrRegistrationRefused.
	_, err = e.plugin("alice").Registry().Register(ctx, forged)
	require.ErrorIs(t, err, bus.ErrRegistrationRefused)
	require.ErrorContains(t, err, "under its own name only")

	// Nothing changed: bob is as he registered, alice is absent.
	got, ok := e.admin.Registry().Get("bob")
	require.True(t, ok)
	require.Equal(t, bob.Triggers, got.Triggers)
	require.Equal(t, bob.Order, got.Order)
	_, ok = e.admin.Registry().Get("alice")
	require.False(t, ok)
}

// Mode, triggers, shadow_of and timeout outside the users file's grant,
// and a version 1 registration, are refused with a reason the plugin sees;
// nothing is stored and no consumer is created.
//
//nolint:tparallel // the subtests run in order: the checks after them read what they left
func TestAttackRegistrationOutsideGrant(t *testing.T) {
	t.Parallel()
	e := regSetup(t)
	ctx := e.ctx
	pb := map[string]*bus.Bus{}
	for _, n := range []string{"alice", "bob", "shade", "olga"} {
		pb[n] = e.plugin(n)
	}
	for _, tc := range []struct {
		name   string
		plugin string
		mutate func(p *events.PluginInfo)
		reason string
	}{
		{"trigger not granted", "alice", func(p *events.PluginInfo) { p.Triggers = []string{events.TaskExecutorRunTask} }, "trigger task_executor_run_task is not granted"},
		{"global not granted", "alice", func(p *events.PluginInfo) { p.Triggers = nil }, "global registration is not granted"},
		{"mode not granted", "alice", func(p *events.PluginInfo) { p.Mode = events.ModeObserver }, `mode "observer" is not granted`},
		{"observer as mutator", "olga", func(p *events.PluginInfo) { p.Mode = events.ModeMutator; p.Triggers = nil }, `mode "mutator" is not granted`},
		{"shadow of another", "shade", func(p *events.PluginInfo) { p.ShadowOf = "bob" }, `shadow_of "bob" is not granted`},
		{"local", "bob", func(p *events.PluginInfo) { p.Local = true }, "cannot be local"},
		{"above the grant's cap", "alice", func(p *events.PluginInfo) { p.TimeoutMS = 10_001 }, "timeout_ms 10001 is above the operator's cap of 10000"},
		{"above the global cap", "bob", func(p *events.PluginInfo) { p.TimeoutMS = 3_600_000 }, "timeout_ms 3600000 is above the operator's cap of 30000"},
		{"one-way trigger", "alice", func(p *events.PluginInfo) { p.Triggers = []string{events.WorkerStart} }, "one-way"},
		{"unknown trigger", "olga", func(p *events.PluginInfo) { p.Triggers = []string{"no_such_trigger"} }, "unknown trigger"},
		{"bad mode", "bob", func(p *events.PluginInfo) { p.Mode = "admin" }, `mode "admin"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.info(tc.plugin)
			tc.mutate(&p)
			_, err := pb[tc.plugin].Registry().Register(ctx, p)
			require.ErrorIs(t, err, bus.ErrRegistrationRefused)
			require.ErrorContains(t, err, tc.reason)
		})
	}
	// A version 1 registration (no "protocol") is refused, saying why.
	raw := e.raw("bob")
	body, err := json.Marshal(e.info("bob"))
	require.NoError(t, err)
	m, err := raw.nc.RequestWithContext(ctx, events.RegisterSubject("bob"), body)
	require.NoError(t, err)
	var rep bus.RegistrationReply
	require.NoError(t, json.Unmarshal(m.Data, &rep))
	require.Contains(t, rep.Error, `no "protocol" field`)

	for n := range pb {
		_, ok := e.admin.Registry().Get(n)
		require.False(t, ok, "%s was stored", n)
		_, err := e.admin.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName(n))
		require.ErrorIs(t, err, jetstream.ErrConsumerNotFound, "%s got a consumer", n)
	}

	// Within the grant, all of them register.
	for n, b := range pb {
		_, err := b.Registry().Register(ctx, e.info(n))
		require.NoError(t, err, n)
	}
}

// An observer reads the facts of its own triggers and nothing else: it
// cannot create or change a consumer (its own, or one named for another),
// and the registrar gives its consumer its triggers' filters only.
func TestAttackObserverReadsOnlyItsTriggers(t *testing.T) {
	t.Parallel()
	e := regSetup(t)
	ctx := e.ctx
	_, err := e.plugin("olga").Registry().Register(ctx, e.info("olga"))
	require.NoError(t, err)
	c, err := e.admin.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName("olga"))
	require.NoError(t, err)
	cfg := c.CachedInfo().Config
	require.ElementsMatch(t, []string{events.SubjectTrigger + "." + events.WorkerStart + ".>", events.SubjectTrigger + "." + events.WorkerStop + ".>"},
		cfg.FilterSubjects)

	olga := e.raw("olga")
	for _, cc := range []jetstream.ConsumerConfig{
		{Durable: "plugin-olga", FilterSubject: events.SubjectInvoke + ".bob.>"},
		{Durable: "plugin-olga", FilterSubjects: []string{events.SubjectPatch + ".>", events.SubjectTrigger + ".>"}},
		{Durable: "plugin-olga", FilterSubject: events.SubjectTrigger + "." + events.WorkerStart + ".>"}, // even her own
		{Durable: "plugin-bob", FilterSubject: events.SubjectInvoke + ".bob.>"},
		{Name: "sneaky", FilterSubject: events.SubjectPatch + ".>"},
	} {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := olga.js.CreateOrUpdateConsumer(cctx, bus.StreamEvents, cc)
		cancel()
		require.Error(t, err, "consumer %s%s on %s%v", cc.Durable, cc.Name, cc.FilterSubject, cc.FilterSubjects)
		olga.denied(t, "create consumer "+cc.Durable+cc.Name)
	}
	// Her consumer is as the registrar made it.
	c, err = e.admin.JetStream().Consumer(ctx, bus.StreamEvents, bus.DurableName("olga"))
	require.NoError(t, err)
	require.Equal(t, cfg.FilterSubjects, c.CachedInfo().Config.FilterSubjects)
	require.Equal(t, cfg.FilterSubject, c.CachedInfo().Config.FilterSubject)
}

// An entry that reaches the bucket around the registrar (an operator's
// hand edit, an old client with write rights) is ignored by the executor
// if it breaks the rules, with a warning and a metric by reason; the
// chains do not contain it.
func TestAttackForgedRegistryEntryIgnored(t *testing.T) {
	t.Parallel()
	e := regSetup(t)
	ctx := e.ctx
	kv, err := e.admin.JetStream().KeyValue(ctx, bus.BucketPlugins)
	require.NoError(t, err)
	_, err = e.plugin("bob").Registry().Register(ctx, e.info("bob"))
	require.NoError(t, err)
	put := func(key string, p events.PluginInfo) {
		t.Helper()
		data, err := json.Marshal(p)
		require.NoError(t, err)
		_, err = kv.Put(ctx, key, data)
		require.NoError(t, err)
	}
	mut := func(name string, triggers ...string) events.PluginInfo {
		return events.PluginInfo{Name: name, Version: "x", Mode: events.ModeMutator, Triggers: triggers, Order: 1}
	}
	args := events.TaskExecutorArgsReplace
	for _, tc := range []struct {
		key    string
		entry  events.PluginInfo
		reason string
	}{
		{"mallory", mut("bob", args), events.InvalidKey},
		{"m-unknown", mut("m-unknown", "no_such_trigger"), events.InvalidTrigger},
		{"m-oneway", mut("m-oneway", events.WorkerStart), events.InvalidTrigger},
		{"m-mode", events.PluginInfo{Name: "m-mode", Mode: "root", Order: 1}, events.InvalidMode},
		{"m-shadow", events.PluginInfo{Name: "m-shadow", Mode: events.ModeShadow, Order: 1}, events.InvalidShadow},
		{"m-slow", events.PluginInfo{Name: "m-slow", Mode: events.ModeMutator, TimeoutMS: 3_600_000, Order: 1}, events.InvalidTimeout},
		// Outside alice's grant (another trigger).
		{"alice", mut("alice", events.TaskExecutorRunTask), events.InvalidGrant},
	} {
		before := regIgnored(t, e.admin, tc.reason)
		put(tc.key, tc.entry)
		bustest.WaitFor(t, 10*time.Second, fmt.Sprintf("%s ignored (%s)", tc.key, tc.reason), func() bool {
			return regIgnored(t, e.admin, tc.reason) > before
		})
		_, ok := e.admin.Registry().Get(tc.key)
		require.False(t, ok, tc.key)
	}
	// A malformed value is ignored too.
	before := regIgnored(t, e.admin, events.InvalidMalformed)
	_, err = kv.Put(ctx, "m-json", []byte("not json"))
	require.NoError(t, err)
	bustest.WaitFor(t, 10*time.Second, "malformed entry ignored", func() bool {
		return regIgnored(t, e.admin, events.InvalidMalformed) > before
	})

	// Only bob is in a chain, and he is as he registered.
	require.Equal(t, []string{"bob"}, regNames(e.admin.Registry().List()))
	require.Empty(t, e.admin.Registry().Chain(args))
	require.Equal(t, []string{"bob"}, regNames(e.admin.Registry().Chain(events.TaskExecutorRunTask)))

	// qtasksd started again sees the same.
	e.admin.Close()
	again := bustest.Open(t, &bus.Config{DataDir: e.dir, User: "admin", Password: "admin-pw", Users: e.users, MaxPluginTimeout: regMaxTimeout})
	require.Equal(t, []string{"bob"}, regNames(again.Registry().List()))
	// An executor that does not answer registrations knows neither the
	// grants nor the cap: it ignores what breaks the rest of the rules.
	other := bustest.Connect(t, again, &bus.Config{User: "admin", Password: "admin-pw"})
	require.ElementsMatch(t, []string{"bob", "m-slow", "alice"}, regNames(other.Registry().List()))
}

func regNames(ps []events.PluginInfo) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}
