package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// ChainStep is one step of a chain: a task and its input. The previous
// step's result is appended to Args when the step is submitted, as QTasks
// appends it as the last positional argument; a task whose input is not a
// list then takes that result as its whole input (see the package
// documentation on arguments).
type ChainStep struct {
	Name string
	// Args are positional arguments, before the previous result.
	Args []any
	// Input is the keyword arguments (nil for none), as Submit's input.
	Input any
	// Queue overrides the task's queue; Priority its priority.
	Queue    string
	Priority *int
}

// Step returns the chain step of task name with positional args (QTasks'
// add(2, 2) in AsyncTaskUtils.chain(add(2, 2), add(4), add(8))).
func Step(name string, args ...any) ChainStep { return ChainStep{Name: name, Args: args} }

// Chain is a chain as started.
type Chain struct {
	ID    string
	Steps int
	// First is the record of the first step's task, as submitted.
	First events.Task
}

// ChainError is the error of a chain that ended because step Step ended
// in error or cancel: the later steps never ran. Task is that step's
// record; Steps, when WaitChain or WaitChainSteps returned the error,
// every step's record up to it (Steps[Step] is Task).
type ChainError struct {
	ID    string
	Step  int
	Task  events.Task
	Steps []events.Task
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("chain %s failed at step %d (task %s, %s): %s", e.ID, e.Step, e.Task.ID, e.Task.Status, e.Task.Error)
}

// ChainRunning is the status of a chain that has not ended (as GET
// /chains/{id} says it).
const ChainRunning = "running"

// ChainResult is a chain that ended, step by step (WaitChainSteps).
type ChainResult struct {
	ID string
	// Status is the chain's: success when every step succeeded, else the
	// status (error or cancel) of the step that ended it; ChainRunning
	// when the wait ended first.
	Status string
	// Total is how many steps the chain has; Steps holds the records of
	// those that ran, in order, each with its own status, result or error
	// (decode one with Result). A chain that failed at step i has i+1 of
	// them: the later steps never ran.
	Total int
	Steps []events.Task
}

// Last is the record of the step that ended the chain: the last step's
// on success, the failed step's otherwise (what WaitChain returns).
func (r ChainResult) Last() events.Task {
	if len(r.Steps) == 0 {
		return events.Task{}
	}
	return r.Steps[len(r.Steps)-1]
}

// ChainConsumer is the durable consumer through which every app advances
// chains: it reads the final fact of every task attempt, and for a chain
// step's submits the next step or records the chain's end. All apps share
// it, so each final fact is handled by one of them, and again by another
// if that one dies before acknowledging it.
const ChainConsumer = "qtasks-chains"

// chainKey is the idempotency key of step of chain id: whoever submits the
// step (again, after a crash) gets the same task.
func chainKey(id string, step int) string { return "chain:" + id + ":" + strconv.Itoa(step) }

// ChainStepID is the task id of step (from 0) of chain id.
func ChainStepID(id string, step int) string { return KeyTaskID(chainKey(id, step)) }

// Chain runs steps in sequence (QTasks' AsyncTaskUtils.chain): it records
// the chain's start in the log, submits the first step, and returns. Each
// step that succeeds has the next submitted with its result appended to
// the next's arguments, by whichever app handles its final fact (see
// ChainConsumer); a step that ends in error or cancel ends the chain so
// (events.ChainAfter), and the later steps never run. WaitChain waits for
// the chain's end.
//
// Every step's task carries extra.chain (events.ChainLink): the chain id,
// its step, and the task before it. An error means the chain did not
// start, except an *OutcomeUnknownError: its first step may be queued.
func (a *App) Chain(ctx context.Context, steps ...ChainStep) (Chain, error) {
	if len(steps) == 0 || len(steps) > events.MaxChainSteps {
		return Chain{}, fmt.Errorf("%w: a chain has 1 to %d steps, got %d", ErrInvalidInput, events.MaxChainSteps, len(steps))
	}
	specs := make([]events.ChainStepSpec, len(steps))
	for i, s := range steps {
		spec, err := a.chainSpec(s)
		if err != nil {
			return Chain{}, fmt.Errorf("chain step %d: %w", i, err)
		}
		specs[i] = spec
	}
	if err := a.ensureChainConsumer(ctx); err != nil {
		return Chain{}, err
	}
	id := "chain-" + uuid.NewString()
	first := ChainStepID(id, 0)
	ce := events.ChainEvent{Chain: id, Action: events.ChainStart, Steps: len(specs), TaskID: first, Specs: specs}
	if err := a.recordChain(ctx, specs[0].Queue, ce, 0); err != nil {
		return Chain{}, err
	}
	link := events.ChainLink{ID: id, Steps: len(specs), Rest: specs[1:]}
	t, err := a.submitStep(ctx, specs[0], nil, link)
	if err != nil && !errors.Is(err, ErrOutcomeUnknown) {
		// The start is in the log: end the chain there too.
		_ = a.recordChain(context.WithoutCancel(ctx), specs[0].Queue, events.ChainEvent{
			Chain: id, Action: events.ChainEnd,
			Steps: len(specs), TaskID: first, Status: events.StatusError, Error: "the first step was not submitted: " + err.Error(),
		}, 0)
		return Chain{}, fmt.Errorf("submitting the first step of chain %s: %w", id, err)
	}
	return Chain{ID: id, Steps: len(specs), First: t}, err
}

// chainSpec encodes a step as the log and the steps' extra carry it.
func (a *App) chainSpec(s ChainStep) (events.ChainStepSpec, error) {
	if !events.ValidToken(s.Name) {
		return events.ChainStepSpec{}, fmt.Errorf("%w: task name %q", ErrInvalidInput, s.Name)
	}
	spec := events.ChainStepSpec{Name: s.Name, Queue: s.Queue, Priority: s.Priority}
	if spec.Queue == "" {
		spec.Queue = a.cfg.Queue
		if d, ok := a.task(s.Name); ok && d.opts.Queue != "" {
			spec.Queue = d.opts.Queue
		}
	}
	if !events.ValidToken(spec.Queue) {
		return spec, fmt.Errorf("%w: queue %q", ErrInvalidInput, spec.Queue)
	}
	if s.Args != nil {
		b, err := json.Marshal(s.Args)
		if err != nil {
			return spec, fmt.Errorf("%w: encoding args: %w", ErrInvalidInput, err)
		}
		spec.Args = b
	}
	if s.Input != nil {
		kw, err := encodeKw(s.Input)
		if err != nil {
			return spec, fmt.Errorf("%w: %w", ErrInvalidInput, err)
		}
		spec.Kw = kw
	}
	return spec, nil
}

// submitStep submits the step of link, prev's result appended to its
// arguments (prev nil for the first step).
func (a *App) submitStep(ctx context.Context, spec events.ChainStepSpec, prev *events.Task, link events.ChainLink) (events.Task, error) {
	var args []any
	if len(spec.Args) > 0 {
		var list []json.RawMessage
		if err := json.Unmarshal(spec.Args, &list); err != nil {
			return events.Task{}, fmt.Errorf("%w: step args: %w", ErrInvalidInput, err)
		}
		for _, x := range list {
			args = append(args, x)
		}
	}
	if prev != nil {
		r := prev.Result
		if len(r) == 0 {
			r = json.RawMessage("null")
		}
		args = append(args, r)
	}
	var input any
	if len(spec.Kw) > 0 {
		input = spec.Kw
	}
	return a.Submit(ctx, spec.Name, input, &SubmitOptions{
		Args: args, Queue: spec.Queue, Priority: spec.Priority,
		IdempotencyKey: chainKey(link.ID, link.Step),
		Extra:          map[string]any{events.ExtraChain: link},
	})
}

// recordChain writes a chain event to the log; its message id makes a
// repeat (a redelivered final fact) a duplicate. An end's id carries the
// attempt of the step that ended the chain: an operator's retry of a
// failed step can resume the chain, which may end again.
func (a *App) recordChain(ctx context.Context, queue string, ce events.ChainEvent, attempt int) error {
	if err := ce.Check(); err != nil {
		return err
	}
	data, err := json.Marshal(ce)
	if err != nil {
		return err
	}
	msgID := "chain:" + ce.Chain + ":" + ce.Action + ":" + strconv.Itoa(ce.Step)
	if ce.Action == events.ChainEnd {
		msgID += ":" + strconv.Itoa(attempt)
	}
	ev := events.Event{
		ID: msgID, Source: a.source, Type: events.TypeChain, Subject: ce.Chain, Time: a.cfg.Now().UTC(),
		DataContentType: events.ContentTypeJSON, Data: data, TaskID: ce.TaskID, Attempt: attempt,
	}
	if _, err := a.b.PublishOwn(ctx, a.source, events.ChainSubject(queue), msgID, &ev); err != nil {
		return fmt.Errorf("recording the %s of chain %s: %w", ce.Action, ce.Chain, err)
	}
	return nil
}

// WaitChain blocks until chain id ends and returns the record of the step
// that ended it: the last step's on success, else the failed step's with a
// *ChainError (whose Steps has every step's record up to it). Use Result
// to decode the chain's result; WaitChainSteps returns every step's.
func (a *App) WaitChain(ctx context.Context, id string) (events.Task, error) {
	r, err := a.WaitChainSteps(ctx, id)
	return r.Last(), err
}

// WaitChainSteps blocks until chain id ends and returns every step that
// ran, each with its own status and result, in order. The error is nil
// when the chain succeeded; a *ChainError when a step ended it in error or
// cancel (the result then holds the steps up to that one, and Status says
// which); any other error means the wait did not end (ctx, the bus), and
// the result holds the steps that had ended by then.
func (a *App) WaitChainSteps(ctx context.Context, id string) (ChainResult, error) {
	r := ChainResult{ID: id, Status: ChainRunning}
	for i := 0; ; i++ {
		t, err := a.Wait(ctx, ChainStepID(id, i))
		if err != nil {
			return r, fmt.Errorf("waiting for step %d of chain %s: %w", i, id, err)
		}
		if r.Total == 0 {
			link, ok := chainLink(t)
			if !ok {
				return r, fmt.Errorf("task %s is not a step of chain %s", t.ID, id)
			}
			r.Total = link.Steps
		}
		r.Steps = append(r.Steps, t)
		switch events.ChainAfter(t.Status, i, r.Total) {
		case events.ChainNext:
		case events.ChainSucceeds:
			r.Status = events.StatusSuccess
			return r, nil
		case events.ChainFails:
			r.Status = t.Status
			return r, &ChainError{ID: id, Step: i, Task: t, Steps: slices.Clone(r.Steps)}
		case events.ChainWaits:
			return r, fmt.Errorf("step %d of chain %s: Wait returned status %s", i, id, t.Status)
		}
	}
}

func chainLink(t events.Task) (events.ChainLink, bool) {
	raw := t.Extra[events.ExtraChain]
	if len(raw) == 0 {
		return events.ChainLink{}, false
	}
	var l events.ChainLink
	if json.Unmarshal(raw, &l) != nil || !events.ValidToken(l.ID) || l.Steps < 1 || l.Step < 0 || l.Step >= l.Steps ||
		t.ID != ChainStepID(l.ID, l.Step) {
		// A task that names a chain it is not a step of (its id is not
		// the step's) does not advance it.
		return events.ChainLink{}, false
	}
	return l, true
}

// chains is an app's part in advancing chains.
type chains struct {
	mu   sync.Mutex
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext
	// While the app is started and ChainConsumer does not exist (no chain
	// was ever started), it waits instead of consuming (awaitChains):
	// watch, a core subscription to the chain events, and Chain poke wake;
	// quit ends the wait and done says it ended.
	watch *nats.Subscription
	wake  chan struct{}
	quit  chan struct{}
	done  chan struct{}
	// hook, when set (tests), runs before (when=0) and after (when=1) a
	// step's next is submitted; an error stops the handling as a crash
	// would, leaving the fact unacknowledged.
	hook func(when int, t events.Task) error
	// off (benchmarks) runs no advancing: the baseline of its cost.
	off bool
}

// ensureChainConsumer creates ChainConsumer unless it exists, and has this
// app consume it if it waits for it (an app started before any chain).
func (a *App) ensureChainConsumer(ctx context.Context) error {
	a.flow.mu.Lock()
	defer a.flow.mu.Unlock()
	if err := a.chainConsumerLocked(ctx, true); err != nil {
		return err
	}
	poke(a.flow.wake)
	return nil
}

// errNoChains is chainConsumerLocked's answer when ChainConsumer does not
// exist: no chain was ever started.
var errNoChains = errors.New("no chain consumer")

// chainConsumerLocked sets a.flow.cons to ChainConsumer, created if create
// is set, else errNoChains when it does not exist. a.flow.mu is held.
func (a *App) chainConsumerLocked(ctx context.Context, create bool) error {
	if a.flow.cons != nil {
		return nil
	}
	s := a.b.EventStream()
	if s == nil {
		return bus.ErrStateUnavailable
	}
	if !create {
		c, err := s.Consumer(ctx, ChainConsumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return errNoChains
		}
		if err != nil {
			return fmt.Errorf("looking up the chain consumer: %w", err)
		}
		a.flow.cons = c
		return nil
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       ChainConsumer,
		Description:   "qtasks chains: the final fact of every task attempt, to advance chains",
		FilterSubject: events.FactSubject(events.StorageRemoveFinishedTask, "*"),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       a.cfg.AckWait,
		MaxDeliver:    -1,
	}
	c, err := s.CreateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		// Made by an app with another AckWait: use it as it is.
		c, err = s.Consumer(ctx, ChainConsumer)
	}
	if err != nil {
		return fmt.Errorf("creating the chain consumer: %w", err)
	}
	a.flow.cons = c
	return nil
}

// poke signals wake (nil: nobody waits) without blocking.
func poke(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// startFlow starts the app's chain advancing (App.Start). ChainConsumer
// is made by the first Chain, before that chain's start is recorded and
// its first step submitted, so no step's final fact precedes it: until a
// chain exists, the app does not consume every final fact (a delivery and
// an ack per task, for nothing) but waits for the consumer (awaitChains),
// woken by any chain event on the bus and, should it miss one (a
// reconnection), looking again every AckWait/3. Facts delivered late stay
// with the durable consumer meanwhile; the app that started the chain, if
// started, consumes at once.
func (a *App) startFlow(ctx context.Context) error {
	if a.flow.off {
		return nil
	}
	a.flow.mu.Lock()
	defer a.flow.mu.Unlock()
	if a.flow.cc != nil || a.flow.quit != nil {
		return nil
	}
	// Watch first, then look: a chain started in between wakes the wait.
	wake := make(chan struct{}, 1)
	watch, err := a.b.Conn().Subscribe(events.SubjectChain+".>", func(*nats.Msg) { poke(wake) })
	if err != nil {
		return fmt.Errorf("watching for chains: %w", err)
	}
	err = a.chainConsumerLocked(ctx, false)
	if err == nil {
		err = a.consumeChainsLocked()
	}
	if !errors.Is(err, errNoChains) {
		_ = watch.Unsubscribe()
		return err
	}
	a.flow.watch, a.flow.wake = watch, wake
	a.flow.quit, a.flow.done = make(chan struct{}), make(chan struct{})
	go a.awaitChains(wake, a.flow.quit, a.flow.done)
	return nil
}

// awaitChains waits for ChainConsumer to exist, then consumes it; it ends
// when it does or when quit is closed (stopFlow).
func (a *App) awaitChains(wake, quit, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(max(a.cfg.AckWait/3, time.Second))
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-wake:
		case <-t.C:
		}
		if a.tryConsumeChains(quit) {
			return
		}
	}
}

// tryConsumeChains consumes ChainConsumer if it exists, and reports whether
// the wait is over (it does, or quit was closed).
func (a *App) tryConsumeChains(quit chan struct{}) bool {
	a.flow.mu.Lock()
	defer a.flow.mu.Unlock()
	select {
	case <-quit:
		return true
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.AckWait)
	defer cancel()
	err := a.chainConsumerLocked(ctx, false)
	if err == nil {
		err = a.consumeChainsLocked()
	}
	if errors.Is(err, errNoChains) {
		return false
	}
	if err != nil {
		a.log.WarnContext(ctx, "waiting for chains: looking up their consumer failed; looking again", "err", err)
		return false
	}
	_ = a.flow.watch.Unsubscribe()
	a.flow.watch = nil
	return true
}

// consumeChainsLocked consumes ChainConsumer (a.flow.cons), handing each
// final fact to advanceChain. a.flow.mu is held.
func (a *App) consumeChainsLocked() error {
	if a.flow.cc != nil {
		return nil
	}
	cc, err := a.flow.cons.Consume(func(m jetstream.Msg) {
		if !chainFact(m.Data()) {
			_ = m.Ack() // most tasks are no chain's steps: no decoding, no context
			return
		}
		hctx, cancel := context.WithTimeout(context.Background(), a.cfg.AckWait)
		defer cancel()
		switch err := a.advanceChain(hctx, m.Data()); {
		case err == nil:
			_ = m.Ack()
		case errors.Is(err, errChainCrash):
			// A simulated crash (tests): neither ack nor nak.
		default:
			a.log.WarnContext(hctx, "advancing a chain failed; it is retried", "err", err)
			_ = m.NakWithDelay(time.Second)
		}
	}, jetstream.PullMaxMessages(16))
	if err != nil {
		return fmt.Errorf("consuming final facts for chains: %w", err)
	}
	a.flow.cc = cc
	return nil
}

// stopFlow stops the chain advancing (App.Stop); a fact being handled is
// finished first.
func (a *App) stopFlow() {
	a.flow.mu.Lock()
	quit, done := a.flow.quit, a.flow.done
	a.flow.quit, a.flow.done = nil, nil
	a.flow.mu.Unlock()
	if quit != nil {
		close(quit)
		<-done
	}
	a.flow.mu.Lock()
	cc, watch := a.flow.cc, a.flow.watch
	a.flow.cc, a.flow.watch, a.flow.wake = nil, nil, nil
	a.flow.mu.Unlock()
	if watch != nil {
		_ = watch.Unsubscribe()
	}
	if cc != nil {
		cc.Drain()
		<-cc.Closed()
	}
}

// chainFact reports whether a final fact may be a chain step's: most are
// not, and are told by a byte search without decoding.
func chainFact(data []byte) bool { return bytes.Contains(data, []byte(`"`+events.ExtraChain+`"`)) }

var errChainCrash = errors.New("simulated crash")

// advanceChain handles one final fact: for the final record of a chain
// step, it submits the next step or records the chain's end, as
// events.ChainAfter decides. Doing it again is harmless: the next step's
// idempotency key and the chain events' message ids are derived from the
// chain and the step.
func (a *App) advanceChain(ctx context.Context, data []byte) error {
	if !chainFact(data) {
		return nil // most tasks are no chain's steps: no decoding
	}
	var f events.Fact
	if err := json.Unmarshal(data, &f); err != nil {
		return nil //nolint:nilerr // not ours to judge; the projection rejects it
	}
	var mp events.ModelPayload
	if err := json.Unmarshal(f.Input, &mp); err != nil {
		return nil //nolint:nilerr // see above
	}
	t := mp.Model
	link, ok := chainLink(t)
	if !ok {
		return nil
	}
	queue := t.Queue
	switch events.ChainAfter(t.Status, link.Step, link.Steps) {
	case events.ChainWaits:
		return nil
	case events.ChainSucceeds:
		return a.recordChain(ctx, queue, events.ChainEvent{
			Chain: link.ID, Action: events.ChainEnd, Step: link.Step,
			Steps: link.Steps, TaskID: t.ID, Status: events.StatusSuccess,
		}, t.Attempt)
	case events.ChainFails:
		return a.recordChain(ctx, queue, events.ChainEvent{
			Chain: link.ID, Action: events.ChainEnd, Step: link.Step,
			Steps: link.Steps, TaskID: t.ID, Status: t.Status, Error: t.Error,
		}, t.Attempt)
	case events.ChainNext:
	}
	if len(link.Rest) == 0 {
		return nil // a link that says more steps follow but lists none: not one Chain made
	}
	if h := a.flow.hook; h != nil {
		if err := h(0, t); err != nil {
			return err
		}
	}
	next := events.ChainLink{ID: link.ID, Step: link.Step + 1, Steps: link.Steps, Prev: t.ID, Rest: link.Rest[1:]}
	// The step's event first, so that the log has it before the step's
	// own facts; a crash before the submission submits it on redelivery.
	if err := a.recordChain(ctx, queue, events.ChainEvent{
		Chain: link.ID, Action: events.ChainStep, Step: next.Step,
		Steps: link.Steps, TaskID: ChainStepID(link.ID, next.Step), Prev: t.ID,
	}, 0); err != nil {
		return err
	}
	nt, err := a.submitStep(ctx, link.Rest[0], &t, next)
	if err != nil {
		if errors.Is(err, ErrInvalidInput) || errors.Is(err, events.ErrTooLarge) {
			// It would fail the same way every time: the chain ends here.
			return a.recordChain(ctx, queue, events.ChainEvent{
				Chain: link.ID, Action: events.ChainEnd, Step: link.Step,
				Steps: link.Steps, TaskID: t.ID, Status: events.StatusError,
				Error: fmt.Sprintf("step %d could not be submitted: %v", next.Step, err),
			}, t.Attempt)
		}
		return err
	}
	if h := a.flow.hook; h != nil {
		return h(1, nt)
	}
	return nil
}
