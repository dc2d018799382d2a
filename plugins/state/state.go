package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/internal/taskrec"
)

// Key is the key of the task record's extra under which a task's state
// lives: extra.state, a JSON object.
const Key = events.ExtraState

// Errors of this package.
var (
	// ErrNoRecord is returned for a trigger whose payload carries no task
	// record, hence no state (task_executor_args_replace, ...).
	ErrNoRecord = taskrec.ErrNoRecord
	// ErrMalformed wraps a payload, record or state of the wrong shape, such
	// as an extra.state that is not a JSON object.
	ErrMalformed = taskrec.ErrMalformed
	// ErrReadOnly is returned for a change of state on a trigger whose
	// contract does not let a patch touch the record's extra.
	ErrReadOnly = errors.New("this trigger does not allow the task's extra to be patched")
)

// State is a task's state: named JSON values. A nil State is empty.
type State map[string]json.RawMessage

// Set sets key to v encoded as JSON.
func (s State) Set(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding state %q: %w", key, err)
	}
	s[key] = b
	return nil
}

// Delete removes key.
func (s State) Delete(key string) { delete(s, key) }

// Get decodes key of s into a T. ok is false when s has no key (or holds
// null there).
func Get[T any](s State, key string) (v T, ok bool, err error) {
	raw, found := s[key]
	if !found || string(raw) == "null" {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, true, fmt.Errorf("decoding state %q: %w", key, err)
	}
	return v, true, nil
}

// parse reads a state from extra.
func parse(extra map[string]json.RawMessage, where string) (State, error) {
	raw, ok := extra[Key]
	if !ok || string(raw) == "null" {
		return State{}, nil
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil || s == nil {
		return nil, fmt.Errorf("%w: %s/%s is not a JSON object: %.60s", ErrMalformed, where, Key, raw)
	}
	return s, nil
}

// Read returns the state carried by a payload of trigger: the extra.state
// of the task record in it (PROTOCOL.md §7.2). It returns ErrNoRecord for a
// trigger whose payload has no task record.
func Read(trigger string, payload []byte) (State, error) {
	extra, err := taskrec.Extra(trigger, payload)
	if err != nil {
		return nil, err
	}
	ptr, _ := taskrec.Pointer(trigger, "extra")
	return parse(extra, ptr)
}

// FromCall returns the state carried by a plugin call's payload.
func FromCall(c *plugins.Call) (State, error) { return Read(c.Trigger, c.Payload) }

// FromTask returns the state of a task record, such as the one App.Wait
// returns.
func FromTask(t events.Task) (State, error) { return parse(t.Extra, "extra") }

// FromExtra returns the state held in a task's extra. Inside a task
// function, a middleware or Decode, that is the running task's state as it
// was when the task was handed to the worker:
//
//	s, err := state.FromExtra(executor.TaskFromContext(ctx).Extra)
//
// (This package does not import executor: plugins and executor never import
// each other.)
func FromExtra(extra map[string]json.RawMessage) (State, error) { return parse(extra, "extra") }

// Initial returns the extra that gives a task kv as its initial state, for
// executor.SubmitOptions.Extra or executor.TaskOptions.Extra.
func Initial(kv map[string]any) map[string]any {
	return map[string]any{Key: kv}
}

// Set returns the patch that sets key of the task's state to value, on a
// call of a trigger that allows the record's extra to be patched
// (ErrReadOnly otherwise).
func Set(c *plugins.Call, key string, value any) (*plugins.Patch, error) {
	before, err := FromCall(c)
	if err != nil {
		return nil, err
	}
	after := maps.Clone(before)
	if err := after.Set(key, value); err != nil {
		return nil, err
	}
	return Diff(c.Trigger, c.Payload, before, after)
}

// Delete returns the patch that removes keys from the task's state.
func Delete(c *plugins.Call, keys ...string) (*plugins.Patch, error) {
	before, err := FromCall(c)
	if err != nil {
		return nil, err
	}
	after := maps.Clone(before)
	for _, k := range keys {
		delete(after, k)
	}
	return Diff(c.Trigger, c.Payload, before, after)
}

// Diff returns the JSON Patch that turns state before, as read from payload
// of trigger, into after; nil when they are equal. Each changed key is one
// operation on /<record>/extra/state/<key>, so that the timeline shows
// which key changed.
func Diff(trigger string, payload []byte, before, after State) (*plugins.Patch, error) {
	keys := slices.Sorted(maps.Keys(after))
	var set, del []string
	for _, k := range keys {
		if old, ok := before[k]; !ok || !sameJSON(old, after[k]) {
			set = append(set, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			del = append(del, k)
		}
	}
	if len(set) == 0 && len(del) == 0 {
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	}
	if !taskrec.Writable(trigger, "extra") {
		return nil, fmt.Errorf("changing state on %s: %w (it may be changed on %s)", trigger, ErrReadOnly,
			strings.Join(taskrec.WritableTriggers("extra"), ", "))
	}
	extraPtr, _ := taskrec.Pointer(trigger, "extra")
	statePtr := extraPtr + "/" + Key
	extra, err := taskrec.Extra(trigger, payload)
	if err != nil {
		return nil, err
	}
	raw, hasState := extra[Key]
	hasState = hasState && string(raw) != "null"
	var ops []plugins.Op
	switch {
	case extra == nil:
		// No extra yet: add it whole. (An absent state has nothing to
		// delete, so set holds every change.)
		ops = []plugins.Op{{Op: "add", Path: extraPtr, Value: map[string]any{Key: only(after, set)}}}
	case !hasState:
		ops = []plugins.Op{{Op: "add", Path: statePtr, Value: only(after, set)}}
	default:
		for _, k := range set {
			// add replaces an existing member (RFC 6902 §4.1).
			ops = append(ops, plugins.Op{Op: "add", Path: statePtr + "/" + escape(k), Value: after[k]})
		}
		for _, k := range del {
			ops = append(ops, plugins.Op{Op: "remove", Path: statePtr + "/" + escape(k)})
		}
	}
	return plugins.JSONPatch(ops...)
}

// only returns the members of s named in keys, as a JSON object.
func only(s State, keys []string) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(keys))
	for _, k := range keys {
		m[k] = s[k]
	}
	return m
}

func escape(k string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(k) }

func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, err1 := json.Marshal(x)
	ya, err2 := json.Marshal(y)
	return err1 == nil && err2 == nil && bytes.Equal(xa, ya)
}
