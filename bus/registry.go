package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Registry is the plugin registry: a KV bucket that every executor watches
// into memory, so that building a trigger's chain costs no round trip.
type Registry struct {
	b       *Bus
	kv      jetstream.KeyValue
	watcher jetstream.KeyWatcher
	done    chan struct{}

	mu      sync.RWMutex
	plugins map[string]events.PluginInfo
	chains  map[string][]events.PluginInfo // trigger → mutators, in chain order
	changed chan struct{}                  // closed and replaced on every change
}

func newRegistry(ctx context.Context, b *Bus) (*Registry, error) {
	r := &Registry{
		b: b, kv: b.plugKV, done: make(chan struct{}),
		plugins: make(map[string]events.PluginInfo),
		changed: make(chan struct{}),
	}
	// The watch lives as long as the bus, not as long as ctx: ctx only bounds
	// Open, and a watch tied to it would stop (and the registry go stale) as
	// soon as Open's caller cancels it.
	w, err := r.kv.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("watching plugin registry: %w", err)
	}
	r.watcher = w
	// The watcher sends every current value, then a nil marker.
load:
	for {
		select {
		case u, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("loading plugin registry: watch closed")
			}
			if u == nil {
				break load
			}
			r.apply(u)
		case <-ctx.Done():
			_ = w.Stop()
			return nil, fmt.Errorf("loading plugin registry: %w", context.Cause(ctx))
		}
	}
	go func() {
		defer close(r.done)
		for u := range w.Updates() {
			if u != nil {
				r.apply(u)
			}
		}
	}()
	return r, nil
}

func (r *Registry) apply(u jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch u.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		delete(r.plugins, u.Key())
	case jetstream.KeyValuePut:
		var p events.PluginInfo
		if err := json.Unmarshal(u.Value(), &p); err != nil {
			r.b.log.Warn("ignoring malformed plugin registration", "key", u.Key(), "err", err)
			return
		}
		r.plugins[u.Key()] = p
	}
	r.chains = nil
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Registry) stop() {
	if r.watcher != nil {
		_ = r.watcher.Stop()
	}
}

// Register adds or updates a plugin. A plugin keeps its order across
// re-registrations (a new version does not move it in the chain); a new one
// goes last. Register returns the stored registration.
func (r *Registry) Register(ctx context.Context, p events.PluginInfo) (events.PluginInfo, error) {
	if !events.ValidName(p.Name) {
		return p, fmt.Errorf("plugin name %q: use letters, digits, '-' and '_' (at most 64)", p.Name)
	}
	switch p.Mode {
	case events.ModeObserver, events.ModeMutator, events.ModeShadow:
	default:
		return p, fmt.Errorf("plugin %s: mode %q, want observer, mutator or shadow", p.Name, p.Mode)
	}
	if p.Mode == events.ModeShadow && p.ShadowOf == "" {
		return p, fmt.Errorf("plugin %s: a shadow must name the plugin it shadows", p.Name)
	}
	switch p.Policy {
	case "":
		p.Policy = events.PolicyFail
	case events.PolicyFail, events.PolicyIgnore:
	default:
		return p, fmt.Errorf("plugin %s: failure policy %q, want fail or ignore", p.Name, p.Policy)
	}
	for _, t := range p.Triggers {
		tr, ok := events.Lookup(t)
		if !ok {
			return p, fmt.Errorf("plugin %s: unknown trigger %q", p.Name, t)
		}
		if tr.Scope == events.ScopeNone {
			return p, fmt.Errorf("plugin %s: trigger %q is never fired: %s", p.Name, t, tr.Note)
		}
	}
	if p.RegisteredAt.IsZero() {
		p.RegisteredAt = time.Now().UTC()
	}
	for {
		e, err := r.kv.Get(ctx, p.Name)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Reserve the key; its revision is the registration order.
			rev, err := r.kv.Create(ctx, p.Name, []byte("{}"))
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			if err != nil {
				return p, fmt.Errorf("registering plugin %s: %w", p.Name, err)
			}
			p.Order = rev
			data, _ := json.Marshal(p)
			if _, err := r.kv.Update(ctx, p.Name, data, rev); err != nil {
				if revisionConflict(err) {
					continue // another registration filled the key in; read again
				}
				return p, fmt.Errorf("registering plugin %s: %w", p.Name, err)
			}
			return p, nil
		case err != nil:
			return p, fmt.Errorf("registering plugin %s: %w", p.Name, err)
		}
		var old events.PluginInfo
		if json.Unmarshal(e.Value(), &old) == nil && old.Order != 0 {
			p.Order = old.Order
		} else {
			p.Order = e.Revision()
		}
		data, _ := json.Marshal(p)
		if _, err := r.kv.Update(ctx, p.Name, data, e.Revision()); err != nil {
			if revisionConflict(err) {
				continue // raced with another registration; read again
			}
			return p, fmt.Errorf("registering plugin %s: %w", p.Name, err)
		}
		return p, nil
	}
}

// revisionConflict reports whether a KV update lost a compare-and-set race.
func revisionConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// Deregister removes a plugin; the executor stops invoking it.
func (r *Registry) Deregister(ctx context.Context, name string) error {
	if err := r.kv.Delete(ctx, name); err != nil {
		return fmt.Errorf("deregistering plugin %s: %w", name, err)
	}
	return nil
}

// Get returns a plugin's registration as last seen.
func (r *Registry) Get(name string) (events.PluginInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.plugins[name]
	return p, ok && p.Mode != ""
}

// List returns every registered plugin by order.
func (r *Registry) List() []events.PluginInfo {
	r.mu.RLock()
	out := make([]events.PluginInfo, 0, len(r.plugins))
	for _, p := range r.plugins {
		if p.Mode != "" {
			out = append(out, p)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b events.PluginInfo) int { return int(a.Order) - int(b.Order) })
	return out
}

// Chain returns the mutators of trigger in QTasks order: those named for
// the trigger first, then global ones, each in registration order. Shadows
// are not in the chain; see Shadows.
func (r *Registry) Chain(trigger string) []events.PluginInfo {
	r.mu.RLock()
	if c, ok := r.chains[trigger]; ok {
		r.mu.RUnlock()
		return c
	}
	r.mu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.chains == nil {
		r.chains = make(map[string][]events.PluginInfo)
	}
	var named, global []events.PluginInfo
	for _, p := range r.plugins {
		if p.Mode != events.ModeMutator {
			continue
		}
		if p.Handles(trigger) {
			named = append(named, p)
		} else if p.Global() {
			global = append(global, p)
		}
	}
	byOrder := func(a, b events.PluginInfo) int { return int(a.Order) - int(b.Order) }
	slices.SortFunc(named, byOrder)
	slices.SortFunc(global, byOrder)
	c := append(named, global...)
	r.chains[trigger] = c
	return c
}

// Shadows returns the shadow plugins of plugin that handle trigger, in
// registration order (so that a firing records their calls in the same order
// every time).
func (r *Registry) Shadows(plugin, trigger string) []events.PluginInfo {
	r.mu.RLock()
	var out []events.PluginInfo
	for _, p := range r.plugins {
		if p.Mode == events.ModeShadow && p.ShadowOf == plugin && (p.Global() || p.Handles(trigger)) {
			out = append(out, p)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b events.PluginInfo) int { return int(a.Order) - int(b.Order) })
	return out
}

// Subscribed reports whether any plugin, of any mode, receives trigger.
func (r *Registry) Subscribed(trigger string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.plugins {
		if p.Mode != "" && (p.Global() || p.Handles(trigger)) {
			return true
		}
	}
	return false
}

// WaitFor blocks until the registry shows plugin name at version (any
// version when empty), or ctx ends.
func (r *Registry) WaitFor(ctx context.Context, name, version string) error {
	for {
		r.mu.RLock()
		p, ok := r.plugins[name]
		ch := r.changed
		r.mu.RUnlock()
		if ok && p.Mode != "" && (version == "" || p.Version == version) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for plugin %s to register: %w", name, context.Cause(ctx))
		}
	}
}
