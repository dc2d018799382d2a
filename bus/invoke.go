package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// ErrPluginTimeout is returned by Invoke when no patch arrives in time.
var ErrPluginTimeout = errors.New("plugin did not answer in time")

// DefaultPluginTimeout bounds one invocation when the plugin registered none.
const DefaultPluginTimeout = 5 * time.Second

// LocalHandler answers an invocation inside the executor's process. It
// returns the patch event (Type events.TypePatch; no data means no change).
type LocalHandler func(ctx context.Context, invocation events.Event) (events.Event, error)

// Reply is a mutator's answer to an invocation.
type Reply struct {
	// Patch is the patch event, already decoded and validated.
	Patch events.Event
	// Subject is where the patch was published, for events.ValidatePatch.
	Subject string
	// InvokeSeq and PatchSeq are the stream sequences of the invocation and
	// the patch, when known at reply time (0 otherwise).
	InvokeSeq uint64
	PatchSeq  uint64
	// Pending are the publishes of a local invocation and patch, for the
	// caller to wait on with its other facts.
	Pending []jetstream.PubAckFuture
}

// invoker waits for patches with one core-NATS subscription on all patch
// subjects: messages captured by the stream are still delivered to core
// subscribers, so the executor needs no consumer of its own.
type invoker struct {
	b       *Bus
	sub     *nats.Subscription
	mu      sync.Mutex
	pending map[string]waiter
}

// waiter is an invocation awaiting its patch from plugin.
type waiter struct {
	plugin string
	ch     chan *nats.Msg
}

func newInvoker(b *Bus) (*invoker, error) {
	in := &invoker{b: b, pending: make(map[string]waiter)}
	sub, err := b.nc.Subscribe(events.SubjectPatch+".>", in.onPatch)
	if err != nil {
		return nil, fmt.Errorf("subscribing to patches: %w", err)
	}
	// A busy executor must not drop patches: a dropped patch is a timeout.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("subscribing to patches: %w", err)
	}
	in.sub = sub
	return in, nil
}

func (in *invoker) onPatch(m *nats.Msg) {
	id := events.HeaderValue(events.Headers(m.Header), events.HeaderPrefix+events.ExtInvocation)
	if id == "" {
		return
	}
	in.mu.Lock()
	w, ok := in.pending[id]
	in.mu.Unlock()
	if !ok {
		return
	}
	// Only the invoked plugin may answer: invocation ids are predictable,
	// and a reply on another plugin's subject must not decide (or fail) the
	// call. It is ignored, and the wait goes on.
	if ps, err := events.ParseSubject(m.Subject); err != nil || ps.Plugin != w.plugin {
		in.b.log.Warn("ignoring a patch from another plugin", "subject", m.Subject, "invocation", id, "invoked", w.plugin)
		return
	}
	select {
	case w.ch <- m:
	default: // a second answer to the same invocation: the first one counts
	}
}

func (in *invoker) stop() {
	if in.sub != nil {
		_ = in.sub.Unsubscribe()
	}
}

// RegisterLocal makes the bus answer invocations of plugin through h in
// process, without a round trip to JetStream. Invocation and patch are still
// written to the log.
func (b *Bus) RegisterLocal(plugin string, h LocalHandler) { b.local.Store(plugin, h) }

// UnregisterLocal removes a local handler.
func (b *Bus) UnregisterLocal(plugin string) { b.local.Delete(plugin) }

// Invoke sends invocation inv to plugin p and waits for its patch, for at
// most p's timeout. inv must carry ID, Trigger, TaskID and Data; Invoke sets
// the plugin attributes, type and time. A local plugin is called directly.
func (b *Bus) Invoke(ctx context.Context, p events.PluginInfo, inv events.Event) (Reply, error) {
	if b.inv == nil {
		return Reply{}, errors.New("a plugin's bus (Config.Plugin) cannot invoke plugins")
	}
	timeout := time.Duration(p.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = DefaultPluginTimeout
	}
	inv.Type = events.TypeInvokePrefix + inv.Trigger
	inv.Plugin = p.Name
	inv.PluginVersion = p.Version
	inv.TimeoutMS = int(timeout / time.Millisecond)
	if inv.DataContentType == "" {
		inv.DataContentType = events.ContentTypeJSON
	}
	if inv.Time.IsZero() {
		inv.Time = time.Now()
	}
	subject := events.InvokeSubject(p.Name, inv.Trigger)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrPluginTimeout)
	defer cancel()

	if h, ok := b.local.Load(p.Name); ok {
		return b.invokeLocal(ctx, h.(LocalHandler), subject, p, inv)
	}

	ch := make(chan *nats.Msg, 1)
	in := b.inv
	in.mu.Lock()
	in.pending[inv.ID] = waiter{plugin: p.Name, ch: ch}
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		delete(in.pending, inv.ID)
		in.mu.Unlock()
	}()
	// No Nats-Msg-Id: the invocation is published once, and the duplicate
	// window would keep its id in server memory for nothing.
	fut, err := b.PublishAsync(subject, "", &inv)
	if err != nil {
		return Reply{}, err
	}
	var reply Reply
	for {
		select {
		case ack := <-fut.Ok():
			reply.InvokeSeq = ack.Sequence
			continue
		case err := <-fut.Err():
			return Reply{}, fmt.Errorf("publishing invocation: %w", err)
		case m := <-ch:
			if reply.InvokeSeq == 0 {
				// The plugin read the invocation from the stream, so it is
				// stored, but its ack can be processed after the patch
				// (another subscription, another goroutine). Wait for it, so
				// that the reply always knows where the invocation is.
				select {
				case ack := <-fut.Ok():
					reply.InvokeSeq = ack.Sequence
				case err := <-fut.Err():
					return Reply{}, fmt.Errorf("publishing invocation: %w", err)
				case <-ctx.Done(): // answered in time; the sequence stays unknown
				}
			}
			ev, err := events.Decode(events.Headers(m.Header), m.Data)
			if err != nil {
				return Reply{}, fmt.Errorf("decoding patch: %w", err)
			}
			if ev.Type != events.TypePatch {
				return Reply{}, fmt.Errorf("%w: reply type %q, want %q", events.ErrInvalidEvent, ev.Type, events.TypePatch)
			}
			reply.Patch, reply.Subject = ev, m.Subject
			return reply, nil
		case <-ctx.Done():
			return Reply{}, context.Cause(ctx)
		}
	}
}

func (b *Bus) invokeLocal(ctx context.Context, h LocalHandler, subject string, p events.PluginInfo, inv events.Event) (Reply, error) {
	invFut, err := b.PublishAsync(subject, "", &inv)
	if err != nil {
		return Reply{}, err
	}
	type result struct {
		ev  events.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("plugin %s panicked: %v", p.Name, r)}
			}
		}()
		ev, err := h(ctx, inv)
		done <- result{ev, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return Reply{}, context.Cause(ctx)
	}
	patch := r.ev
	if r.err != nil {
		patch = events.Event{PluginError: r.err.Error()}
	}
	FillPatch(&patch, p, inv)
	if err := patch.Validate(); err != nil {
		return Reply{}, fmt.Errorf("local plugin %s: %w", p.Name, err)
	}
	patchSubject := events.PatchSubject(p.Name, inv.Trigger)
	patchFut, err := b.PublishAsync(patchSubject, "", &patch)
	if err != nil {
		return Reply{}, err
	}
	return Reply{Patch: patch, Subject: patchSubject, Pending: []jetstream.PubAckFuture{invFut, patchFut}}, nil
}

// FillPatch sets the attributes that tie a patch event to the invocation it
// answers: id, source, type, time, task and trigger attributes.
func FillPatch(patch *events.Event, p events.PluginInfo, inv events.Event) {
	patch.ID = inv.ID + ":patch"
	if patch.Source == "" {
		patch.Source = "qtasks/plugin/" + p.Name
	}
	patch.Type = events.TypePatch
	patch.Subject = inv.Subject
	if patch.Time.IsZero() {
		patch.Time = time.Now()
	}
	patch.TaskID = inv.TaskID
	patch.TaskName = inv.TaskName
	patch.Trigger = inv.Trigger
	patch.Attempt = inv.Attempt
	patch.Run = inv.Run
	patch.Plugin = p.Name
	if patch.PluginVersion == "" {
		patch.PluginVersion = p.Version
	}
	patch.Invocation = inv.ID
	patch.TraceParent = inv.TraceParent
	patch.Replay = inv.Replay
	if len(patch.Data) == 0 {
		patch.DataContentType = ""
	}
}
