package jsondiff_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/jsondiff"
)

func TestCompare(t *testing.T) {
	t.Parallel()
	applied := func(p string) jsondiff.Effect {
		return jsondiff.Effect{Outcome: events.OutcomeApplied, Payload: []byte(p)}
	}
	timeout := jsondiff.Effect{Outcome: events.OutcomeTimeout}
	failed := jsondiff.Effect{Outcome: events.OutcomeError}
	rejected := jsondiff.Effect{Outcome: events.OutcomeRejected}
	missing := jsondiff.Effect{Outcome: jsondiff.OutcomeMissing}
	nochange := jsondiff.Effect{Outcome: events.OutcomeNoChange, Payload: []byte(`{"a":1}`)}
	for _, c := range []struct {
		name      string
		rec, cand jsondiff.Effect
		verdict   string
		rule      jsondiff.Rule
		ops       int
	}{
		{"CandidateTimeout", applied(`{}`), timeout, jsondiff.CandidateTimeout, jsondiff.RuleCandidateTimeout, 0},
		{"CandidateError", applied(`{}`), failed, jsondiff.CandidateError, jsondiff.RuleCandidateError, 0},
		{"BothFailed", failed, failed, jsondiff.Identical, jsondiff.RuleCandidateError, 0},
		{"NothingRecorded", missing, applied(`{}`), jsondiff.Different, jsondiff.RuleNothingRecorded, 0},
		{"RecordedTimeout", timeout, rejected, jsondiff.Different, jsondiff.RuleNothingRecorded, 0},
		{"RecordedError", failed, applied(`{}`), jsondiff.Different, jsondiff.RuleRecordedError, 0},
		{"BothRejected", rejected, rejected, jsondiff.Identical, jsondiff.RuleBothRejected, 0},
		{"RecordedRejected", rejected, nochange, jsondiff.Different, jsondiff.RuleRecordedRejected, 0},
		{"CandidateRejected", nochange, rejected, jsondiff.Different, jsondiff.RuleCandidateRejected, 0},
		{"SameEffect", nochange, applied(`{"a":1.0}`), jsondiff.Identical, jsondiff.RuleEffects, 0},
		{"OtherEffect", nochange, applied(`{"a":2,"b":3}`), jsondiff.Different, jsondiff.RuleEffects, 2},
	} {
		v, rule, ops, err := jsondiff.Compare(c.rec, c.cand)
		require.NoError(t, err, c.name)
		require.Equal(t, c.verdict, v, c.name)
		require.Equal(t, c.rule, rule, c.name)
		require.Len(t, ops, c.ops, c.name)
	}
	_, _, _, err := jsondiff.Compare(applied(`{`), applied(`{}`))
	require.Error(t, err)
}

func TestCallEffectAndLiveCall(t *testing.T) {
	t.Parallel()
	tr, ok := events.Lookup(events.TaskExecutorArgsReplace)
	require.True(t, ok)
	merge := func(plugin, patch string) events.PluginCall {
		return events.PluginCall{Plugin: plugin, Outcome: events.OutcomeApplied, ContentType: events.ContentTypeMergePatch,
			Patch: json.RawMessage(patch)}
	}
	input := []byte(`{"args":[],"kw":{"n":1}}`)

	e := jsondiff.CallEffect(tr, input, merge("p", `{"kw":{"n":2}}`))
	require.Equal(t, events.OutcomeApplied, e.Outcome)
	require.True(t, e.Patched)
	require.JSONEq(t, `{"args":[],"kw":{"n":2}}`, string(e.Payload))

	e = jsondiff.CallEffect(tr, input, events.PluginCall{Outcome: events.OutcomeNoChange})
	require.Equal(t, jsondiff.Effect{Outcome: events.OutcomeNoChange, Payload: input}, e)
	e = jsondiff.CallEffect(tr, input, events.PluginCall{Outcome: events.OutcomeTimeout, Reason: "slow"})
	require.Equal(t, jsondiff.Effect{Outcome: events.OutcomeTimeout, Error: "slow"}, e)
	e = jsondiff.CallEffect(tr, input, events.PluginCall{Outcome: events.OutcomeRejected, Reason: "no"})
	require.Equal(t, jsondiff.Effect{Outcome: events.OutcomeRejected, Error: "no"}, e)
	e = jsondiff.CallEffect(tr, input, merge("p", `{"task_name":"x"}`)) // outside the trigger's contract
	require.Equal(t, events.OutcomeRejected, e.Outcome)
	require.True(t, e.Patched)
	require.NotEmpty(t, e.Error)

	calls := []events.PluginCall{
		merge("first", `{"kw":{"n":2}}`),
		{Plugin: "shadow", Shadow: true, Outcome: events.OutcomeShadow},
		merge("live", `{"kw":{"n":3}}`),
		merge("after", `{"kw":{"n":4}}`),
	}
	doc, live, ok := jsondiff.LiveCall(tr, input, calls, "live")
	require.True(t, ok)
	require.Equal(t, 2, live)
	require.JSONEq(t, `{"args":[],"kw":{"n":2}}`, string(doc), "the payload as the calls before the live one left it")

	_, live, ok = jsondiff.LiveCall(tr, input, calls, "nobody")
	require.True(t, ok)
	require.Equal(t, -1, live)

	calls[0] = merge("first", `{"task_name":"x"}`)
	_, _, ok = jsondiff.LiveCall(tr, input, calls, "live")
	require.False(t, ok, "a recorded applied patch that does not apply")
}
