package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// PluginFailure is the error of a step that a plugin with policy fail
// failed: its patch was rejected, it timed out, or it reported an error.
// It is the mutator chain's failure (events.MutatorError), under the name
// callers match with errors.As (qtasksd's HTTP errors, plugins).
//
//nolint:errname // exported API, matched with errors.As by callers (qtasksd's HTTP errors, plugins); not renamed
type PluginFailure = events.MutatorError

// firing fires the triggers of one task run, in order, and tracks the acks
// of their facts.
type firing struct {
	a    *App
	task *events.Task // identity attributes are read from here
	run  int
	// tallies count, per trigger (a slot of the catalog, slotOf), its
	// firings and whether the last one applied at least one patch.
	tallies []tally
	acks    bus.Acks
	nodeFac bool // process-scope facts: the subject's key is the node id
	// idBase starts the message ids of facts and invocations: the task id,
	// plus a random token where a repeat must not be taken for a duplicate
	// (a resubmission after a refused submission, a restarted node).
	idBase string
	// hold names a trigger whose fact is kept (held) instead of published,
	// until release: storage_add's, at submission, which records the task
	// as new and so must not reach the log before the task is queued.
	hold     string
	held     *events.Fact
	heldN    int
	heldTrig string
	// phase is the phase of the task's life the firing is in, and batch
	// holds its facts not yet published (phasebuf.go). An empty phase
	// sends every fact alone.
	phase events.Phase
	batch events.BatchWriter
	// sent are the phase messages' buffers published since the last
	// waitAcks, which pools them once they are stored.
	sent [][]byte
	// factBuf is the buffer the next fact is encoded into: a fact packed
	// into a batch is copied there, and its buffer serves the next one.
	// inputBuf is the same for payloads, which a fact copies.
	factBuf, inputBuf []byte
	// pooled says that the firing's phase buffers come from the pool and
	// go back to it (waitAcks): a run's do, the submission's are not
	// waited for through waitAcks.
	pooled bool
	// claim is the run's claim of its number (worker.claimRun), sent at
	// intake and waited for, with claimCtx, before the first message of
	// the run leaves (claimed); nil once waited for, and for a firing that
	// is not a run's. claimRev is the record's revision it wrote, claimErr
	// its failure.
	claim    *bus.TaskWrite
	claimCtx context.Context //nolint:containedctx // the run's context, for the one wait of its claim
	claimRev uint64
	claimErr error
}

// claimed waits for the run's claim if it is still under way, and reports
// its failure (wrapping errClaim): no message with the run's number may
// leave unless the claim is stored (PROTOCOL.md §5). A failure also fails
// the run's acks, so that nothing the run did is taken for stored. Not for
// concurrent use: called where the run sends, from its own goroutine.
func (f *firing) claimed() error {
	if f.claim == nil {
		return f.claimErr
	}
	rev, err := f.claim.Wait(f.claimCtx)
	f.claim, f.claimCtx = nil, nil
	if err != nil {
		f.claimErr = fmt.Errorf("%w: %w", errClaim, err)
		f.acks.Fail(f.claimErr)
		return f.claimErr
	}
	f.claimRev = rev
	return nil
}

// release publishes the held fact, if any. failure, when not nil, says
// why the task was not stored or queued: the fact records it as failed,
// and the projection then records no task (PROTOCOL §7.3).
func (f *firing) release(failure error) {
	fact := f.held
	if fact == nil {
		return
	}
	f.held = nil
	if failure != nil && fact.Failed == "" {
		fact.Failed = "not queued: " + failure.Error()
	}
	if err := f.publishFact(f.heldTrig, f.heldN, fact); err != nil {
		f.acks.Fail(err)
	}
}

func (a *App) newFiring(t *events.Task, run int) *firing {
	f := &firing{a: a, task: t, run: run, tallies: make([]tally, len(slotOf))}
	// Every wait for the facts' acks is bounded, even where the caller
	// waits with context.WithoutCancel: a lost ack fails the run (its task
	// message is redelivered) instead of holding it and its slot for ever.
	f.acks.Bound(a.b.PublishTimeout())
	return f
}

// tally is what a firing keeps of one trigger.
type tally struct {
	n       int32 // firings so far
	applied bool  // the last firing applied at least one patch
}

// slotOf numbers the triggers of the catalog: a firing keeps its tallies
// in a slice rather than in maps it would fill anew for every run.
var slotOf = func() map[string]int {
	cat := events.Catalog()
	m := make(map[string]int, len(cat))
	for i, t := range cat {
		m[t.Name] = i
	}
	return m
}()

// tally is trigger's tally, for a trigger of the catalog.
func (f *firing) tally(trigger string) *tally {
	return &f.tallies[slotOf[trigger]]
}

func (f *firing) base() string {
	if f.idBase != "" {
		return f.idBase
	}
	return f.task.ID
}

// fire fires trigger with payload. For a returnable trigger it runs the
// mutator chain and returns the payload as patched; a failure under policy
// fail returns a *PluginFailure (the fact is still recorded).
//
// fire returns nil output when the payload is unchanged: the trigger is
// one-way, or no plugin's patch was applied. Callers then keep the values
// they fired with. The payload is encoded only when something needs it (a
// plugin on the chain, or a fact to record), and an unchanged payload is
// never decoded back.
func (f *firing) fire(ctx context.Context, trigger string, payload any) (json.RawMessage, error) {
	t, ok := events.Lookup(trigger)
	if !ok {
		return nil, fmt.Errorf("firing unknown trigger %q", trigger)
	}
	tl := f.tally(trigger)
	n := int(tl.n)
	tl.n++
	var chain []events.PluginInfo
	if t.Returnable {
		tl.applied = false
		if !f.nodeFac { // process-scope triggers are one-way
			chain = f.a.b.Registry().Chain(trigger)
		}
	}
	record := f.a.b.ShouldRecord(trigger)
	if len(chain) == 0 && !record {
		return nil, nil
	}
	input, err := encodePayload(f.inputBuf[:0], payload)
	f.inputBuf = nil // the fact, the output or a held fact may keep input
	if err != nil {
		return nil, fmt.Errorf("encoding payload of %s: %w", trigger, err)
	}
	fact := events.Fact{Input: input}
	var out json.RawMessage
	var failure error
	if t.Returnable {
		var doc json.RawMessage
		if len(chain) > 0 {
			cctx, span := f.startFiring(ctx, trigger, len(chain))
			doc, fact.Calls, failure = f.chain(cctx, t, n, chain, input)
			endFiring(span, failure)
		} else {
			doc, fact.Calls, failure = f.chain(ctx, t, n, chain, input)
		}
		applied := false
		for _, c := range fact.Calls {
			applied = applied || c.Outcome == events.OutcomeApplied
		}
		tl.applied = applied
		// Without a call the output is the input: a fact leaves it out
		// (PROTOCOL.md §7.3), which is a sixth of a recorded task's bytes.
		if len(fact.Calls) > 0 {
			fact.Output = doc
		}
		if applied {
			out = doc
		}
		if failure != nil {
			fact.Failed = failure.Error()
		}
	}
	if len(fact.Calls) > 0 || record {
		if err := f.record(trigger, n, &fact); err != nil && failure == nil {
			// The log cannot hold this firing, and would not on any retry:
			// the step fails, so the attempt ends rather than going on with
			// a history that has a hole (or being redelivered forever).
			return nil, err
		}
	}
	if len(chain) == 0 && f.held != &fact {
		// Nothing kept input: the fact was encoded (copied) and there is
		// no output. Its buffer serves the next payload.
		f.inputBuf = input[:0]
	}
	return out, failure
}

// encodePayload encodes a trigger's payload: by hand for the payloads of
// events (events.Payload, the same bytes as json.Marshal at a fraction of
// its CPU), appended to dst, with encoding/json for the few free-form maps.
func encodePayload(dst []byte, payload any) (json.RawMessage, error) {
	if p, ok := payload.(events.Payload); ok {
		return p.AppendJSON(dst)
	}
	return json.Marshal(payload)
}

// record publishes the fact of a firing. It returns an error only when the
// fact is too large for the log (events.ErrTooLarge): a failure no retry
// can mend. Other failures are the acks' to report.
func (f *firing) record(trigger string, n int, fact *events.Fact) error {
	if trigger == f.hold {
		f.held, f.heldN, f.heldTrig = fact, n, trigger
		return nil
	}
	return f.publishFact(trigger, n, fact)
}

// publishFact publishes the fact of a firing (see record).
func (f *firing) publishFact(trigger string, n int, fact *events.Fact) error {
	data, err := fact.AppendJSON(f.factBuf[:0])
	f.factBuf = nil // the event may keep data (emit)
	if err != nil {
		f.acks.Fail(fmt.Errorf("encoding fact %s: %w", trigger, err))
		return nil
	}
	if len(data) > events.MaxDataSize {
		// The patches are in the log as events of their own: drop their
		// copies from the fact rather than lose the fact.
		for i := range fact.Calls {
			if fact.Calls[i].Patch != nil {
				fact.Calls[i].Patch, fact.Calls[i].PatchOmitted = nil, true
			}
		}
		if data, err = fact.AppendJSON(data[:0]); err == nil && len(data) > events.MaxDataSize {
			return fmt.Errorf("the fact of %s is %d bytes, the log takes at most %d: %w", trigger, len(data), events.MaxDataSize, events.ErrTooLarge)
		}
		if err != nil {
			f.acks.Fail(err)
			return nil
		}
	}
	ev := f.event(trigger, events.FactMsgID(f.base(), f.task.Attempt, f.run, trigger, n), data)
	if f.emit(trigger, &ev) {
		f.factBuf = data[:0]
	}
	return nil
}

// subject is where the fact of trigger goes: under the task's queue, or
// the node id for process-scope facts.
func (f *firing) subject(trigger string) string {
	if f.nodeFac {
		return events.FactSubject(trigger, f.a.cfg.NodeID)
	}
	return events.FactSubject(trigger, f.task.Queue)
}

func (f *firing) event(trigger, id string, data []byte) events.Event {
	ev := events.Event{
		ID:              id,
		Source:          f.a.source,
		Type:            events.TypeTriggerPrefix + trigger,
		Time:            f.a.cfg.Now(),
		DataContentType: events.ContentTypeJSON,
		Data:            data,
		Trigger:         trigger,
		Attempt:         f.task.Attempt,
		Run:             f.run,
		TraceParent:     f.task.Trace,
	}
	if f.nodeFac {
		ev.Subject = f.a.cfg.NodeID
	} else {
		ev.Subject = f.task.ID
		ev.TaskID = f.task.ID
		ev.TaskName = f.task.Name
	}
	return ev
}

// chain runs the mutators of t's chain over input (events.MutatorChain:
// each sees the payload as patched by those before it, the failure
// policy, shadows). The shadows of a plugin, given what it is given, are
// invoked alongside it, concurrently with the rest of the chain; the
// chain waits for them at its end (their calls are in the fact, after the
// chain's).
func (f *firing) chain(ctx context.Context, t events.Trigger, n int, chain []events.PluginInfo, input json.RawMessage) (json.RawMessage, []events.PluginCall, error) {
	if len(chain) == 0 {
		return input, nil, nil
	}
	// An invocation carries the run's number: none leaves before the claim
	// is stored (before the shadows' goroutines start: claimed is not for
	// concurrent use).
	if err := f.claimed(); err != nil {
		return input, nil, err
	}
	reg := f.a.b.Registry()
	mc := events.NewMutatorChain(t, input, len(chain))
	var shadowWG sync.WaitGroup
	var shadowMu sync.Mutex
	var shadowCalls []events.PluginCall
	for _, p := range chain {
		doc := mc.Payload()
		// Shadows of p see what p sees; their patches are recorded only.
		// They are asked alongside p, not after it answers, so that the
		// wait for them at the chain's end adds nothing when they take no
		// longer than the chain.
		for _, s := range reg.Shadows(p.Name, t.Name) {
			shadowWG.Add(1)
			go func(s events.PluginInfo, in json.RawMessage) {
				defer shadowWG.Done()
				sc, _ := f.invoke(ctx, t, n, s, in, true)
				shadowMu.Lock()
				shadowCalls = append(shadowCalls, sc)
				shadowMu.Unlock()
			}(s, doc)
		}
		call, out := f.invoke(ctx, t, n, p, doc, false)
		if !mc.Add(call, out) {
			break
		}
	}
	shadowWG.Wait()
	for _, sc := range shadowCalls {
		mc.Add(sc, nil)
	}
	if failure := mc.Failure(); failure != nil {
		return mc.Payload(), mc.Calls(), failure
	}
	return mc.Payload(), mc.Calls(), nil
}

// invoke calls one plugin with doc and judges its answer
// (events.Answer.Judge): the call, and the payload after it (doc unless
// its patch applied; never for a shadow).
func (f *firing) invoke(ctx context.Context, t events.Trigger, n int, p events.PluginInfo, doc json.RawMessage, shadow bool) (events.PluginCall, json.RawMessage) {
	inv := events.Event{
		ID:              events.InvocationID(f.base(), f.task.Attempt, f.run, t.Name, n, p.Name),
		Source:          f.a.source,
		Subject:         f.task.ID,
		DataContentType: events.ContentTypeJSON,
		Data:            doc,
		TaskID:          f.task.ID,
		TaskName:        f.task.Name,
		Trigger:         t.Name,
		Attempt:         f.task.Attempt,
		Run:             f.run,
		TraceParent:     f.task.Trace,
	}
	call := events.PluginCall{Plugin: p.Name, Version: p.Version, Invocation: inv.ID, Policy: p.Policy, Shadow: shadow}
	ctx, span := f.startCall(ctx, p, &inv, shadow)
	defer endCall(span, &call)
	start := time.Now()
	reply, err := f.a.b.Invoke(ctx, p, inv)
	for _, fut := range reply.Pending {
		f.acks.Add(fut)
	}
	call.LatencyUS = time.Since(start).Microseconds()
	call.InvokeSeq = reply.InvokeSeq
	defer f.a.observeCall(t.Name, &call)
	var a events.Answer
	switch {
	case errors.Is(err, bus.ErrPluginTimeout):
		timeout := p.TimeoutMS
		if timeout <= 0 {
			timeout = bus.DefaultPluginTimeout.Milliseconds()
		}
		a = events.Answer{Failed: events.OutcomeTimeout, Reason: fmt.Sprintf("no patch within %dms", timeout)}
	case err != nil:
		a = events.Answer{Failed: events.OutcomeRejected, Reason: err.Error()}
	default:
		// The projection's rule too: a patch it would list as rejected
		// must not change the task, whatever it says (an error included).
		if err := events.ValidatePatch(reply.Subject, &reply.Patch); err != nil {
			a = events.Answer{Failed: events.OutcomeRejected, Reason: err.Error()}
		} else {
			a = events.PatchAnswer(&reply.Patch)
		}
	}
	out := a.Judge(t, doc, &call)
	return call, out
}
