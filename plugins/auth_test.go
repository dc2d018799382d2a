package plugins_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// With auth on, a plugin's credentials let it read its own invocations and
// write its own patches, nothing else.
func TestPluginPermissions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := events.PluginInfo{Name: "alice", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorArgsReplace}}
	bob := events.PluginInfo{Name: "bob", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}}
	pa, pb, pe := bus.PluginPermissions(alice), bus.PluginPermissions(bob), bus.PluginPermissions(events.PluginInfo{Name: "eve"})
	b := bustest.Open(t, &bus.Config{
		User: "admin", Password: "admin-pw",
		Users: []bus.User{
			{Name: "admin", Password: "admin-pw"},
			{Name: "alice", Password: "alice-pw", Permissions: &pa, Grant: &events.PluginGrant{Mode: alice.Mode, Triggers: alice.Triggers}},
			{Name: "bob", Password: "bob-pw", Permissions: &pb, Grant: &events.PluginGrant{Mode: bob.Mode, Triggers: bob.Triggers}},
			{Name: "eve", Password: "eve-pw", Permissions: &pe},
		},
	})
	url := b.ClientURL()
	open := func(name string) *bus.Bus {
		pbus, err := bus.Open(ctx, bus.Config{URL: url, User: name, Password: name + "-pw", Plugin: name, Logger: bustest.Logger(t)})
		require.NoError(t, err)
		t.Cleanup(pbus.Close)
		return pbus
	}

	// Both plugins run on their own least-rights connections.
	for _, p := range []struct {
		info  events.PluginInfo
		patch string
	}{{alice, `{"kw":{"by":"alice"}}`}, {bob, `{"result":"bob"}`}} {
		r, err := plugins.Start(ctx, open(p.info.Name), plugins.Spec{
			Name: p.info.Name, Version: "1", Triggers: p.info.Triggers,
			Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
				if _, _, err := c.State.Get(ctx, "missing"); !errors.Is(err, bus.ErrStateNotFound) {
					return nil, err // its own state is readable
				}
				return &plugins.Patch{ContentType: events.ContentTypeMergePatch, Body: []byte(p.patch)}, nil
			}),
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = r.Stop(context.Background()) })
		require.NoError(t, b.Registry().WaitFor(ctx, p.info.Name, "1"))
	}
	app, err := executor.New(b, &executor.Config{AckWait: 5 * time.Second})
	require.NoError(t, err)
	executor.MustRegister(app, "who", func(_ context.Context, in map[string]string) (string, error) { return in["by"], nil }, nil)
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.Background()) })
	sub, err := app.Submit(ctx, "who", nil, nil)
	require.NoError(t, err)
	final, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	got, err := executor.Result[string](final)
	require.NoError(t, err)
	require.Equal(t, "bob", got, "alice's args patch and bob's result patch both applied")

	// A restricted user without a grant registers nothing.
	_, err = open("eve").Registry().Register(ctx, events.PluginInfo{Name: "eve", Version: "1", Mode: events.ModeObserver})
	require.ErrorIs(t, err, bus.ErrRegistrationRefused)
	require.ErrorContains(t, err, "no plugin grant")

	// Now alice tries what she must not, on a raw connection.
	violations := make(chan error, 16)
	nc, err := nats.Connect(url, nats.UserInfo("alice", "alice-pw"),
		nats.CustomInboxPrefix(bus.PluginInboxPrefix("alice")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	denied := func(what string) {
		t.Helper()
		select {
		case err := <-violations:
			require.ErrorIs(t, err, nats.ErrPermissionViolation, what)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no permission violation", what)
		}
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }

	// Read bob's invocations or patches, or anyone's replies.
	for _, subj := range []string{events.SubjectInvoke + ".bob.>", events.SubjectPatch + ".>", "_INBOX.>", events.SubjectTrigger + ".>"} {
		_, err := nc.SubscribeSync(subj)
		require.NoError(t, err)
		require.NoError(t, nc.Flush())
		denied("subscribe " + subj)
	}
	// Answer for bob, forge a fact or a phase message, queue a task.
	for _, subj := range []string{
		events.PatchSubject("bob", events.TaskExecutorRunTask),
		events.FactSubject(events.StorageAdd, "forged"),
		events.PhaseSubject(events.PhaseIntake, "default"),
		events.RunSubject("default"),
	} {
		c, cancel := short()
		_, err := js.Publish(c, subj, []byte("{}"))
		cancel()
		require.Error(t, err, "publish %s", subj)
		denied("publish " + subj)
	}
	// A consumer on bob's invocations, under her name or his; even her own
	// (the registrar creates it).
	for _, cc := range []jetstream.ConsumerConfig{
		{Durable: "plugin-alice", FilterSubject: events.SubjectInvoke + ".bob.>"},
		{Durable: "plugin-bob", FilterSubject: events.SubjectInvoke + ".bob.>"},
		{Durable: "plugin-alice", FilterSubject: events.SubjectInvoke + ".alice.>"},
	} {
		c, cancel := short()
		_, err := js.CreateOrUpdateConsumer(c, bus.StreamEvents, cc)
		cancel()
		require.Error(t, err, "consumer %s on %s", cc.Durable, cc.FilterSubject)
		denied("create consumer " + cc.Durable)
	}
	// Overwrite bob's registration, delete the log.
	c, cancel2 := short()
	_, err = js.Publish(c, "$KV."+bus.BucketPlugins+".bob", []byte(`{"name":"bob"}`))
	cancel2()
	require.Error(t, err)
	denied("registry write for bob")
	c, cancel3 := short()
	require.Error(t, js.DeleteStream(c, bus.StreamEvents))
	cancel3()
	denied("delete stream")

	// The registration of bob is untouched.
	info, ok := b.Registry().Get("bob")
	require.True(t, ok)
	require.Equal(t, events.ModeMutator, info.Mode)
}
