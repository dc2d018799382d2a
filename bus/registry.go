package bus

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtasks/qtasks-go/events"
)

// Registry is the plugin registry: a KV bucket that every executor watches
// into memory, so that building a trigger's chain costs no round trip.
// Plugins register through the registrar (Register), which alone writes
// the bucket. A plugin's bus does not watch the bucket: its registry only
// registers and deregisters.
type Registry struct {
	b       *Bus
	kv      jetstream.KeyValue // nil on a plugin's bus
	stopW   context.CancelFunc // ends the watch
	done    chan struct{}
	ignored *prometheus.CounterVec // reason

	mu      sync.RWMutex
	plugins map[string]events.PluginInfo
	revs    map[string]uint64              // key → last revision applied, deletes included
	chains  map[string][]events.PluginInfo // trigger → mutators, in chain order
	changed chan struct{}                  // closed and replaced on every change
}

func newRegistry(ctx context.Context, b *Bus) (*Registry, error) {
	r := &Registry{
		b: b, kv: b.plugKV, done: make(chan struct{}),
		plugins: make(map[string]events.PluginInfo),
		revs:    make(map[string]uint64),
		changed: make(chan struct{}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtasks_registry_entries_ignored_total",
			Help: "Plugin registry entries this process ignored because they are invalid (written around the registrar), by reason.",
		}, []string{"reason"}),
	}
	if r.kv == nil {
		close(r.done)
		return r, nil
	}
	// The watch lives as long as the bus, not as long as ctx: ctx only bounds
	// Open, and a watch tied to it would stop (and the registry go stale) as
	// soon as Open's caller cancels it.
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	updates, err := b.watchKV(wctx, BucketPlugins, ">")
	if err != nil {
		stop()
		return nil, fmt.Errorf("watching plugin registry: %w", err)
	}
	r.stopW = stop
	// The watch sends every current value, then a nil marker.
load:
	for {
		select {
		case u := <-updates:
			if u == nil {
				break load
			}
			r.apply(u)
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("loading plugin registry: %w", context.Cause(ctx))
		}
	}
	go func() {
		defer close(r.done)
		for {
			select {
			case u := <-updates:
				if u != nil {
					r.apply(u)
				}
			case <-wctx.Done():
				return
			}
		}
	}()
	return r, nil
}

// Metrics is the registry's Prometheus collector:
// qtasks_registry_entries_ignored_total{reason}.
func (r *Registry) Metrics() prometheus.Collector { return r.ignored }

// reservedEntry is the value the registrar reserves a new plugin's key
// with (store): an entry with no mode, not a plugin.
var reservedEntry = []byte("{}")

// decodeEntry reads the registry entry of key: a registration the
// registrar would accept, or the reserved value; nothing else, and never
// a direct get's echo (kv.go: a plugin can have the server write there).
func (r *Registry) decodeEntry(u *kvMsg) (events.PluginInfo, error) {
	var p events.PluginInfo
	if err := u.echo(); err != nil {
		return p, &events.InvalidPluginError{Reason: events.InvalidMalformed, Msg: "not a registration: " + err.Error()}
	}
	if bytes.Equal(u.Value, reservedEntry) {
		return p, nil
	}
	if err := json.Unmarshal(u.Value, &p); err != nil {
		return p, &events.InvalidPluginError{Reason: events.InvalidMalformed, Msg: "not a registration: " + err.Error()}
	}
	if p.Mode == "" {
		// JetStream's answers (a publish ack, an API reply) decode with
		// no mode: only the reserved value is an entry without one.
		return p, &events.InvalidPluginError{Reason: events.InvalidMalformed, Msg: "not a registration: no mode"}
	}
	return p, r.b.rgs.check(u.Key, p)
}

func (r *Registry) apply(u *kvMsg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := u.Key
	r.revs[key] = u.Revision
	if u.Deleted {
		delete(r.plugins, key)
	} else {
		p, err := r.decodeEntry(u)
		if err != nil {
			// Only the registrar writes the bucket, and it writes nothing
			// invalid: this entry went around it (a plugin can have the
			// server write its answers here). The registration seen
			// before stays: a plugin is not taken out of its chains at
			// another's word. An executor that starts now has none to
			// keep, and leaves the plugin out until it registers again.
			reason := events.InvalidMalformed
			if ie, ok := errors.AsType[*events.InvalidPluginError](err); ok {
				reason = ie.Reason
			}
			r.ignored.WithLabelValues(reason).Inc()
			_, kept := r.plugins[key]
			r.b.log.Warn("ignoring invalid plugin registration", "key", key, "revision", u.Revision, "reason", reason, "kept_previous", kept, "err", err)
		} else {
			r.plugins[key] = p
		}
	}
	r.chains = nil
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Registry) stop() {
	if r.stopW != nil {
		r.stopW()
	}
}

// store writes a checked registration (the registrar's half of
// Register). A plugin keeps its order across re-registrations (a new
// version does not move it in the chain); a new one goes last. store
// returns the stored registration and its revision.
func (r *Registry) store(ctx context.Context, p events.PluginInfo) (events.PluginInfo, uint64, error) {
	for {
		e, err := r.b.kvGet(ctx, BucketPlugins, p.Name)
		switch {
		case err != nil:
			return p, 0, fmt.Errorf("registering plugin %s: %w", p.Name, err)
		case e == nil || e.Deleted:
			// Reserve the key; its revision is the registration order.
			var rev uint64
			if e == nil {
				rev, err = r.kv.Create(ctx, p.Name, reservedEntry)
			} else {
				rev, err = r.kv.Update(ctx, p.Name, reservedEntry, e.Revision)
			}
			if revisionConflict(err) {
				continue
			}
			if err != nil {
				return p, 0, fmt.Errorf("registering plugin %s: %w", p.Name, err)
			}
			p.Order = rev
			data, err := json.Marshal(p)
			if err != nil {
				return p, 0, fmt.Errorf("registering plugin %s: %w", p.Name, err)
			}
			stored, err := r.kv.Update(ctx, p.Name, data, rev)
			if err != nil {
				if revisionConflict(err) {
					continue // another registration filled the key in; read again
				}
				return p, 0, fmt.Errorf("registering plugin %s: %w", p.Name, err)
			}
			return p, stored, nil
		}
		// The order a registration kept; a value that is none (kv.go: a
		// plugin can have the server write there) is overwritten, and the
		// order is the one this registry last saw.
		if old, err := r.decodeEntry(e); err == nil && old.Order != 0 {
			p.Order = old.Order
		} else if seen, ok := r.seen(p.Name); ok && seen.Order != 0 {
			p.Order = seen.Order
		} else {
			p.Order = e.Revision
		}
		data, err := json.Marshal(p)
		if err != nil {
			return p, 0, fmt.Errorf("registering plugin %s: %w", p.Name, err)
		}
		stored, err := r.kv.Update(ctx, p.Name, data, e.Revision)
		if err != nil {
			if revisionConflict(err) {
				continue // raced with another registration; read again
			}
			return p, 0, fmt.Errorf("registering plugin %s: %w", p.Name, err)
		}
		return p, stored, nil
	}
}

// seen is the registration of name this registry holds, whatever mode.
func (r *Registry) seen(name string) (events.PluginInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.plugins[name]
	return p, ok
}

// revisionConflict reports whether a KV update lost a compare-and-set race.
func revisionConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// remove deletes a plugin's key (the registrar's half of Deregister) and
// returns the revision of the delete marker, or 0 if there was no key.
// It deletes rather than purges: the bucket refuses rollups.
func (r *Registry) remove(ctx context.Context, name string) (uint64, error) {
	// kvGet, not KeyValue.Get: for a direct get's echo stored there, the
	// latter gives the echo's own Nats-Sequence as the revision, and the
	// delete would conflict for ever.
	e, err := r.b.kvGet(ctx, BucketPlugins, name)
	if err != nil {
		return 0, fmt.Errorf("deregistering plugin %s: %w", name, err)
	}
	if e == nil || e.Deleted {
		return 0, nil
	}
	rev, err := r.b.kvDelete(ctx, r.kv.Bucket(), name, e.Revision)
	if err != nil {
		if revisionConflict(err) {
			return r.remove(ctx, name) // registered again meanwhile: delete that
		}
		return 0, fmt.Errorf("deregistering plugin %s: %w", name, err)
	}
	return rev, nil
}

// waitApplied blocks until the watch has applied key's revision rev (or a
// later one), so that a registration this registry returns is in its
// chains already.
func (r *Registry) waitApplied(ctx context.Context, key string, rev uint64) error {
	if r.kv == nil || rev == 0 {
		return nil
	}
	for {
		r.mu.RLock()
		got := r.revs[key]
		ch := r.changed
		r.mu.RUnlock()
		if got >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the registry to show plugin %s: %w", key, context.Cause(ctx))
		}
	}
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
	slices.SortFunc(out, func(a, b events.PluginInfo) int { return cmp.Compare(a.Order, b.Order) })
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
	byOrder := func(a, b events.PluginInfo) int { return cmp.Compare(a.Order, b.Order) }
	slices.SortFunc(named, byOrder)
	slices.SortFunc(global, byOrder)
	named = append(named, global...)
	r.chains[trigger] = named
	return named
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
	slices.SortFunc(out, func(a, b events.PluginInfo) int { return cmp.Compare(a.Order, b.Order) })
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

// Alone reports whether a registered plugin needs the facts of trigger to
// travel alone, each in a message of its own on its trigger subject, rather
// than packed with the others of its phase: an observer named for trigger,
// or a global one, that does not read batches. Mutators and shadows never
// read facts. Lifecycle facts travel alone whatever this says (the
// executor's rule, issue #15 design (f)).
func (r *Registry) Alone(trigger string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.plugins {
		if p.Mode == events.ModeObserver && !p.ReadsBatches && (p.Global() || p.Handles(trigger)) {
			return true
		}
	}
	return false
}

// WaitFor blocks until the registry shows plugin name at version (any
// version when empty), or ctx ends.
func (r *Registry) WaitFor(ctx context.Context, name, version string) error {
	if r.kv == nil {
		return fmt.Errorf("waiting for plugin %s to register: %w", name, ErrNotWatched)
	}
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
