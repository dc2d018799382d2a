package events

import (
	"errors"
	"fmt"
	"slices"
)

// DefaultPluginTimeoutMS is the time budget of one invocation of a plugin
// whose registration gives none (timeout_ms ≤ 0).
const DefaultPluginTimeoutMS = 5000

// Reasons an entry of the plugin registry is invalid: the reason label of
// the registrar's refusals and of the executors' count of ignored entries.
const (
	InvalidMalformed = "malformed" // not a JSON registration object
	InvalidName      = "name"      // not a valid plugin name
	InvalidKey       = "key"       // name differs from its key (or the asking plugin)
	InvalidMode      = "mode"      // not observer, mutator or shadow
	InvalidShadow    = "shadow_of" // a shadow without shadow_of
	InvalidTrigger   = "trigger"   // unknown, never fired, or one-way for a mutator
	InvalidPolicy    = "policy"    // not fail or ignore
	InvalidTimeout   = "timeout"   // above the operator's cap
	InvalidGrant     = "grant"     // outside the plugin user's grant
	InvalidProtocol  = "protocol"  // a registration of another protocol version
)

// ExecutorDeadLetters is the plugin token of the executor's own dead
// letters (qtasks.dead.executor, a task message it cannot read). No plugin
// may take the name: its user would get the right to write there.
const ExecutorDeadLetters = "executor"

// ErrInvalidPlugin is wrapped by every InvalidPluginError.
var ErrInvalidPlugin = errors.New("invalid plugin registration")

// InvalidPluginError says why a registration is refused (by the registrar)
// or ignored (by an executor that finds it in the registry bucket).
type InvalidPluginError struct {
	// Reason is one of the Invalid* constants.
	Reason string
	// Msg says what is wrong, for the plugin's author.
	Msg string
}

func (e *InvalidPluginError) Error() string { return e.Msg }

// Unwrap makes errors.Is(err, ErrInvalidPlugin) true.
func (e *InvalidPluginError) Unwrap() error { return ErrInvalidPlugin }

func invalidPlugin(reason, format string, args ...any) error {
	return &InvalidPluginError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// CheckPlugin is the one validity rule of a registration stored under key:
// the registrar refuses what it rejects, and executors ignore such entries
// when they find them in the bucket. maxTimeoutMS caps timeout_ms (an
// unset timeout counts as DefaultPluginTimeoutMS); 0 means no cap. An
// empty policy is valid (it acts as fail).
func CheckPlugin(key string, p PluginInfo, maxTimeoutMS int64) error {
	if !ValidName(p.Name) {
		return invalidPlugin(InvalidName, "plugin name %q: use letters, digits, '-' and '_' (at most 64)", p.Name)
	}
	if p.Name == ExecutorDeadLetters {
		return invalidPlugin(InvalidName, "plugin name %q is reserved: the executor writes its own dead letters under it", p.Name)
	}
	if p.Name != key {
		return invalidPlugin(InvalidKey, "plugin %s registered under the name %q: a plugin registers under its own name only", key, p.Name)
	}
	switch p.Mode {
	case ModeObserver, ModeMutator, ModeShadow:
	default:
		return invalidPlugin(InvalidMode, "plugin %s: mode %q, want observer, mutator or shadow", p.Name, p.Mode)
	}
	if p.Mode == ModeShadow && p.ShadowOf == "" {
		return invalidPlugin(InvalidShadow, "plugin %s: a shadow must name the plugin it shadows (shadow_of)", p.Name)
	}
	if p.ReadsBatches && p.Mode != ModeObserver {
		return invalidPlugin(InvalidMode, "plugin %s: reads_batches is for observers: a %s reads no facts", p.Name, p.Mode)
	}
	switch p.Policy {
	case "", PolicyFail, PolicyIgnore:
	default:
		return invalidPlugin(InvalidPolicy, "plugin %s: failure policy %q, want fail or ignore", p.Name, p.Policy)
	}
	for _, t := range p.Triggers {
		tr, ok := Lookup(t)
		if !ok {
			return invalidPlugin(InvalidTrigger, "plugin %s: unknown trigger %q", p.Name, t)
		}
		if tr.Scope == ScopeNone {
			return invalidPlugin(InvalidTrigger, "plugin %s: trigger %q is never fired: %s", p.Name, t, tr.Note)
		}
		if p.Mode != ModeObserver && !tr.Returnable {
			return invalidPlugin(InvalidTrigger, "plugin %s: %s is one-way: a %s is never invoked for it; register an observer", p.Name, t, p.Mode)
		}
	}
	timeout := p.TimeoutMS
	if timeout <= 0 {
		timeout = DefaultPluginTimeoutMS
	}
	if maxTimeoutMS > 0 && timeout > maxTimeoutMS {
		return invalidPlugin(InvalidTimeout, "plugin %s: timeout_ms %d is above the operator's cap of %d", p.Name, timeout, maxTimeoutMS)
	}
	return nil
}

// PluginGrant is what the operator allows one plugin user to register (the
// "plugin" object of qtasksd's users file).
type PluginGrant struct {
	// Mode the plugin must register with.
	Mode string `json:"mode"`
	// Triggers the plugin may be named for; empty allows every trigger and a
	// global registration.
	Triggers []string `json:"triggers,omitempty"`
	// ShadowOf is the plugin a shadow may be a candidate for; required for a
	// shadow.
	ShadowOf string `json:"shadow_of,omitempty"`
	// MaxTimeoutMS caps the registration's timeout_ms; 0 leaves the
	// registrar's global cap.
	MaxTimeoutMS int64 `json:"max_timeout_ms,omitempty"`
}

// Allows reports why p is outside the grant, or nil. It checks the grant
// only; CheckPlugin checks the rest (the timeout cap included).
func (g PluginGrant) Allows(p PluginInfo) error {
	if p.Mode != g.Mode {
		return invalidPlugin(InvalidGrant, "plugin %s: mode %q is not granted (the users file grants %q)", p.Name, p.Mode, g.Mode)
	}
	if len(g.Triggers) > 0 {
		if len(p.Triggers) == 0 {
			return invalidPlugin(InvalidGrant, "plugin %s: a global registration is not granted (the users file grants %v)", p.Name, g.Triggers)
		}
		for _, t := range p.Triggers {
			if !slices.Contains(g.Triggers, t) {
				return invalidPlugin(InvalidGrant, "plugin %s: trigger %s is not granted (the users file grants %v)", p.Name, t, g.Triggers)
			}
		}
	}
	if p.ReadsBatches && len(g.Triggers) > 0 {
		// A phase message holds the facts of every trigger of its phase:
		// reading it would show facts outside the grant.
		return invalidPlugin(InvalidGrant, "plugin %s: reads_batches is not granted: phase messages hold the facts of every trigger, and the users file grants %v only (register without it: the facts of those triggers then travel alone)", p.Name, g.Triggers)
	}
	if p.Mode == ModeShadow && p.ShadowOf != g.ShadowOf {
		return invalidPlugin(InvalidGrant, "plugin %s: shadow_of %q is not granted (the users file grants %q)", p.Name, p.ShadowOf, g.ShadowOf)
	}
	if p.Local {
		return invalidPlugin(InvalidGrant, "plugin %s: a plugin user's registration cannot be local", p.Name)
	}
	return nil
}
