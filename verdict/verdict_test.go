package verdict_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/verdict"
)

func TestCompare(t *testing.T) {
	t.Parallel()
	applied := func(p string) verdict.Effect {
		return verdict.Effect{Outcome: events.OutcomeApplied, Payload: []byte(p)}
	}
	timeout := verdict.Effect{Outcome: events.OutcomeTimeout}
	failed := verdict.Effect{Outcome: events.OutcomeError}
	rejected := verdict.Effect{Outcome: events.OutcomeRejected}
	missing := verdict.Effect{Outcome: verdict.OutcomeMissing}
	nochange := verdict.Effect{Outcome: events.OutcomeNoChange, Payload: []byte(`{"a":1}`)}
	for _, c := range []struct {
		name      string
		rec, cand verdict.Effect
		verdict   string
		rule      verdict.Rule
		ops       int
	}{
		{"CandidateTimeout", applied(`{}`), timeout, verdict.CandidateTimeout, verdict.RuleCandidateTimeout, 0},
		{"CandidateError", applied(`{}`), failed, verdict.CandidateError, verdict.RuleCandidateError, 0},
		{"BothFailed", failed, failed, verdict.Identical, verdict.RuleCandidateError, 0},
		{"NothingRecorded", missing, applied(`{}`), verdict.Different, verdict.RuleNothingRecorded, 0},
		{"RecordedTimeout", timeout, rejected, verdict.Different, verdict.RuleNothingRecorded, 0},
		{"RecordedError", failed, applied(`{}`), verdict.Different, verdict.RuleRecordedError, 0},
		{"BothRejected", rejected, rejected, verdict.Identical, verdict.RuleBothRejected, 0},
		{"RecordedRejected", rejected, nochange, verdict.Different, verdict.RuleRecordedRejected, 0},
		{"CandidateRejected", nochange, rejected, verdict.Different, verdict.RuleCandidateRejected, 0},
		{"SameEffect", nochange, applied(`{"a":1.0}`), verdict.Identical, verdict.RuleEffects, 0},
		{"OtherEffect", nochange, applied(`{"a":2,"b":3}`), verdict.Different, verdict.RuleEffects, 2},
	} {
		v, rule, ops, err := verdict.Compare(c.rec, c.cand)
		require.NoError(t, err, c.name)
		require.Equal(t, c.verdict, v, c.name)
		require.Equal(t, c.rule, rule, c.name)
		require.Len(t, ops, c.ops, c.name)
	}
	_, _, _, err := verdict.Compare(applied(`{`), applied(`{}`))
	require.Error(t, err)
}

func TestCallEffectAndLiveCall(t *testing.T) {
	t.Parallel()
	tr, ok := events.Lookup(events.TaskExecutorArgsReplace)
	require.True(t, ok)
	merge := func(plugin, patch string) events.PluginCall {
		return events.PluginCall{
			Plugin: plugin, Outcome: events.OutcomeApplied, ContentType: events.ContentTypeMergePatch,
			Patch: json.RawMessage(patch),
		}
	}
	input := []byte(`{"args":[],"kw":{"n":1}}`)

	e := verdict.CallEffect(tr, input, merge("p", `{"kw":{"n":2}}`))
	require.Equal(t, events.OutcomeApplied, e.Outcome)
	require.True(t, e.Patched)
	require.JSONEq(t, `{"args":[],"kw":{"n":2}}`, string(e.Payload))

	e = verdict.CallEffect(tr, input, events.PluginCall{Outcome: events.OutcomeNoChange})
	require.Equal(t, verdict.Effect{Outcome: events.OutcomeNoChange, Payload: input}, e)
	e = verdict.CallEffect(tr, input, events.PluginCall{Outcome: events.OutcomeTimeout, Reason: "slow"})
	require.Equal(t, verdict.Effect{Outcome: events.OutcomeTimeout, Error: "slow"}, e)
	e = verdict.CallEffect(tr, input, events.PluginCall{Outcome: events.OutcomeRejected, Reason: "no"})
	require.Equal(t, verdict.Effect{Outcome: events.OutcomeRejected, Error: "no"}, e)
	e = verdict.CallEffect(tr, input, merge("p", `{"task_name":"x"}`)) // outside the trigger's contract
	require.Equal(t, events.OutcomeRejected, e.Outcome)
	require.True(t, e.Patched)
	require.NotEmpty(t, e.Error)

	calls := []events.PluginCall{
		merge("first", `{"kw":{"n":2}}`),
		{Plugin: "shadow", Shadow: true, Outcome: events.OutcomeShadow},
		merge("live", `{"kw":{"n":3}}`),
		merge("after", `{"kw":{"n":4}}`),
	}
	doc, live, ok := verdict.LiveCall(tr, input, calls, "live")
	require.True(t, ok)
	require.Equal(t, 2, live)
	require.JSONEq(t, `{"args":[],"kw":{"n":2}}`, string(doc), "the payload as the calls before the live one left it")

	_, live, ok = verdict.LiveCall(tr, input, calls, "nobody")
	require.True(t, ok)
	require.Equal(t, -1, live)

	calls[0] = merge("first", `{"task_name":"x"}`)
	_, _, ok = verdict.LiveCall(tr, input, calls, "live")
	require.False(t, ok, "a recorded applied patch that does not apply")
}
