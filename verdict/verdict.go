// Package verdict holds the rules by which a plugin's answer is judged
// against the recorded one: a shadow's beside the live plugin's, or a
// replayed candidate's beside the recorded version's. Two places count
// these verdicts, the projection (shadow statistics read from SQLite) and
// plugins/replay (replay reports, shadow statistics read from the log);
// this package is the one home of the rules, so that both count alike.
//
// It sits beside events (it imports events and the JSON diff of
// internal/jsondiff, nothing else of ours); projections and plugins import
// it, never each other.
package verdict

import (
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/jsondiff"
)

// Verdicts of Compare (the values of plugins/replay's Status).
const (
	Identical        = "identical"
	Different        = "different"
	CandidateError   = "error"
	CandidateTimeout = "timeout"
)

// OutcomeMissing is the outcome of a recorded call of which nothing was
// recorded (the call timed out before its patch was logged).
const OutcomeMissing events.Outcome = "missing"

// Effect is what a plugin's answer did to the payload it was given.
type Effect struct {
	// Outcome is applied, nochange, rejected, error, timeout or missing.
	Outcome events.Outcome
	// Payload is the payload after the answer (applied, nochange).
	Payload []byte
	// Error is the plugin's error or why the patch was rejected.
	Error string
	// Patched says that the answer's patch was applied to the payload
	// (Outcome is then applied, or rejected when it did not apply).
	Patched bool
}

// CallEffect is the effect of plugin call c, as recorded in a fact, on
// payload doc: its failure, or its patch applied to doc (a call without a
// patch changes nothing). The call is judged again as the executor judges
// a live one (events.RecordedAnswer, events.Answer.Judge), a shadow's too.
func CallEffect(t events.Trigger, doc []byte, c events.PluginCall) Effect {
	a := events.RecordedAnswer(c)
	var call events.PluginCall
	out := a.Judge(t, doc, &call)
	e := Effect{Outcome: call.Outcome, Error: call.Reason}
	switch call.Outcome {
	case events.OutcomeApplied:
		e.Payload, e.Patched = out, true
	case events.OutcomeNoChange:
		e.Payload = out
	case events.OutcomeRejected:
		e.Patched = len(call.Patch) > 0
	case events.OutcomeTimeout, events.OutcomeError, events.OutcomeShadow:
	}
	return e
}

// LiveCall finds in a firing's calls the live call of plugin liveOf (the
// first that is not a shadow's) and the payload it was given: the input
// patched by the calls applied before it (events.MutatorChain.Replay).
// live is -1 when liveOf was not called; ok is false when a patch recorded
// as applied does not apply (the log disagrees with itself: nothing to
// compare).
func LiveCall(t events.Trigger, input []byte, calls []events.PluginCall, liveOf string) (doc []byte, live int, ok bool) {
	mc := events.NewMutatorChain(t, input, 0)
	for i := range calls {
		c := &calls[i]
		if c.Shadow {
			continue
		}
		if c.Plugin == liveOf {
			return mc.Payload(), i, true
		}
		if mc.Replay(c) != nil {
			return nil, -1, false
		}
	}
	return mc.Payload(), -1, true
}

// Rule is the rule of Compare that decided a verdict.
type Rule int

// Rules, in the order Compare applies them.
const (
	// RuleCandidateTimeout: the candidate timed out (CandidateTimeout).
	RuleCandidateTimeout Rule = iota
	// RuleCandidateError: the candidate failed (CandidateError; Identical
	// when the recorded call failed too).
	RuleCandidateError
	// RuleNothingRecorded: the recorded call timed out or nothing was
	// recorded; the candidate answered (Different).
	RuleNothingRecorded
	// RuleRecordedError: the recorded call failed; the candidate answered
	// (Different).
	RuleRecordedError
	// RuleBothRejected: both patches were rejected (Identical).
	RuleBothRejected
	// RuleRecordedRejected: the recorded patch was rejected, the
	// candidate's applies (Different).
	RuleRecordedRejected
	// RuleCandidateRejected: the candidate's patch is rejected, the
	// recorded one applied (Different).
	RuleCandidateRejected
	// RuleEffects: both answers changed the payload or left it; the
	// differences between the two payloads decide.
	RuleEffects
)

// Compare says whether a candidate's answer has the recorded answer's
// effect. Failures and rejections are compared by kind; otherwise the two
// payloads are compared as JSON values and ops (in Patch style) are their
// differences: the verdict is Identical when there are none, else
// Different (a caller may mask some of them). err is a payload that is not
// JSON.
func Compare(rec, cand Effect) (verdict string, rule Rule, ops []jsondiff.Op, err error) {
	switch cand.Outcome {
	case events.OutcomeTimeout:
		return CandidateTimeout, RuleCandidateTimeout, nil, nil
	case events.OutcomeError:
		if rec.Outcome == events.OutcomeError {
			return Identical, RuleCandidateError, nil, nil
		}
		return CandidateError, RuleCandidateError, nil, nil
	default: // the candidate answered: the recorded call decides next
	}
	switch rec.Outcome {
	case OutcomeMissing, events.OutcomeTimeout:
		return Different, RuleNothingRecorded, nil, nil
	case events.OutcomeError:
		return Different, RuleRecordedError, nil, nil
	default: // the recorded call answered: rejections, then effects
	}
	recRejected, candRejected := rec.Outcome == events.OutcomeRejected, cand.Outcome == events.OutcomeRejected
	switch {
	case recRejected && candRejected:
		return Identical, RuleBothRejected, nil, nil
	case recRejected:
		return Different, RuleRecordedRejected, nil, nil
	case candRejected:
		return Different, RuleCandidateRejected, nil, nil
	}
	ops, err = jsondiff.Diff(rec.Payload, cand.Payload, jsondiff.Patch)
	if err != nil {
		return "", RuleEffects, nil, err
	}
	if len(ops) == 0 {
		return Identical, RuleEffects, nil, nil
	}
	return Different, RuleEffects, ops, nil
}
