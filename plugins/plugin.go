package plugins

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// Plugin handles the triggers it is registered for.
//
// For a mutator, Trigger is called once per invocation and returns the patch
// to apply to call.Payload, or nil for no change. For an observer it is
// called once per fact, in stream order, and its patch is ignored.
// Trigger may be called concurrently for different tasks (mutators only).
type Plugin interface {
	Trigger(ctx context.Context, call *Call) (*Patch, error)
}

// Func adapts a function to Plugin.
type Func func(ctx context.Context, call *Call) (*Patch, error)

// Trigger calls f.
func (f Func) Trigger(ctx context.Context, call *Call) (*Patch, error) { return f(ctx, call) }

// Starter is implemented by plugins that need set-up before their first
// call (QTasks' BasePlugin.start).
type Starter interface {
	Start(ctx context.Context) error
}

// Stopper is implemented by plugins that need tear-down after their last
// call (QTasks' BasePlugin.stop).
type Stopper interface {
	Stop(ctx context.Context) error
}

// Call is one invocation or fact delivered to a plugin.
type Call struct {
	// Trigger is the QTasks trigger name.
	Trigger  string
	TaskID   string
	TaskName string
	Attempt  int
	// Run numbers the run of the attempt (ce-run, PROTOCOL.md §5): never
	// reused for the attempt, increasing, may skip; 0 at submission.
	Run int
	// Payload is the trigger's payload: for a mutator, as patched by the
	// plugins before this one; for an observer, the fact's output (its
	// input for one-way triggers).
	Payload json.RawMessage
	// Fact is the whole fact, for observers; nil for mutators.
	Fact *events.Fact
	// Event is the CloudEvent as received.
	Event events.Event
	// Seq is the stream sequence of the event's message, and Index the
	// event's position in it: 0 for an event alone; a fact packed in a
	// phase message (docs/PROTOCOL.md §10) shares its message's Seq with
	// the other facts there. (Seq, Index) grows in stream order.
	Seq   uint64
	Index int
	// Deliveries counts how often JetStream has delivered the event to
	// this plugin, this one included: above 1 after a crash, a restart or
	// an ack wait that ran out. Calls are at least once; a plugin whose
	// effects must not repeat keys them on Event.ID.
	Deliveries int
	// State is the plugin's persistent state (QTasks' plugin_cache).
	State *bus.PluginState
}

// Decode decodes the payload into v.
func (c *Call) Decode(v any) error {
	if err := json.Unmarshal(c.Payload, v); err != nil {
		return fmt.Errorf("decoding %s payload: %w", c.Trigger, err)
	}
	return nil
}

// Patch is a mutator's answer: a JSON Patch or a merge patch.
type Patch struct {
	// ContentType is events.ContentTypeJSONPatch or
	// events.ContentTypeMergePatch.
	ContentType string
	Body        json.RawMessage
}

// MergePatch returns an RFC 7386 merge patch of v (usually a map or struct
// that mirrors the part of the payload to change).
func MergePatch(v any) (*Patch, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding merge patch: %w", err)
	}
	return &Patch{ContentType: events.ContentTypeMergePatch, Body: b}, nil
}

// Op is one RFC 6902 JSON Patch operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	From  string `json:"from,omitempty"`
	Value any    `json:"value,omitempty"`
}

// JSONPatch returns an RFC 6902 JSON Patch of ops.
func JSONPatch(ops ...Op) (*Patch, error) {
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encoding JSON patch: %w", err)
	}
	return &Patch{ContentType: events.ContentTypeJSONPatch, Body: b}, nil
}

// Modes of a plugin.
const (
	Observer = events.ModeObserver
	Mutator  = events.ModeMutator
	Shadow   = events.ModeShadow
)

// Defaults of Spec.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultConcurrency = 16
	DefaultMaxDeliver  = 5
	// DefaultObserverAckWait is Spec.AckWait's default.
	DefaultObserverAckWait = 30 * time.Second
)

// Spec describes a plugin to run: the registration the executor follows
// and the value that handles calls.
type Spec struct {
	// Name identifies the plugin; it is a NATS subject token and the name
	// of its durable consumer.
	Name string
	// Version is recorded with every patch, for audit and replay.
	Version string
	// Triggers the plugin is named for; empty registers it globally, for
	// every trigger (QTasks' "Globals").
	Triggers []string
	// Mode is Observer, Mutator or Shadow. Defaults to Mutator.
	Mode string
	// ShadowOf names the live plugin a Shadow is a candidate for.
	ShadowOf string
	// Timeout bounds one invocation. Defaults to DefaultTimeout.
	Timeout time.Duration
	// Policy decides what a failure (rejected patch, timeout, error) does
	// to the task: events.PolicyFail (the default) ends it in error,
	// events.PolicyIgnore goes on unpatched.
	Policy string
	// Concurrency bounds concurrent calls of a mutator. Defaults to
	// DefaultConcurrency. Observers are called one fact at a time, in order.
	Concurrency int
	// MaxDeliver bounds how often a call is retried after an error before
	// it is dead-lettered (observers) or answered with the error (mutators).
	// Defaults to DefaultMaxDeliver.
	MaxDeliver int
	// DeliverNew starts a new observer at the end of the log instead of its
	// beginning. An observer that reads from the beginning finds the facts
	// of its triggers however they were stored, alone or packed in phase
	// messages (the runner registers it with reads_batches, and without
	// when the registrar refuses that, docs/PROTOCOL.md §10).
	DeliverNew bool
	// AckWait is how long JetStream waits for an observer to finish a fact
	// (retries included) before it delivers the fact again. Defaults to
	// DefaultObserverAckWait. A runner never calls its plugin twice for one
	// fact: a fact delivered again behind its first delivery is skipped.
	// Mutators' ack wait follows Timeout.
	AckWait time.Duration
	// Plugin handles the calls.
	Plugin Plugin
	// TracerProvider makes a mutator's spans: one per handled invocation,
	// a child of the executor's span of the call (the invocation's
	// ce-traceparent). Defaults to otel.GetTracerProvider(), a no-op until
	// the program sets one.
	TracerProvider trace.TracerProvider
}

func (s *Spec) withDefaults() error {
	if s.Mode == "" {
		s.Mode = Mutator
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Policy == "" {
		s.Policy = events.PolicyFail
	}
	if s.Concurrency == 0 {
		s.Concurrency = DefaultConcurrency
	}
	if s.MaxDeliver == 0 {
		s.MaxDeliver = DefaultMaxDeliver
	}
	if s.AckWait == 0 {
		s.AckWait = DefaultObserverAckWait
	}
	if s.TracerProvider == nil {
		s.TracerProvider = otel.GetTracerProvider()
	}
	if s.Plugin == nil {
		return fmt.Errorf("plugin %s: Spec.Plugin is nil", s.Name)
	}
	if !events.ValidName(s.Name) {
		return fmt.Errorf("plugin name %q: use letters, digits, '-' and '_' (at most 64)", s.Name)
	}
	if s.Mode != Observer {
		for _, t := range s.Triggers {
			if tr, ok := events.Lookup(t); ok && !tr.Returnable {
				return fmt.Errorf("plugin %s: %s is one-way: a %s is never invoked for it; register an observer", s.Name, t, s.Mode)
			}
		}
	}
	return nil
}

func (s *Spec) info(local bool) events.PluginInfo {
	return events.PluginInfo{
		Name: s.Name, Version: s.Version, Triggers: s.Triggers, Mode: s.Mode,
		TimeoutMS: s.Timeout.Milliseconds(), Policy: s.Policy, ShadowOf: s.ShadowOf, Local: local,
		ReadsBatches: s.readsBatches(),
	}
}

// readsBatches is whether the runner asks to read phase messages
// (docs/PROTOCOL.md §10): a global observer must, or it would miss the
// packed facts; an observer named for triggers that reads from the start
// of the log asks, to find the facts packed before it registered (it
// registers without when its grant does not allow it: its triggers' facts
// are then stored alone). One that starts at the end needs not: from its
// registration on, its triggers' facts travel alone.
func (s *Spec) readsBatches() bool {
	return s.Mode == Observer && (len(s.Triggers) == 0 || !s.DeliverNew)
}
