package bus_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// matches reports whether NATS subject pattern p matches subject s.
func matches(p, s string) bool {
	pt, st := strings.Split(p, "."), strings.Split(s, ".")
	for i, tok := range pt {
		if tok == ">" {
			return len(st) > i
		}
		if i >= len(st) || (tok != "*" && tok != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

// TestPluginsCannotWriteFlow checks that no plugin's rights let it write a
// state, chain or limit event, or a key of the state or limits buckets: what they
// record (who wrote which state, a chain's progress, who holds a slot)
// must not be forged.
func TestPluginsCannotWriteFlow(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{events.ModeMutator, events.ModeObserver, events.ModeShadow} {
		p := bus.PluginPermissions(events.PluginInfo{Name: "p", Mode: mode})
		for _, s := range []string{
			events.StateSubject("default"), events.ChainSubject("default"), events.LimitSubject("default"),
			"$KV." + bus.BucketState + ".s.scope.key", "$KV." + bus.BucketState + ".t.p.key",
			"$KV." + bus.BucketLimits + ".c.task.0",
		} {
			for _, pat := range p.Publish {
				require.False(t, matches(pat, s), "mode %s: %s allows publishing %s", mode, pat, s)
			}
		}
		require.True(t, matches(p.Publish[0], events.PatchSubject("p", "x")), "the matcher matches")
	}
}
