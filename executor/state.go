package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// Errors of state, as bus returns them.
var (
	// ErrStateConflict is a CAS whose key was not at the revision given:
	// nothing was written. Read the key again and decide.
	ErrStateConflict = bus.ErrStateConflict
	// ErrStateNotFound is a key never set, or deleted.
	ErrStateNotFound = bus.ErrStateNotFound
	// ErrNotInTask is the error of State and TaskState used outside a task
	// function (its context carries no running task).
	ErrNotInTask = errors.New("not called from a running task")
)

// StateScope is a named scope of state (QTasks' AsyncState), kept in
// JetStream KV (bus.BucketState): shared by every task of every worker
// that names the same scope, or a task's own (TaskState). Every write is a
// compare-and-set underneath and is recorded as a state event in the log
// (events.TypeState: who wrote which key, the revision it replaced and the
// one it made, the value or its digest), which the projection keeps in
// state_writes. Values are JSON.
//
// A StateScope is safe for concurrent use. Writes to different keys are
// independent: Update and Clear write key by key, not atomically.
type StateScope struct {
	a     *App
	kind  string
	scope string
	by    bus.StateWriter
	own   *ownState // the running task's own state: writes go to its record too
	err   error
}

// State returns the shared state scope of the task running in ctx: its
// writes are recorded as made by that task run. Outside a task, every call
// of the scope fails with ErrNotInTask; use App.State there.
func State(ctx context.Context, scope string) *StateScope {
	tc := TaskFromContext(ctx)
	if tc == nil || tc.app == nil {
		return &StateScope{err: ErrNotInTask}
	}
	return tc.app.stateScope(events.StateShared, scope, tc)
}

// TaskState returns the running task's own state: a scope named by the
// task id that its later attempts (a retry, a run resumed after a crash)
// read back, and other tasks do not see unless they ask App.TaskState for
// it. Outside a task every call fails with ErrNotInTask.
//
// Its values live in the state bucket, every write recorded as a state
// event. What the task function wrote by the time it returns also lands
// where plugins keep a task's state (plugins/state): the record's
// extra.state (events.ExtraState), key by key over what the record holds
// (a delete removes the key; an extra.state that is not a JSON object is
// replaced), so the final record, its fact and the projection's task show
// it, and the plugins of the triggers after the function see it. Writes
// made later (by a function abandoned past its MaxTime) or through
// App.TaskState stay in the bucket and the log only. Reads (Get, GetAll)
// read the bucket, not extra.state: a plugin's change of extra.state is
// read with plugins/state.
func TaskState(ctx context.Context) *StateScope {
	tc := TaskFromContext(ctx)
	if tc == nil || tc.app == nil {
		return &StateScope{err: ErrNotInTask}
	}
	return tc.app.stateScope(events.StateTask, tc.ID, tc)
}

// State returns shared state scope for use outside a task (a test, an
// admin tool): its writes are recorded as made by this app's node.
func (a *App) State(scope string) *StateScope {
	return a.stateScope(events.StateShared, scope, nil)
}

// TaskState returns task id's own state, for use outside the task.
func (a *App) TaskState(id string) *StateScope {
	return a.stateScope(events.StateTask, id, nil)
}

func (a *App) stateScope(kind, scope string, tc *TaskContext) *StateScope {
	s := &StateScope{
		a: a, kind: kind, scope: scope,
		by: bus.StateWriter{Source: a.source, Queue: a.cfg.Queue, By: a.cfg.NodeID},
	}
	if tc != nil {
		s.by = bus.StateWriter{Source: a.source, Queue: tc.Queue, TaskID: tc.ID, Attempt: tc.Attempt, Run: tc.Run}
		if kind == events.StateTask {
			s.own = tc.own
		}
	}
	switch {
	case kind == events.StateShared && !events.ValidStateName(scope):
		s.err = fmt.Errorf("%w: state scope %q: want letters, digits, - and _, 1 to 64 bytes", ErrInvalidInput, scope)
	case kind == events.StateTask && !events.ValidToken(scope):
		s.err = fmt.Errorf("%w: task id %q", ErrInvalidInput, scope)
	}
	return s
}

// check says why key cannot be used in s, or nil.
func (s *StateScope) check(key string) error {
	if s.err != nil {
		return s.err
	}
	if !events.ValidStateName(key) {
		return fmt.Errorf("%w: state key %q: want letters, digits, - and _, 1 to 64 bytes", ErrInvalidInput, key)
	}
	return nil
}

// Scope is the scope's name (the task id for a task's own state).
func (s *StateScope) Scope() string { return s.scope }

// Get decodes key's value into v (which may be nil) and returns its
// revision, for CAS.
func (s *StateScope) Get(ctx context.Context, key string, v any) (uint64, error) {
	if err := s.check(key); err != nil {
		return 0, err
	}
	e, err := s.a.b.GetState(ctx, s.kind, s.scope, key)
	if err != nil {
		return 0, err
	}
	if v != nil {
		if err := json.Unmarshal(e.Value, v); err != nil {
			return e.Revision, fmt.Errorf("decoding state %s/%s: %w", s.scope, key, err)
		}
	}
	return e.Revision, nil
}

// GetAll returns every key of the scope and its value (QTasks' get_all).
func (s *StateScope) GetAll(ctx context.Context) (map[string]json.RawMessage, error) {
	if s.err != nil {
		return nil, s.err
	}
	list, err := s.a.b.ListState(ctx, s.kind, s.scope)
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(list))
	for _, e := range list {
		out[e.Key] = e.Value
	}
	return out, nil
}

// Set sets key to v, whatever its revision, and returns the new revision
// (QTasks' set).
func (s *StateScope) Set(ctx context.Context, key string, v any) (uint64, error) {
	return s.write(ctx, key, v, bus.Any)
}

// CAS sets key to v if it is at revision rev (0: if it does not exist) and
// returns the new revision; ErrStateConflict, with nothing written, if
// another writer came first.
func (s *StateScope) CAS(ctx context.Context, key string, v any, rev uint64) (uint64, error) {
	if rev == bus.Any {
		return 0, fmt.Errorf("%w: revision %d", ErrInvalidInput, rev)
	}
	return s.write(ctx, key, v, rev)
}

// Update sets each key of kv (QTasks' update), key by key in key order,
// and returns the scope as it then is.
func (s *StateScope) Update(ctx context.Context, kv map[string]any) (map[string]json.RawMessage, error) {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if _, err := s.Set(ctx, k, kv[k]); err != nil {
			return nil, err
		}
	}
	return s.GetAll(ctx)
}

// Delete removes key; ErrStateNotFound if it does not exist.
func (s *StateScope) Delete(ctx context.Context, key string) error {
	_, err := s.writeRaw(ctx, key, nil, bus.Any)
	return err
}

// Clear deletes every key of the scope (QTasks' clear).
func (s *StateScope) Clear(ctx context.Context) error {
	all, err := s.GetAll(ctx)
	if err != nil {
		return err
	}
	for k := range all {
		if err := s.Delete(ctx, k); err != nil && !errors.Is(err, ErrStateNotFound) {
			return err
		}
	}
	return nil
}

func (s *StateScope) write(ctx context.Context, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("%w: encoding state %s/%s: %w", ErrInvalidInput, s.scope, key, err)
	}
	return s.writeRaw(ctx, key, b, rev)
}

func (s *StateScope) writeRaw(ctx context.Context, key string, value json.RawMessage, rev uint64) (uint64, error) {
	if err := s.check(key); err != nil {
		return 0, err
	}
	w, err := s.a.b.WriteState(ctx, s.by, s.kind, s.scope, key, value, rev)
	if err == nil && s.own != nil {
		s.own.note(key, value)
	}
	return w.Revision, err
}

// ownState is what a running task wrote to its own state (TaskState(ctx)),
// the last value of each key (nil: deleted), until the run takes it for
// the record (close).
type ownState struct {
	mu     sync.Mutex
	closed bool
	vals   map[string]json.RawMessage
}

// note records a write of key that the state bucket took.
func (o *ownState) note(key string, value json.RawMessage) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return // the run has taken its state: the record is being finished
	}
	if o.vals == nil {
		o.vals = map[string]json.RawMessage{}
	}
	o.vals[key] = value
}

// close ends the notes and returns extra with the writes noted applied to
// its extra.state: a copy when there is any (extra may be shared with the
// TaskContext), extra itself otherwise.
func (o *ownState) close(extra map[string]json.RawMessage) map[string]json.RawMessage {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	if len(o.vals) == 0 {
		return extra
	}
	var st map[string]json.RawMessage
	if raw := extra[events.ExtraState]; len(raw) > 0 && json.Unmarshal(raw, &st) != nil {
		st = nil // not an object: the task's writes replace it
	}
	if st == nil {
		st = make(map[string]json.RawMessage, len(o.vals))
	}
	for k, v := range o.vals {
		if v == nil {
			delete(st, k)
		} else {
			st[k] = v
		}
	}
	// Values are json.Marshal's (valid, compact) or the record's own; a map
	// encodes in key order.
	enc, err := json.Marshal(st)
	if err != nil {
		return extra
	}
	out := make(map[string]json.RawMessage, len(extra)+1)
	maps.Copy(out, extra)
	out[events.ExtraState] = enc
	return out
}
