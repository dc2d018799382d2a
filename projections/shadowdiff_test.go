package projections

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

// A shadow's patch is diffed against what the live plugin it shadows saw
// (which the shadow saw too), when the caller knows which plugin that is;
// otherwise against the payload the chain left.
func TestShadowDiffAgainstWhatItSaw(t *testing.T) {
	t.Parallel()
	patch := func(v int) json.RawMessage {
		return json.RawMessage(`[{"op":"replace","path":"/result","value":` + strconv.Itoa(v) + `}]`)
	}
	calls := []events.PluginCall{
		{Plugin: "scale", Outcome: events.OutcomeApplied, ContentType: events.ContentTypeJSONPatch, Patch: patch(30)},
		{Plugin: "double", Outcome: events.OutcomeApplied, ContentType: events.ContentTypeJSONPatch, Patch: patch(60)},
		{Plugin: "scale-next", Outcome: events.OutcomeShadow, Shadow: true, ContentType: events.ContentTypeJSONPatch, Patch: patch(36)},
	}
	input := json.RawMessage(`{"result":3}`)
	str := func(cs []Change) string {
		require.Len(t, cs, 1)
		return cs[0].String()
	}
	known := callDiffs(events.TaskExecutorRunTask, input, calls, true, func(s string) string {
		return map[string]string{"scale-next": "scale"}[s]
	})
	require.Equal(t, "~ /result: 3 → 30", str(known[0]))
	require.Equal(t, "~ /result: 30 → 60", str(known[1]))
	require.Equal(t, "~ /result: 3 → 36", str(known[2]))
	unknown := callDiffs(events.TaskExecutorRunTask, input, calls, true, nil)
	require.Equal(t, "~ /result: 60 → 36", str(unknown[2]))
	require.Nil(t, callDiffs(events.TaskExecutorRunTask, input, calls, false, nil)[2], "no shadows: not diffed")

	// The timeline reads the diffs the projector stored (the shadow's
	// against the payload the chain left), but for a firing with a shadow
	// of a live plugin the caller names, diffed again.
	stored := encodeDiffs(unknown)
	f := events.Fact{Input: input, Calls: calls}
	read := func(shadowOf func(string) string) [][]Change {
		d, err := factDiffs(events.TaskExecutorRunTask, &f, stored, shadowOf)
		require.NoError(t, err)
		require.Len(t, d, len(calls))
		return d
	}
	require.Equal(t, known, read(func(s string) string { return map[string]string{"scale-next": "scale"}[s] }))
	require.Equal(t, unknown, read(nil))
	require.Equal(t, unknown, read(func(string) string { return "" }), "a shadow the registry does not know")
	require.Equal(t, unknown, read(func(string) string { return "gone" }), "a live plugin the firing did not call")
	require.Equal(t, "~ /result: 60 → 36", str(read(nil)[2]))
}
