package events

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// answers of every kind, for the table tests below: argsDoc is the
// payload, task_executor_args_replace (/args, /kw) the trigger.
var (
	ansApplied    = Answer{ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":{"n":1}}`), Version: "2"}
	ansNoChange   = Answer{Version: "2"}
	ansOutside    = Answer{ContentType: ContentTypeMergePatch, Patch: []byte(`{"task_name":"x"}`)} // outside the contract
	ansWrongType  = Answer{ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":[1]}`)}        // kw must be an object
	ansNotJSON    = Answer{ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":`)}
	ansNoApply    = Answer{ContentType: ContentTypeJSONPatch, Patch: []byte(`[{"op":"remove","path":"/kw/absent"}]`)}
	ansPluginErr  = Answer{Error: "boom", Version: "2", Patch: []byte(`{"kw":{"n":1}}`)}
	ansTimeout    = Answer{Failed: OutcomeTimeout, Reason: "no patch within 5ms"}
	ansInvokeFail = Answer{Failed: OutcomeRejected, Reason: "invalid patch event"}
	ansFailedErr  = Answer{Failed: OutcomeError, Reason: "exit status 3", Version: "9"}
	patchedArgs   = `{"args":[],"kw":{"n":1}}`
)

func TestAnswerJudge(t *testing.T) {
	t.Parallel()
	tr := mustLookup(t, TaskExecutorArgsReplace)
	tests := []struct {
		name    string
		a       Answer
		shadow  bool
		outcome Outcome
		reason  string // a part of the reason; "" for none
		out     string
		version string
		patch   bool // the call keeps the patch
	}{
		{name: "Applied", a: ansApplied, outcome: OutcomeApplied, out: patchedArgs, version: "2", patch: true},
		{name: "NoChange", a: ansNoChange, outcome: OutcomeNoChange, out: argsDoc, version: "2"},
		{name: "OutsideContract", a: ansOutside, outcome: OutcomeRejected, reason: "does not allow", out: argsDoc, version: "1", patch: true},
		{name: "WrongType", a: ansWrongType, outcome: OutcomeRejected, reason: "wrong type", out: argsDoc, version: "1", patch: true},
		{name: "NotJSON", a: ansNotJSON, outcome: OutcomeRejected, reason: "patch body is not JSON", out: argsDoc, version: "1"},
		{name: "DoesNotApply", a: ansNoApply, outcome: OutcomeRejected, reason: "does not apply", out: argsDoc, version: "1", patch: true},
		{name: "PluginError", a: ansPluginErr, outcome: OutcomeError, reason: "boom", out: argsDoc, version: "2"},
		{name: "Timeout", a: ansTimeout, outcome: OutcomeTimeout, reason: "no patch within", out: argsDoc, version: "1"},
		{name: "InvokeFailed", a: ansInvokeFail, outcome: OutcomeRejected, reason: "invalid patch event", out: argsDoc, version: "1"},
		{name: "FailedKeepsVersion", a: ansFailedErr, outcome: OutcomeError, reason: "exit status 3", out: argsDoc, version: "1"},
		{name: "ShadowApplies", a: ansApplied, shadow: true, outcome: OutcomeShadow, out: argsDoc, version: "2", patch: true},
		{name: "ShadowNoChange", a: ansNoChange, shadow: true, outcome: OutcomeShadow, out: argsDoc, version: "2"},
		{name: "ShadowRejected", a: ansOutside, shadow: true, outcome: OutcomeRejected, reason: "does not allow", out: argsDoc, version: "1", patch: true},
		{name: "ShadowTimeout", a: ansTimeout, shadow: true, outcome: OutcomeTimeout, reason: "no patch within", out: argsDoc, version: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			call := PluginCall{Plugin: "p", Version: "1", Shadow: tt.shadow}
			out := tt.a.Judge(tr, []byte(argsDoc), &call)
			require.Equal(t, tt.outcome, call.Outcome)
			require.JSONEq(t, tt.out, string(out))
			require.Equal(t, tt.version, call.Version)
			if tt.reason == "" {
				require.Empty(t, call.Reason)
			} else {
				require.Contains(t, call.Reason, tt.reason)
			}
			if tt.patch {
				require.Equal(t, string(tt.a.Patch), string(call.Patch))
				require.Equal(t, tt.a.ContentType, call.ContentType)
			} else {
				require.Nil(t, call.Patch)
			}
		})
	}
}

func TestAnswerJudgeLeavesDocUnchanged(t *testing.T) {
	t.Parallel()
	tr := mustLookup(t, TaskExecutorArgsReplace)
	for _, a := range []Answer{ansOutside, ansWrongType, ansNotJSON, ansNoApply, ansPluginErr, ansTimeout} {
		doc := []byte(argsDoc)
		var call PluginCall
		out := a.Judge(tr, doc, &call)
		require.True(t, call.Failed(), call.Outcome)
		require.True(t, bytes.Equal(doc, []byte(argsDoc)), "the payload given is never written to")
		require.True(t, bytes.Equal(out, doc), "a failed call returns the payload it was given")
	}
}

func TestMutatorChain(t *testing.T) {
	t.Parallel()
	tr := mustLookup(t, TaskExecutorArgsReplace)
	second := Answer{ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":{"m":2}}`)}
	type link struct {
		policy string
		a      Answer
	}
	failures := []struct {
		name    string
		a       Answer
		outcome Outcome
	}{
		{"Rejected", ansOutside, OutcomeRejected},
		{"WrongType", ansWrongType, OutcomeRejected},
		{"NotJSON", ansNotJSON, OutcomeRejected},
		{"DoesNotApply", ansNoApply, OutcomeRejected},
		{"Timeout", ansTimeout, OutcomeTimeout},
		{"InvokeFailed", ansInvokeFail, OutcomeRejected},
		{"PluginError", ansPluginErr, OutcomeError},
	}
	type testCase struct {
		name     string
		links    []link
		out      string
		outcomes []Outcome
		failed   int // the link whose failure stops the chain; -1 for none
	}
	tests := []testCase{
		{
			name:     "EachSeesThePayloadPatchedBefore",
			links:    []link{{PolicyFail, ansApplied}, {PolicyFail, second}},
			out:      `{"args":[],"kw":{"n":1,"m":2}}`,
			outcomes: []Outcome{OutcomeApplied, OutcomeApplied},
			failed:   -1,
		},
		{
			name:     "NoChangeGoesOn",
			links:    []link{{PolicyFail, ansNoChange}, {PolicyFail, ansApplied}},
			out:      patchedArgs,
			outcomes: []Outcome{OutcomeNoChange, OutcomeApplied},
			failed:   -1,
		},
		{
			name:     "Empty",
			out:      argsDoc,
			outcomes: []Outcome{},
			failed:   -1,
		},
	}
	// Every failure under every policy: fail (and the default, "") stops
	// the chain with the payload as the failed plugin was given it;
	// ignore goes on without the failed call's patch.
	for _, f := range failures {
		for _, policy := range []string{PolicyFail, "", PolicyIgnore} {
			tc := testCase{
				name:  f.name + "/policy=" + policy,
				links: []link{{PolicyFail, ansApplied}, {policy, f.a}, {PolicyFail, second}},
			}
			if policy == PolicyIgnore {
				tc.out, tc.outcomes, tc.failed = `{"args":[],"kw":{"n":1,"m":2}}`, []Outcome{OutcomeApplied, f.outcome, OutcomeApplied}, -1
			} else {
				tc.out, tc.outcomes, tc.failed = patchedArgs, []Outcome{OutcomeApplied, f.outcome}, 1
			}
			tests = append(tests, tc)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			input := []byte(argsDoc)
			mc := NewMutatorChain(tr, input, len(tt.links))
			stopped := -1
			for i, l := range tt.links {
				a := l.a
				if !mc.Step(PluginCall{Plugin: "p" + string(rune('0'+i)), Policy: l.policy}, &a) {
					stopped = i
					break
				}
			}
			require.Equal(t, tt.failed, stopped)
			require.JSONEq(t, tt.out, string(mc.Payload()))
			require.True(t, bytes.Equal(input, []byte(argsDoc)), "the input is never written to")
			got := []Outcome{}
			for _, c := range mc.Calls() {
				got = append(got, c.Outcome)
			}
			require.Equal(t, tt.outcomes, got)
			if tt.failed < 0 {
				require.Nil(t, mc.Failure())
				return
			}
			failed := mc.Calls()[tt.failed]
			want := &MutatorError{Plugin: failed.Plugin, Trigger: tr.Name, Outcome: failed.Outcome, Reason: failed.Reason}
			require.Equal(t, want, mc.Failure())
			require.Equal(t, "plugin p1 failed on task_executor_args_replace ("+string(failed.Outcome)+"): "+failed.Reason, mc.Failure().Error())
			var me *MutatorError
			require.ErrorAs(t, error(mc.Failure()), &me)
		})
	}
}

// TestMutatorChainShadows: a shadow is judged against what its live plugin
// saw, its call recorded only, whatever it answers; it never fails the
// chain, and shadows finishing after the chain stopped are still recorded.
func TestMutatorChainShadows(t *testing.T) {
	t.Parallel()
	tr := mustLookup(t, TaskExecutorArgsReplace)
	second := Answer{ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":{"m":2}}`)}
	mc := NewMutatorChain(tr, []byte(argsDoc), 4)

	saw0 := mc.Payload()
	require.True(t, mc.Step(PluginCall{Plugin: "live0", Policy: PolicyFail}, &ansApplied))
	saw1 := mc.Payload()
	require.JSONEq(t, patchedArgs, string(saw1))
	require.True(t, mc.Step(PluginCall{Plugin: "live1", Policy: PolicyFail}, &second))

	for _, s := range []struct {
		saw     []byte
		a       Answer
		outcome Outcome
	}{
		{saw0, ansApplied, OutcomeShadow},
		{saw1, ansOutside, OutcomeRejected},
		{saw1, ansTimeout, OutcomeTimeout},
	} {
		call := PluginCall{Plugin: "shadow", Policy: PolicyFail, Shadow: true}
		out := s.a.Judge(tr, s.saw, &call)
		require.Equal(t, s.outcome, call.Outcome)
		require.True(t, mc.Add(call, out), "a shadow never stops the chain")
	}
	require.JSONEq(t, `{"args":[],"kw":{"n":1,"m":2}}`, string(mc.Payload()), "shadows change nothing")
	require.Nil(t, mc.Failure())
	require.Len(t, mc.Calls(), 5)

	// A shadow after a failure is recorded; the failure stands.
	require.False(t, mc.Step(PluginCall{Plugin: "live2", Policy: PolicyFail}, &ansTimeout))
	call := PluginCall{Plugin: "shadow", Shadow: true}
	out := ansApplied.Judge(tr, mc.Payload(), &call)
	require.False(t, mc.Add(call, out))
	require.Len(t, mc.Calls(), 7)
	require.Equal(t, "live2", mc.Failure().Plugin)
	require.JSONEq(t, `{"args":[],"kw":{"n":1,"m":2}}`, string(mc.Payload()))
}

func TestRecordedAnswer(t *testing.T) {
	t.Parallel()
	tr := mustLookup(t, TaskExecutorArgsReplace)
	patch := []byte(`{"kw":{"n":1}}`)
	tests := []struct {
		name    string
		c       PluginCall
		outcome Outcome
		out     string
	}{
		{"Applied", PluginCall{Outcome: OutcomeApplied, ContentType: ContentTypeMergePatch, Patch: patch}, OutcomeApplied, patchedArgs},
		{"AppliedPatchOmitted", PluginCall{Outcome: OutcomeApplied, PatchOmitted: true}, OutcomeNoChange, argsDoc},
		{"NoChange", PluginCall{Outcome: OutcomeNoChange}, OutcomeNoChange, argsDoc},
		{"ShadowJudgedAsLive", PluginCall{Outcome: OutcomeShadow, Shadow: true, ContentType: ContentTypeMergePatch, Patch: patch}, OutcomeApplied, patchedArgs},
		{"RejectedWithPatchAppliesAgain", PluginCall{Outcome: OutcomeRejected, Reason: "old", ContentType: ContentTypeMergePatch, Patch: patch}, OutcomeApplied, patchedArgs},
		{"RejectedWithoutPatch", PluginCall{Outcome: OutcomeRejected, Reason: "old"}, OutcomeRejected, argsDoc},
		{"Timeout", PluginCall{Outcome: OutcomeTimeout, Reason: "slow"}, OutcomeTimeout, argsDoc},
		{"Error", PluginCall{Outcome: OutcomeError, Reason: "boom"}, OutcomeError, argsDoc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := RecordedAnswer(tt.c)
			var call PluginCall
			out := a.Judge(tr, []byte(argsDoc), &call)
			require.Equal(t, tt.outcome, call.Outcome)
			require.JSONEq(t, tt.out, string(out))
			if tt.c.Outcome == OutcomeTimeout || tt.c.Outcome == OutcomeError || tt.c.Outcome == OutcomeRejected && tt.c.Patch == nil {
				require.Equal(t, tt.c.Reason, call.Reason)
			}
		})
	}
}

// TestMutatorChainReplay: what a recorded firing's plugins were given. The
// recorded outcome stands: only live calls recorded as applied change the
// payload; one whose patch no longer applies is an error and changes
// nothing.
func TestMutatorChainReplay(t *testing.T) {
	t.Parallel()
	tr := mustLookup(t, TaskExecutorArgsReplace)
	mc := NewMutatorChain(tr, []byte(argsDoc), 0)
	calls := []PluginCall{
		{Plugin: "a", Outcome: OutcomeApplied, ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":{"n":1}}`)},
		{Plugin: "b", Outcome: OutcomeRejected, ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":{"x":1}}`)}, // recorded rejected: stands
		{Plugin: "c", Outcome: OutcomeTimeout, Policy: PolicyIgnore},
		{Plugin: "s", Outcome: OutcomeShadow, Shadow: true, ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":{"y":1}}`)},
		{Plugin: "d", Outcome: OutcomeApplied, ContentType: ContentTypeMergePatch, Patch: []byte(`{"kw":{"m":2}}`)},
	}
	for i := range calls {
		require.NoError(t, mc.Replay(&calls[i]))
	}
	require.JSONEq(t, `{"args":[],"kw":{"n":1,"m":2}}`, string(mc.Payload()))
	require.Empty(t, mc.Calls(), "Replay keeps no calls: the fact has them")
	require.Nil(t, mc.Failure(), "Replay never stops the chain")

	bad := PluginCall{Plugin: "e", Outcome: OutcomeApplied, ContentType: ContentTypeMergePatch, Patch: []byte(`{"task_name":"x"}`)}
	err := mc.Replay(&bad)
	var pe *PatchError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, ErrPathNotAllowed)
	require.JSONEq(t, `{"args":[],"kw":{"n":1,"m":2}}`, string(mc.Payload()))
}
