package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// ErrPluginTimeout is returned by Invoke when no patch arrives in time.
var ErrPluginTimeout = errors.New("plugin did not answer in time")

// DefaultPluginTimeout bounds one invocation when the plugin registered none.
const DefaultPluginTimeout = events.DefaultPluginTimeoutMS * time.Millisecond

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

// invoker waits for patches with one ordered push consumer per bus on all
// patch subjects (ephemeral, in memory, delivering only patches stored
// after it was made): the executor acts only on patches the log holds. A
// patch JetStream refused (headers over its limit, an id dropped as a
// duplicate) never reaches it, so it cannot decide a task.
type invoker struct {
	b       *Bus
	sub     *nats.Subscription
	mu      sync.Mutex
	pending map[string]waiter
}

// waiter is an invocation awaiting its patch from plugin.
type waiter struct {
	plugin string
	ch     chan patchMsg
}

// patchMsg is a stored patch as the consumer delivered it.
type patchMsg struct {
	m   *nats.Msg
	seq uint64
}

func newInvoker(b *Bus) (*invoker, error) {
	in := &invoker{b: b, pending: make(map[string]waiter)}
	js, err := b.nc.JetStream()
	if err != nil {
		return nil, fmt.Errorf("consuming patches: %w", err)
	}
	// A push consumer, not a pull one: no pull request stands between a
	// stored patch and the waiting executor (docs/ARCHITECTURE.md measures
	// the round trip). Ordered: in memory, no acks, recreated from the last
	// sequence seen if the server loses it.
	sub, err := js.Subscribe(events.SubjectPatch+".>", in.onPatch,
		nats.OrderedConsumer(), nats.DeliverNew(), nats.BindStream(StreamEvents),
		nats.Description("qtasks executor: patches"))
	if err != nil {
		return nil, fmt.Errorf("consuming patches: %w", err)
	}
	// A busy executor must not drop patches: a dropped patch is a timeout
	// (and a gap, which makes the ordered consumer start over).
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("consuming patches: %w", err)
	}
	in.sub = sub
	return in, nil
}

func (in *invoker) onPatch(m *nats.Msg) {
	id := events.HeaderValue(events.Headers(m.Header), events.HeaderPrefix+events.ExtInvocation)
	if id == "" {
		return
	}
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	// Only the invoked plugin may answer: invocation ids are predictable,
	// and a reply on another plugin's subject must not decide (or fail) the
	// call. It is a forgery attempt: counted and logged (the patch itself
	// is in the log), and never taken.
	ps, perr := events.ParseSubject(m.Subject)
	in.mu.Lock()
	w, ok := in.pending[id]
	in.mu.Unlock()
	if !ok {
		// Not awaited (yet, or any more). A live invocation's id ends with
		// ":<plugin>" (events.InvocationID), so a patch naming another
		// plugin's invocation is told even when made before it. A replay
		// may feed one plugin's recorded invocations to a candidate of
		// another name: its patches (ce-replay) are not suspect.
		if (perr != nil || !strings.HasSuffix(id, ":"+ps.Plugin)) &&
			events.HeaderValue(events.Headers(m.Header), events.HeaderPrefix+events.ExtReplay) == "" {
			in.forged(m.Subject, seq, id)
		}
		return
	}
	if perr != nil || ps.Plugin != w.plugin {
		in.forged(m.Subject, seq, id)
		return
	}
	select {
	case w.ch <- patchMsg{m: m, seq: seq}:
	default: // a second answer to the same invocation: the first one counts
	}
}

func (in *invoker) forged(subject string, seq uint64, invocation string) {
	in.b.forgeries.Add(1)
	in.b.log.Error("forgery detected: a patch on another plugin's subject names an invocation",
		"subject", subject, "seq", seq, "invocation", invocation)
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

// Invoke sends invocation inv to plugin p and waits for its patch until the
// invocation's deadline: its time (now, when inv has none) plus p's
// timeout, as the plugin reads it. inv must carry ID, Trigger, TaskID and
// Data; Invoke sets the plugin attributes, type and, when zero, time. A
// local plugin is called directly.
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
	// The wait ends at the invocation's deadline, the one the plugin reads
	// (PROTOCOL.md §9.2: ce-time + ce-timeoutms), not timeout after the
	// publish: a plugin that gives up at its deadline and says so must not
	// be heard as an answer.
	deadline := inv.Time.Add(timeout)
	ctx, cancel := context.WithDeadlineCause(ctx, deadline, ErrPluginTimeout)
	defer cancel()

	if h, ok := b.local.Load(p.Name); ok {
		return b.invokeLocal(ctx, h.(LocalHandler), subject, p, inv)
	}

	ch := make(chan patchMsg, 1)
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
		case pm := <-ch:
			m := pm.m
			reply.PatchSeq = pm.seq
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
			if !time.Now().Before(deadline) {
				// Came after the deadline, before the timer said so (a
				// loaded machine runs timers late): a timeout all the same.
				return reply, ErrPluginTimeout
			}
			ps := Unpack(pm.seq, m.Subject, events.Headers(m.Header), m.Data)[0]
			ev := ps.Event
			if ps.Err != nil {
				return reply, fmt.Errorf("decoding patch: %w", ps.Err)
			}
			if ev.Type != events.TypePatch {
				return reply, fmt.Errorf("%w: reply type %q, want %q", events.ErrInvalidEvent, ev.Type, events.TypePatch)
			}
			if id := m.Header.Get(events.HeaderMsgID); id != "" {
				// A patch with a deduplication id could be silenced by a
				// message stored first under the same id; protocol 2
				// forbids it, so that no honest patch can be.
				return reply, fmt.Errorf("%w: the patch carries %s %q; a patch must carry none (protocol version %d)", events.ErrInvalidEvent, events.HeaderMsgID, id, events.ProtocolVersion)
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
