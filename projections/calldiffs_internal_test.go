package projections

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// The diffs a fact's output shortcuts (factCallDiffs: the last applied
// call's payload is the output, not its patch applied again) are the
// diffs of every patch replayed (callDiffs), on the recorded scenario's
// facts and on chains folded by events.MutatorChain as the executor folds
// them: failures under policy ignore between applied calls, shadows after
// them, a patch dropped from the fact.
func TestFactCallDiffsUseTheOutput(t *testing.T) {
	t.Parallel()
	same := func(t *testing.T, trigger string, f *events.Fact) {
		t.Helper()
		shadowOf := func(string) string { return "a" }
		for _, shadows := range []bool{true, false} {
			require.Equal(t, callDiffs(trigger, f.Input, f.Calls, shadows, nil),
				factCallDiffs(trigger, f.Input, f.Output, f.Calls, shadows, nil), "shadows=%v", shadows)
			require.Equal(t, callDiffs(trigger, f.Input, f.Calls, shadows, shadowOf),
				factCallDiffs(trigger, f.Input, f.Output, f.Calls, shadows, shadowOf), "shadows=%v, shadowOf", shadows)
		}
	}

	t.Run("RecordedScenario", func(t *testing.T) {
		t.Parallel()
		applied := 0
		for i, m := range projectionstest.ReadFile(t, projectionstest.ScenarioLog()) {
			for _, st := range m.Stored(uint64(i + 1)) {
				if st.Err != nil || st.Event.Trigger == "" {
					continue
				}
				var f events.Fact
				if json.Unmarshal(st.Event.Data, &f) != nil || len(f.Calls) == 0 {
					continue
				}
				for _, c := range f.Calls {
					if c.Outcome == events.OutcomeApplied {
						applied++
					}
				}
				same(t, st.Event.Trigger, &f)
			}
		}
		require.Positive(t, applied, "the scenario has applied calls")
	})

	tr, ok := events.Lookup(events.TaskExecutorArgsReplace)
	require.True(t, ok)
	merge := func(p string) events.Answer {
		return events.Answer{ContentType: events.ContentTypeMergePatch, Patch: []byte(p)}
	}
	type link struct {
		plugin, policy string
		shadow         bool
		a              events.Answer
	}
	for _, tc := range []struct {
		name  string
		links []link
		omit  int // the call whose patch the fact dropped; -1 for none
	}{
		{"OneApplied", []link{{"a", events.PolicyFail, false, merge(`{"kw":{"n":1}}`)}}, -1},
		{"IgnoredFailureBetween", []link{
			{"a", events.PolicyFail, false, merge(`{"kw":{"n":1}}`)},
			{"b", events.PolicyIgnore, false, merge(`{"task_name":"x"}`)},
			{"c", events.PolicyFail, false, merge(`{"kw":{"m":2}}`)},
			{"d", events.PolicyIgnore, false, events.Answer{Failed: events.OutcomeTimeout, Reason: "slow"}},
		}, -1},
		{"ShadowsAfter", []link{
			{"a", events.PolicyFail, false, merge(`{"kw":{"n":1}}`)},
			{"c", events.PolicyFail, false, merge(`{"kw":{"n":2}}`)},
			{"s", events.PolicyFail, true, merge(`{"kw":{"n":3}}`)},
		}, -1},
		{"StoppedByAFailure", []link{
			{"a", events.PolicyFail, false, merge(`{"kw":{"n":1}}`)},
			{"b", events.PolicyFail, false, merge(`{"kw":[1]}`)},
		}, -1},
		{"LastPatchDropped", []link{
			{"a", events.PolicyFail, false, merge(`{"kw":{"n":1}}`)},
			{"c", events.PolicyFail, false, merge(`{"kw":{"m":2}}`)},
		}, 1},
		{"EarlierPatchDropped", []link{
			{"a", events.PolicyFail, false, merge(`{"kw":{"n":1}}`)},
			{"c", events.PolicyFail, false, merge(`{"kw":{"m":2}}`)},
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			input := []byte(`{"args":[],"kw":{}}`)
			mc := events.NewMutatorChain(tr, input, len(tc.links))
			var saw []byte
			for _, l := range tc.links {
				call := events.PluginCall{Plugin: l.plugin, Policy: l.policy, Shadow: l.shadow}
				if l.shadow {
					out := l.a.Judge(tr, saw, &call)
					mc.Add(call, out)
					continue
				}
				saw = mc.Payload()
				if !mc.Step(call, &l.a) {
					break
				}
			}
			f := events.Fact{Input: input, Output: mc.Payload(), Calls: mc.Calls()}
			if tc.omit >= 0 {
				f.Calls[tc.omit].Patch, f.Calls[tc.omit].PatchOmitted = nil, true
			}
			same(t, tr.Name, &f)
		})
	}
}
