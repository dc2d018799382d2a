package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/cli/clitest"
)

// The JavaScript plugin in examples/node-plugin, written from
// docs/PROTOCOL.md alone, runs against qtasksd and its patch takes effect.
// .ci/run installs its dependencies and sets QTASKS_REQUIRE_NODE=1, so that
// in CI a missing Node.js fails the test instead of skipping it.
func TestNodePlugin(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs("../../examples/node-plugin")
	require.NoError(t, err)
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "nats"))
	if err != nil || modErr != nil {
		if os.Getenv("QTASKS_REQUIRE_NODE") != "" {
			t.Fatalf("node (%v) or examples/node-plugin/node_modules (%v) missing; run npm ci there", err, modErr)
		}
		t.Skip("node or examples/node-plugin/node_modules missing; run: (cd examples/node-plugin && npm ci)")
	}

	b := bustest.Open(t, nil)
	daemon := startProc(t, "qtasksd", "--demo", "--nats-url", b.ClientURL(), "--http", "", "--log-level", "warn")
	_ = daemon
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	plugin := clitest.StartCmd(t, exec.Command(node, filepath.Join(dir, "plugin.js"), "--nats-url", b.ClientURL(), "--name", "node-upper"))
	plugin.WaitLine("ready", 30*time.Second)
	require.NoError(t, b.Registry().WaitFor(ctx, "node-upper", ""))

	app, err := executor.New(b, nil)
	require.NoError(t, err)
	sub, err := app.Submit(ctx, "greet", map[string]any{"name": "ada"}, nil)
	require.NoError(t, err)
	final, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	got, err := executor.Result[string](final)
	require.NoError(t, err)
	require.Equal(t, "HELLO, ADA", got)

	// The exchange is in the log: one invocation, one patch, and the fact
	// records the call as applied.
	trig := events.TaskExecutorAfterExecuteResultReplace
	require.Len(t, bustest.EventsOf(t, b, sub.ID, events.InvokeSubject("node-upper", trig)), 1)
	pat := bustest.EventsOf(t, b, sub.ID, events.PatchSubject("node-upper", trig))
	require.Len(t, pat, 1)
	require.NoError(t, pat[0].Err)
	require.Equal(t, "1.0.0", pat[0].Event.PluginVersion)
	facts := bustest.EventsOf(t, b, sub.ID, events.FactSubject(trig, "*"))
	require.Len(t, facts, 1)
	require.True(t, strings.Contains(string(facts[0].Event.Data), `"outcome":"applied"`), string(facts[0].Event.Data))
}
