package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// The JavaScript plugin in examples/node-plugin, written from
// docs/PROTOCOL.md alone, runs against qtasksd and its patch takes effect.
// .ci/run installs its dependencies and sets QTASKS_REQUIRE_NODE=1, so that
// in CI a missing Node.js fails the test instead of skipping it.
func TestNodePlugin(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs("../../examples/node-plugin")
	require.NoError(t, err)
	node := nodeOrSkip(t, dir)

	b := bustest.Open(t, nil)
	daemon := startProc(t, "qtasksd", "--demo", "--nats-url", b.ClientURL(), "--http", "", "--log-level", "warn")
	_ = daemon
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A version that must be percent-encoded, and whose %41 would read as
	// "A" if the plugin wrote it verbatim.
	const version = "1.0%41 beta é"
	plugin := testkit.StartProcCmd(t, testkit.Command(node, filepath.Join(dir, "plugin.js"), "--nats-url", b.ClientURL(), "--name", "node-upper", "--version", version))
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
	require.Equal(t, version, pat[0].Event.PluginVersion)
	facts := bustest.EventsOf(t, b, sub.ID, events.FactSubject(trig, "*"))
	require.Len(t, facts, 1)
	require.Contains(t, string(facts[0].Event.Data), `"outcome":"applied"`)

	// A message on its invocation subject that is not an invocation is
	// dead-lettered, as PROTOCOL.md §9.2 step 1 says, and terminated.
	bogus := nats.NewMsg(events.InvokeSubject("node-upper", trig))
	bogus.Header.Set("ce-type", "io.qtasks.something.else")
	bogus.Data = []byte(`{}`)
	ack, err := b.JetStream().PublishMsg(ctx, bogus)
	require.NoError(t, err)
	var dead []bus.Stored
	require.Eventually(t, func() bool {
		dead = dead[:0]
		err := b.ReadLog(ctx, ack.Sequence, []string{events.DeadSubject("node-upper")}, func(s bus.Stored) error {
			dead = append(dead, s)
			return nil
		})
		return err == nil && len(dead) > 0
	}, 30*time.Second, 20*time.Millisecond, "no dead letter from the plugin")
	require.Len(t, dead, 1)
	require.NoError(t, dead[0].Err, "the dead letter is a valid event")
	require.Equal(t, events.TypeDeadLetter, dead[0].Event.Type)
	require.Equal(t, fmt.Sprintf("dead:node-upper:%s:%d", bus.StreamEvents, ack.Sequence), dead[0].Event.ID)
	var dl events.DeadLetter
	require.NoError(t, json.Unmarshal(dead[0].Event.Data, &dl))
	require.Equal(t, ack.Sequence, dl.Sequence)
	require.Equal(t, "plugin-node-upper", dl.Consumer)
	require.Contains(t, dl.Reason, "not an invocation")
}

// The JavaScript plugin's header value coding agrees with Go's
// (events.EncodeHeaderValue, events.DecodeHeaderValue): the same encoding,
// the same decoding, the same refusals.
func TestNodeHeaderValues(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs("../../examples/node-plugin")
	require.NoError(t, err)
	node := nodeOrSkip(t, dir)
	values := []string{
		"", "plain", "Euro € 😀", "100%", "100% sure", "%41", "%e2%82%ac", `"quoted \" value"`,
		`"a"b"`, "a\tb\r\nc\x00\x7f", "50%off \"deal\"", "%C0%A0", "%FF", "!#$&'()*+,-./:;<=>?@[\\]^_`{|}~",
	}
	in, err := json.Marshal(values)
	require.NoError(t, err)
	script := `const p = require(process.argv[1]);
const out = JSON.parse(process.argv[2]).map((s) => {
  let dec = null;
  try { dec = p.decodeValue(s); } catch (_) { /* refused */ }
  return { enc: p.encodeValue(s), dec };
});
console.log(JSON.stringify(out));`
	b, err := exec.CommandContext(t.Context(), node, "-e", script, filepath.Join(dir, "plugin.js"), string(in)).Output()
	require.NoError(t, err)
	var got []struct {
		Enc string  `json:"enc"`
		Dec *string `json:"dec"`
	}
	require.NoError(t, json.Unmarshal(b, &got), string(b))
	require.Len(t, got, len(values))
	for i, v := range values {
		require.Equal(t, events.EncodeHeaderValue(v), got[i].Enc, "encoding %q", v)
		want, err := events.DecodeHeaderValue(v)
		if err != nil {
			require.Nil(t, got[i].Dec, "decoding %q: Go refuses it (%v), JS reads %q", v, err, got[i].Dec)
			continue
		}
		require.NotNil(t, got[i].Dec, "decoding %q: JS refuses it, Go reads %q", v, want)
		require.Equal(t, want, *got[i].Dec, "decoding %q", v)
	}
}

// nodeOrSkip returns node's path, or skips the test when node or the
// example plugin's modules (plugin.js requires "nats") are missing; with
// QTASKS_REQUIRE_NODE set (CI) it fails instead.
func nodeOrSkip(t *testing.T, dir string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "nats"))
	if err != nil || modErr != nil {
		if os.Getenv("QTASKS_REQUIRE_NODE") != "" {
			t.Fatalf("node (%v) or examples/node-plugin/node_modules (%v) missing; run npm ci there", err, modErr)
		}
		t.Skip("node or examples/node-plugin/node_modules missing; run: (cd examples/node-plugin && npm ci)")
	}
	return node
}
