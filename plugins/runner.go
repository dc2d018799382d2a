package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/spans"
)

// Runner hosts one plugin. Stop it when done.
type Runner struct {
	b     *bus.Bus
	spec  Spec
	info  events.PluginInfo
	log   *slog.Logger
	state *bus.PluginState

	cc      jetstream.ConsumeContext // mutators
	it      jetstream.MessagesContext
	sem     chan struct{}
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
	local   bool
	stopped sync.Once
	tracer  trace.Tracer
}

// DurableName is the durable consumer of plugin name.
func DurableName(name string) string { return bus.DurableName(name) }

// Start runs spec's plugin as a durable JetStream consumer on b: the plugin
// may live in any process that reaches the NATS server. It registers the
// plugin through the registrar, which creates the consumer before it
// stores the registration (so no invocation is missed), then consumes; it
// returns once both are done. A registration the registrar refuses is an
// error wrapping bus.ErrRegistrationRefused, with the registrar's reason.
func Start(ctx context.Context, b *bus.Bus, spec Spec) (*Runner, error) {
	r, err := newRunner(b, spec, false)
	if err != nil {
		return nil, err
	}
	if s, ok := spec.Plugin.(Starter); ok {
		if err := s.Start(ctx); err != nil {
			return nil, fmt.Errorf("starting plugin %s: %w", spec.Name, err)
		}
	}
	if err := r.register(ctx); err != nil {
		return nil, err
	}
	if err := r.consume(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Local runs a mutator inside the process of the executor that owns b: the
// executor calls it directly instead of through a consumer, and the
// invocation and patch are still written to the log. Every executor process
// that may fire the plugin's triggers must run Local for it.
// Observers are always run as consumers; Local starts them like Start.
func Local(ctx context.Context, b *bus.Bus, spec Spec) (*Runner, error) {
	if spec.Mode == Observer {
		return Start(ctx, b, spec)
	}
	r, err := newRunner(b, spec, true)
	if err != nil {
		return nil, err
	}
	if s, ok := spec.Plugin.(Starter); ok {
		if err := s.Start(ctx); err != nil {
			return nil, fmt.Errorf("starting plugin %s: %w", spec.Name, err)
		}
	}
	b.RegisterLocal(spec.Name, r.localHandler)
	if err := r.register(ctx); err != nil {
		b.UnregisterLocal(spec.Name)
		return nil, err
	}
	return r, nil
}

// Run is Start, then blocks until ctx ends, then Stop.
func Run(ctx context.Context, b *bus.Bus, spec Spec) error {
	r, err := Start(ctx, b, spec)
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return r.Stop(sctx)
}

func newRunner(b *bus.Bus, spec Spec, local bool) (*Runner, error) {
	if err := spec.withDefaults(); err != nil {
		return nil, err
	}
	r := &Runner{
		b: b, spec: spec, info: spec.info(local), local: local,
		log:    b.Logger().With("component", "plugin", "plugin", spec.Name, "version", spec.Version),
		state:  b.PluginState(spec.Name),
		sem:    make(chan struct{}, spec.Concurrency),
		tracer: spec.TracerProvider.Tracer(spans.Scope),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

func (r *Runner) register(ctx context.Context) error {
	reg := bus.Registration{PluginInfo: r.info}
	if !r.local {
		reg.Consumer = &bus.ConsumerSettings{MaxDeliver: r.spec.MaxDeliver}
		if r.spec.Mode == Observer {
			reg.Consumer.AckWaitMS = r.spec.AckWait.Milliseconds()
			reg.Consumer.MaxAckPending = observerMaxAckPending
			reg.Consumer.DeliverNew = r.spec.DeliverNew
		} else {
			reg.Consumer.AckWaitMS = max(2*r.spec.Timeout, 5*time.Second).Milliseconds()
			reg.Consumer.MaxAckPending = 4 * r.spec.Concurrency
		}
	}
	// RegisterWith returns once this bus's registry shows the entry (if
	// it watches the registry: a plugin's bus does not).
	info, err := r.b.Registry().RegisterWith(ctx, reg)
	if errors.Is(err, bus.ErrRegistrationRefused) && reg.ReadsBatches && len(reg.Triggers) > 0 {
		// A grant restricted to some triggers does not allow reading phase
		// messages; the facts of granted triggers are stored alone, so
		// the observer needs not. Any other reason refuses this one too.
		r.log.InfoContext(ctx, "registering without reads_batches", "reason", err)
		reg.ReadsBatches = false
		info, err = r.b.Registry().RegisterWith(ctx, reg)
	}
	if err != nil {
		return err
	}
	r.info = info
	r.log.InfoContext(ctx, "plugin registered", "mode", info.Mode, "triggers", info.Triggers, "order", info.Order)
	return nil
}

// Info is the plugin's registration.
func (r *Runner) Info() events.PluginInfo { return r.info }

// Stop stops taking calls, waits for calls in progress (until ctx ends),
// and stops the plugin. The registration stays: a plugin that is down is
// timed out and handled by its failure policy, which is what a restart
// should not change. Use Deregister to remove it.
func (r *Runner) Stop(ctx context.Context) error {
	var err error
	r.stopped.Do(func() {
		r.halt()
		done := make(chan struct{})
		go func() { r.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			r.cancel()
			<-done
		}
		r.cancel()
		if s, ok := r.spec.Plugin.(Stopper); ok {
			err = s.Stop(ctx)
		}
	})
	return err
}

// Deregister asks the registrar to remove the plugin from the registry
// (executors stop invoking it) and to delete its consumer. Stop the runner
// first.
func (r *Runner) Deregister(ctx context.Context) error {
	return r.b.Registry().Deregister(ctx, r.spec.Name)
}

func (r *Runner) halt() {
	if r.local {
		r.b.UnregisterLocal(r.spec.Name)
	}
	if r.cc != nil {
		r.cc.Drain()
		<-r.cc.Closed()
	}
	if r.it != nil {
		r.it.Drain()
	}
}

// consume reads the consumer the registrar created for the plugin.
func (r *Runner) consume(ctx context.Context) error {
	c, err := r.b.JetStream().Consumer(ctx, bus.StreamEvents, DurableName(r.spec.Name))
	if err != nil {
		return fmt.Errorf("plugin %s: looking up its consumer: %w", r.spec.Name, err)
	}
	if r.spec.Mode == Observer {
		r.it, err = c.Messages(jetstream.PullMaxMessages(500))
		if err != nil {
			return fmt.Errorf("plugin %s: consuming: %w", r.spec.Name, err)
		}
		r.wg.Add(1)
		go r.observe()
		return nil
	}
	r.cc, err = c.Consume(func(m jetstream.Msg) {
		r.sem <- struct{}{}
		r.wg.Add(1)
		go func() {
			defer func() { <-r.sem; r.wg.Done() }()
			r.mutate(m)
		}()
	}, jetstream.PullMaxMessages(2*r.spec.Concurrency))
	if err != nil {
		return fmt.Errorf("plugin %s: consuming: %w", r.spec.Name, err)
	}
	return nil
}

// call runs the plugin, turning a panic into an error.
func (r *Runner) call(ctx context.Context, c *Call) (p *Patch, err error) {
	defer func() {
		if x := recover(); x != nil {
			r.log.ErrorContext(ctx, "plugin panicked", "trigger", c.Trigger, "panic", x, "stack", string(debug.Stack()))
			p, err = nil, fmt.Errorf("plugin %s panicked: %v", r.spec.Name, x)
		}
	}()
	return r.spec.Plugin.Trigger(ctx, c)
}

func (r *Runner) mutate(m jetstream.Msg) {
	d, err := bus.Deliver(m)
	if err != nil {
		r.deadLetter(m, nil, err)
		return
	}
	inv := d.Events[0].Event
	if err = d.Events[0].Err; err != nil || len(d.Events) > 1 || inv.Type != events.TypeInvokePrefix+inv.Trigger || inv.Plugin != r.spec.Name {
		if err == nil {
			err = fmt.Errorf("%w: not an invocation of %s", events.ErrInvalidEvent, r.spec.Name)
		}
		r.deadLetter(m, d, err)
		return
	}
	// A stale invocation (its executor gave up) gets no answer.
	deadline := inv.Time.Add(time.Duration(inv.TimeoutMS) * time.Millisecond)
	if inv.TimeoutMS > 0 && time.Now().After(deadline) {
		_ = m.Ack()
		return
	}
	ctx, cancel := context.WithDeadline(r.ctx, deadline)
	if inv.TimeoutMS == 0 {
		ctx, cancel = context.WithTimeout(r.ctx, r.spec.Timeout)
	}
	defer cancel()
	call := &Call{
		Trigger: inv.Trigger, TaskID: inv.TaskID, TaskName: inv.TaskName, Attempt: inv.Attempt, Run: inv.Run,
		Payload: inv.Data, Event: inv, State: r.state, Seq: d.Seq(), Deliveries: d.Deliveries,
	}
	patch := r.answer(ctx, call)
	if inv.TimeoutMS > 0 && !time.Now().Before(deadline) {
		// Answered at or past the deadline: the executor has stopped
		// waiting and records a timeout (PROTOCOL.md §9.2), so a patch now
		// would only be noise in the log.
		_ = m.Ack()
		return
	}
	bus.FillPatch(&patch, r.info, inv)
	// No Nats-Msg-Id (protocol 2): a patch with one is rejected, since a
	// message stored first under the same id would silence it. A patch
	// written twice (an invocation redelivered after a crash) is stored
	// twice; the executor takes the first.
	if _, err := r.b.Publish(ctx, events.PatchSubject(r.spec.Name, inv.Trigger), "", &patch); err != nil {
		r.log.Warn("publishing patch", "invocation", inv.ID, "err", err)
		_ = m.Nak()
		return
	}
	_ = m.Ack()
}

// answer calls the plugin and turns its result into a patch event. Its
// span is a child of the invocation's ce-traceparent: the executor's span
// of the call.
func (r *Runner) answer(ctx context.Context, call *Call) events.Event {
	inv := &call.Event
	ctx, span := r.tracer.Start(spans.WithTraceParent(ctx, inv.TraceParent), "plugin "+r.spec.Name, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(spans.Plugin.String(r.spec.Name), spans.Trigger.String(inv.Trigger),
			spans.TaskID.String(inv.TaskID), spans.Invocation.String(inv.ID))
	}
	defer span.End()
	p, err := r.call(ctx, call)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return events.Event{PluginError: err.Error(), PluginVersion: r.spec.Version}
	}
	ev := events.Event{PluginVersion: r.spec.Version}
	if p != nil && len(p.Body) > 0 {
		ev.DataContentType, ev.Data = p.ContentType, p.Body
	}
	return ev
}

func (r *Runner) localHandler(ctx context.Context, inv events.Event) (events.Event, error) {
	call := &Call{
		Trigger: inv.Trigger, TaskID: inv.TaskID, TaskName: inv.TaskName, Attempt: inv.Attempt, Run: inv.Run,
		Payload: inv.Data, Event: inv, State: r.state,
	}
	return r.answer(ctx, call), nil
}

func (r *Runner) observe() {
	defer r.wg.Done()
	// A fact whose ack wait ran out while it waited behind others in the
	// prefetch buffer is delivered again, behind its first delivery, which
	// this runner handles: the second one is acked, not handed to the
	// plugin. Only recent sequences are remembered: a delivery can be
	// that late only while at most maxAckPending others are in flight.
	// (A sequence below those seen is no repeat: after a restart, facts
	// left unacked come back only once their ack wait has run out, behind
	// newer ones.)
	seen := newSeqWindow(observerSeen)
	for {
		m, err := r.it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			r.log.Warn("consuming facts", "err", err)
			continue
		}
		d, err := bus.Deliver(m)
		if err != nil {
			r.deadLetter(m, nil, err)
			continue
		}
		if !seen.add(d.Seq()) {
			_ = d.Ack()
			continue
		}
		// A phase message holds facts of many triggers: the plugin gets
		// those of its own, in order. Its consumer reads only its
		// triggers' subjects besides, so every fact alone is its own.
		var failed []string
		for i := range d.Events {
			s := &d.Events[i]
			if s.Packed() && s.Err == nil && !r.observes(s.Event.Trigger) {
				continue
			}
			cerr := r.observeOne(d, s)
			if r.ctx.Err() != nil {
				_ = d.Nak() // the message again after a restart, whole
				return
			}
			if cerr != nil {
				if !s.Packed() {
					failed = append(failed, cerr.Error())
					continue
				}
				failed = append(failed, fmt.Sprintf("fact %d (%s) of the phase message: %v", s.Index, s.Event.ID, cerr))
			}
		}
		if len(failed) > 0 {
			r.deadLetter(m, d, errors.New(strings.Join(failed, "; ")))
			continue
		}
		_ = d.Ack()
	}
}

// observes reports whether the observer is named for trigger (or global).
func (r *Runner) observes(trigger string) bool {
	return len(r.spec.Triggers) == 0 || slices.Contains(r.spec.Triggers, trigger)
}

// observeOne hands one fact to the plugin, retrying a failing call here
// rather than having it redelivered behind later facts (facts are handled
// in order). It returns why the fact could not be handled.
func (r *Runner) observeOne(d *bus.Delivery, s *bus.Stored) error {
	if s.Err != nil {
		return s.Err
	}
	ev := s.Event
	var fact events.Fact
	if err := json.Unmarshal(ev.Data, &fact); err != nil {
		return fmt.Errorf("%w: fact data: %w", events.ErrInvalidEvent, err)
	}
	payload := fact.Output
	if len(payload) == 0 {
		payload = fact.Input
	}
	call := &Call{
		Trigger: ev.Trigger, TaskID: ev.TaskID, TaskName: ev.TaskName, Attempt: ev.Attempt, Run: ev.Run,
		Payload: payload, Fact: &fact, Event: ev, State: r.state, Seq: s.Seq, Index: s.Index, Deliveries: d.Deliveries,
	}
	var cerr error
	for attempt := 1; attempt <= r.spec.MaxDeliver; attempt++ {
		ctx, cancel := context.WithTimeout(r.ctx, r.spec.Timeout)
		_, cerr = r.call(ctx, call)
		cancel()
		if cerr == nil || r.ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		case <-r.ctx.Done():
		}
	}
	return cerr
}

// deadLetter records a message the plugin cannot process and terminates
// its delivery: JetStream has no dead-letter queue of its own. d is nil
// for a message that could not be read.
func (r *Runner) deadLetter(m jetstream.Msg, d *bus.Delivery, cause error) {
	if events.IsDeadSubject(m.Subject()) {
		// A dead letter is never dead-lettered: a consumer of dead letters
		// would otherwise make each one it cannot process produce another.
		r.log.Warn("terminating a dead letter it cannot process, without a dead letter about it", "subject", m.Subject(), "reason", cause.Error())
		_ = m.Term()
		return
	}
	dl := events.DeadLetter{Stream: bus.StreamEvents, Consumer: DurableName(r.spec.Name), Subject: m.Subject(), Reason: cause.Error()}
	if d != nil {
		dl.Sequence, dl.Deliveries = d.Seq(), d.Deliveries
	}
	r.log.Error("dead-lettering message", "seq", dl.Sequence, "reason", dl.Reason)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.b.DeadLetter(ctx, r.spec.Name, "qtasks/plugin/"+r.spec.Name, dl); err != nil {
		r.log.Error("recording dead letter", "err", err)
		_ = m.Nak()
		return
	}
	_ = m.Term()
}

const (
	// observerMaxAckPending bounds the facts delivered to an observer and
	// not yet acked.
	observerMaxAckPending = 1000
	// observerSeen is how many handled sequences an observer remembers to
	// tell a repeated delivery: more than can be in flight at once.
	observerSeen = 4 * observerMaxAckPending
)

// seqWindow remembers the last n stream sequences added.
type seqWindow struct {
	ring []uint64
	next int
	set  map[uint64]struct{}
}

func newSeqWindow(n int) *seqWindow {
	return &seqWindow{ring: make([]uint64, n), set: make(map[uint64]struct{}, n)}
}

// add records seq and reports whether it was new to the window.
func (w *seqWindow) add(seq uint64) bool {
	if _, ok := w.set[seq]; ok {
		return false
	}
	if old := w.ring[w.next]; old != 0 {
		delete(w.set, old)
	}
	w.ring[w.next] = seq
	w.next = (w.next + 1) % len(w.ring)
	w.set[seq] = struct{}{}
	return true
}
