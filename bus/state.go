package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// ErrStateNotFound is returned for a state key (a plugin's, or shared or
// task state) that was never set or was deleted.
var ErrStateNotFound = errors.New("state key not found")

// PluginState is one plugin's persistent state, QTasks' plugin_cache made
// durable: a JetStream KV namespace, keyed per plugin so that two plugins
// never share (or overwrite) each other's state.
type PluginState struct {
	b      *Bus
	kv     jetstream.KeyValue
	plugin string
}

// PluginState returns the state of plugin.
func (b *Bus) PluginState(plugin string) *PluginState {
	return &PluginState{b: b, kv: b.stKV, plugin: plugin}
}

func (s *PluginState) key(k string) (string, error) {
	if !events.ValidToken(k) {
		return "", fmt.Errorf("state key %q: must be a valid NATS subject token", k)
	}
	return s.plugin + "." + k, nil
}

// Get returns the value of key and its revision. A value this plugin did
// not write through the bucket, JetStream's answer to a direct get that
// another plugin had the server write there, is ErrNotState, with its
// revision (Update at that revision replaces it).
func (s *PluginState) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, 0, err
	}
	// kvGet, not KeyValue.Get: the headers as stored tell an echo (another
	// plugin can have the server write one on this plugin's keys, kv.go).
	e, err := s.b.kvGet(ctx, BucketPluginState, k)
	if err != nil {
		return nil, 0, fmt.Errorf("reading state %s: %w", key, err)
	}
	if e == nil || e.Deleted {
		return nil, 0, fmt.Errorf("%w: %s", ErrStateNotFound, key)
	}
	if err := e.echo(); err != nil {
		return nil, e.Revision, fmt.Errorf("reading state %s: %w: %w", key, ErrNotState, err)
	}
	return e.Value, e.Revision, nil
}

// Put sets key to value.
func (s *PluginState) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	k, err := s.key(key)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Put(ctx, k, value)
	if err != nil {
		return 0, fmt.Errorf("writing state %s: %w", key, err)
	}
	return rev, nil
}

// Update sets key to value if it is still at revision rev (0: if it does not
// exist), so that concurrent plugin instances do not lose each other's writes.
func (s *PluginState) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	k, err := s.key(key)
	if err != nil {
		return 0, err
	}
	var n uint64
	if rev == 0 {
		n, err = s.kv.Create(ctx, k, value)
	} else {
		n, err = s.kv.Update(ctx, k, value, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("updating state %s: %w", key, err)
	}
	return n, nil
}

// Delete removes key.
func (s *PluginState) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, k); err != nil {
		return fmt.Errorf("deleting state %s: %w", key, err)
	}
	return nil
}
