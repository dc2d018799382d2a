package events

import (
	"encoding/json"
	"fmt"
)

// This file is the one home of the mutator chain's rules: how a
// mutator's answer is judged (Answer.Judge: which patches are accepted),
// how a chain folds its calls over the payload with each plugin's failure
// policy (MutatorChain), and what a recorded call did to the payload it
// was given (MutatorChain.Replay). The executor (live calls over the bus),
// plugins/replay (re-drive against candidates), verdict (what a recorded
// call did) and the projection (field blame and call diffs) all drive
// these; none does I/O here: the caller invokes the plugin, or reads the
// recorded call, and hands over its answer.

// Answer is a mutator's answer to one invocation, as the chain judges it:
// a patch (none means no change), the plugin's own error, or a call that
// brought no answer at all (Failed).
type Answer struct {
	// Failed is set for a call with no answer to judge: OutcomeTimeout,
	// or OutcomeRejected or OutcomeError for an invocation that failed
	// (the caller's transport decides which); Reason says why. The other
	// fields are then ignored.
	Failed Outcome
	Reason string
	// Version is the plugin version the answer names; "" keeps the
	// call's.
	Version string
	// Error is the plugin's own error (the patch event's ce-pluginerror).
	Error string
	// ContentType and Patch are the patch (ContentTypeJSONPatch or
	// ContentTypeMergePatch); an empty Patch changes nothing.
	ContentType string
	Patch       []byte
}

// PatchAnswer is the answer a patch event carries. Whether the event may
// count at all (ValidatePatch, for one read off the log) is its reader's
// to check first: a patch event that fails it is a rejected call.
func PatchAnswer(ev *Event) Answer {
	return Answer{Version: ev.PluginVersion, Error: ev.PluginError, ContentType: ev.DataContentType, Patch: ev.Data}
}

// RecordedAnswer is the answer recorded in call c (a fact's), to be judged
// again against a payload: a failed call's failure, or its patch (a
// rejected call's too, when the fact kept it). A shadow's call is the
// answer of a live call: Judge decides by the call it is given.
func RecordedAnswer(c PluginCall) Answer {
	switch c.Outcome {
	case OutcomeTimeout, OutcomeError:
		return Answer{Failed: c.Outcome, Reason: c.Reason}
	case OutcomeRejected:
		if len(c.Patch) == 0 {
			return Answer{Failed: OutcomeRejected, Reason: c.Reason}
		}
	case OutcomeApplied, OutcomeNoChange, OutcomeShadow:
	}
	return Answer{Version: c.Version, ContentType: c.ContentType, Patch: c.Patch}
}

// Judge judges answer a of the plugin of call to doc, the payload that
// plugin was given, under trigger t's contract: it sets call's Outcome and
// Reason, its Version when the answer names one, and its ContentType and
// Patch when there is a patch. It returns the payload after the call: the
// patched one when the patch applied (OutcomeApplied), else doc. A patch
// that is not JSON, or that ApplyPatch refuses, is rejected and changes
// nothing; a shadow's patch (call.Shadow) that applies is OutcomeShadow and
// changes nothing either.
func (a *Answer) Judge(t Trigger, doc []byte, call *PluginCall) []byte {
	if a.Failed != "" {
		call.Outcome, call.Reason = a.Failed, a.Reason
		return doc
	}
	if a.Version != "" {
		call.Version = a.Version
	}
	if a.Error != "" {
		call.Outcome, call.Reason = OutcomeError, a.Error
		return doc
	}
	if len(a.Patch) == 0 {
		call.Outcome = OutcomeNoChange
		if call.Shadow {
			call.Outcome = OutcomeShadow
		}
		return doc
	}
	call.ContentType = a.ContentType
	call.Patch = json.RawMessage(a.Patch)
	if !json.Valid(call.Patch) {
		call.Patch = nil
		call.Outcome, call.Reason = OutcomeRejected, "patch body is not JSON"
		return doc
	}
	out, err := ApplyPatch(t, doc, a.ContentType, a.Patch)
	if err != nil {
		call.Outcome, call.Reason = OutcomeRejected, err.Error()
		return doc
	}
	if call.Shadow {
		call.Outcome = OutcomeShadow
		return doc
	}
	call.Outcome = OutcomeApplied
	return out
}

// MutatorError is the failure that stops a mutator chain: the call of a
// plugin whose policy is fail (any policy but ignore) failed: its patch
// was rejected, it timed out, or it reported an error.
type MutatorError struct {
	Plugin  string
	Trigger string
	Outcome Outcome
	Reason  string
}

func (e *MutatorError) Error() string {
	return fmt.Sprintf("plugin %s failed on %s (%s): %s", e.Plugin, e.Trigger, e.Outcome, e.Reason)
}

// MutatorChain folds the calls of one firing of a returnable trigger over
// its payload. Each plugin sees the payload as patched by those before it
// (Payload); a failed call stops the chain unless the plugin's policy is
// ignore, in which case it changes nothing and the chain goes on; a
// shadow sees what its live plugin saw (the caller hands it Payload before
// the live call) and its call is only recorded. The zero value is not
// ready: use NewMutatorChain. Not safe for concurrent use: a caller that
// runs shadows concurrently judges their answers (Answer.Judge, pure) and
// adds the calls from one goroutine.
type MutatorChain struct {
	t       Trigger
	doc     []byte
	calls   []PluginCall
	failure *MutatorError
}

// NewMutatorChain starts the chain of a firing of t with payload input;
// n is how many calls to expect (a capacity hint).
func NewMutatorChain(t Trigger, input []byte, n int) MutatorChain {
	return MutatorChain{t: t, doc: input, calls: make([]PluginCall, 0, n)}
}

// Payload is the payload as the calls so far left it: what the next
// plugin, and the shadows of that plugin, are given. After a failure it
// stays the payload the failed plugin was given.
func (c *MutatorChain) Payload() []byte { return c.doc }

// Calls are the calls added so far, in the order they were added.
func (c *MutatorChain) Calls() []PluginCall { return c.calls }

// Failure is the failure that stopped the chain, nil while it goes on.
func (c *MutatorChain) Failure() *MutatorError { return c.failure }

// Step judges answer a of the plugin of call to Payload (Answer.Judge) and
// adds the call (Add). It reports whether the chain goes on.
func (c *MutatorChain) Step(call PluginCall, a *Answer) bool {
	out := a.Judge(c.t, c.doc, &call)
	return c.Add(call, out)
}

// Add adds call, judged (Answer.Judge) against Payload, with out the
// payload Judge returned. It reports whether the chain goes on: false once
// a call whose policy is not ignore has failed (Failure then says which).
// A shadow's call, judged against what its live plugin saw, is recorded
// only. Once the chain has stopped, Add records calls (shadows finishing
// late) and changes nothing else.
func (c *MutatorChain) Add(call PluginCall, out []byte) bool {
	c.calls = append(c.calls, call)
	switch {
	case c.failure != nil:
		return false
	case call.Shadow:
		return true
	case call.Failed():
		if call.Policy == PolicyIgnore {
			return true
		}
		c.failure = &MutatorError{Plugin: call.Plugin, Trigger: c.t.Name, Outcome: call.Outcome, Reason: call.Reason}
		return false
	case call.Outcome == OutcomeApplied:
		c.doc = out
	}
	return true
}

// Replay adds call as a fact recorded it, to learn what each plugin of a
// recorded firing was given: the recorded outcome stands, and the patch of
// a live call recorded as applied is applied again to Payload. It returns
// the error of such a patch that does not apply now (the log disagrees
// with itself, or the trigger's contract changed since); the payload is
// then left as it was. Replay neither stops the chain nor keeps the call
// (Calls): the fact holds the calls that were made.
func (c *MutatorChain) Replay(call *PluginCall) error {
	if call.Shadow || call.Outcome != OutcomeApplied {
		return nil
	}
	out, err := ApplyPatch(c.t, c.doc, call.ContentType, call.Patch)
	if err != nil {
		return err
	}
	c.doc = out
	return nil
}
