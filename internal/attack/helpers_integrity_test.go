package attack

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// integrityWait bounds every wait of the integrity attacks.
const integrityWait = 30 * time.Second

// integrityLogs keeps what the executor's side logs, for the tests to
// check that an attempt was reported.
type integrityLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *integrityLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *integrityLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// has reports whether a line at level (ERROR, WARN) contains msg.
func (l *integrityLogs) has(level, msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.SplitSeq(l.buf.String(), "\n") {
		if strings.Contains(line, "level="+level) && strings.Contains(line, msg) {
			return true
		}
	}
	return false
}

// integrityEnv is an embedded server with authorization: the executor
// (user admin, all rights) and each plugin as its own user with
// bus.PluginPermissions.
type integrityEnv struct {
	b    *bus.Bus
	app  *executor.App
	reg  *prometheus.Registry
	logs *integrityLogs
}

// integritySetup starts the server with a user for each plugin in ps and
// an executor app (not started: register tasks, then integrityStart).
func integritySetup(t *testing.T, ps ...events.PluginInfo) *integrityEnv {
	t.Helper()
	users := []bus.User{{Name: "admin", Password: "admin-pw"}}
	for _, p := range ps {
		perms := bus.PluginPermissions(p)
		// The grant is what the plugin registers: the registrar holds
		// every plugin to its users-file grant.
		grant := &events.PluginGrant{Mode: p.Mode, Triggers: p.Triggers, ShadowOf: p.ShadowOf}
		users = append(users, bus.User{Name: p.Name, Password: p.Name + "-pw", Permissions: &perms, Grant: grant})
	}
	logs := &integrityLogs{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelWarn}))
	b := bustest.Open(t, &bus.Config{User: "admin", Password: "admin-pw", Users: users, Logger: log})
	reg := prometheus.NewRegistry()
	c := executor.Config{AckWait: 5 * time.Second, GracePeriod: 5 * time.Second, Metrics: reg, Logger: log}
	app, err := executor.New(b, &c)
	require.NoError(t, err)
	return &integrityEnv{b: b, app: app, reg: reg, logs: logs}
}

// integrityStart starts the env's worker.
func integrityStart(t *testing.T, e *integrityEnv) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	require.NoError(t, e.app.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
		defer cancel()
		require.NoError(t, e.app.Stop(ctx))
	})
}

// integrityPluginBus connects as plugin name, with its least rights.
func integrityPluginBus(t *testing.T, e *integrityEnv, name string) *bus.Bus {
	t.Helper()
	return bustest.Connect(t, e.b, &bus.Config{User: name, Password: name + "-pw", Plugin: name})
}

// integrityPlugin runs spec on its own least-rights connection, and
// returns that connection (the attacker's tool).
func integrityPlugin(t *testing.T, e *integrityEnv, spec plugins.Spec) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	pb := integrityPluginBus(t, e, spec.Name)
	if spec.Version == "" {
		spec.Version = "1"
	}
	r, err := plugins.Start(ctx, pb, spec)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	require.NoError(t, e.b.Registry().WaitFor(ctx, spec.Name, spec.Version))
	return pb
}

// integrityRun submits task name with input and waits for its final record.
func integrityRun(t *testing.T, e *integrityEnv, name string, input any) events.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	sub, err := e.app.Submit(ctx, name, input, nil)
	require.NoError(t, err)
	final, err := e.app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	return final
}

// integrityForgeries is qtasks_forgeries_detected_total in reg.
func integrityForgeries(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "qtasks_forgeries_detected_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	// The counter counts events: a whole number.
	return int(sum)
}

// integrityFinals are the final facts of task id that executors wrote (on
// the fact subject), decoded.
func integrityFinals(t *testing.T, b *bus.Bus, id string) []events.Task {
	t.Helper()
	var out []events.Task
	for _, s := range bustest.EventsOf(t, b, id, events.SubjectTrigger+"."+events.StorageRemoveFinishedTask+".*") {
		var f struct {
			Input struct {
				Model events.Task `json:"model"`
			} `json:"input"`
		}
		require.NoError(t, json.Unmarshal(s.Event.Data, &f))
		out = append(out, f.Input.Model)
	}
	return out
}

// integrityAlerts are the alert events in the log, decoded.
func integrityAlerts(t *testing.T, b *bus.Bus) []events.Alert {
	t.Helper()
	var out []events.Alert
	for _, s := range bustest.Events(t, b, events.SubjectAlert+".>") {
		require.NoError(t, s.Err)
		require.Equal(t, events.TypeAlert, s.Event.Type)
		var a events.Alert
		require.NoError(t, json.Unmarshal(s.Event.Data, &a))
		out = append(out, a)
	}
	return out
}

// integrityCall is the call of plugin in the fact of trigger of task id.
func integrityCall(t *testing.T, b *bus.Bus, id, trigger, plugin string) events.PluginCall {
	t.Helper()
	for _, s := range bustest.EventsOf(t, b, id, events.SubjectTrigger+"."+trigger+".*") {
		var f events.Fact
		require.NoError(t, json.Unmarshal(s.Event.Data, &f))
		for _, c := range f.Calls {
			if c.Plugin == plugin {
				return c
			}
		}
	}
	t.Fatalf("no call of %s in the facts of %s for task %s", plugin, trigger, id)
	return events.PluginCall{}
}

// integrityPullUntilAdvisory pulls from c, which must deliver nothing more,
// until a max-deliveries advisory arrives on advisories: JetStream gives up
// on a message when it would deliver it once more, to a waiting pull.
func integrityPullUntilAdvisory(ctx context.Context, t *testing.T, c jetstream.Consumer, advisories <-chan *nats.Msg) {
	t.Helper()
	for {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			t.Fatalf("delivered past max deliver: %s", m.Subject())
		}
		select {
		case <-advisories:
			return
		case <-ctx.Done():
			t.Fatal("no max-deliveries advisory")
		default:
		}
	}
}
