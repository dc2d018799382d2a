package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Errors of state.
var (
	// ErrStateConflict is a compare-and-set whose key was not at the
	// revision given: another writer came first. Nothing was written.
	ErrStateConflict = errors.New("state conflict: the key is not at the expected revision")
	// ErrStateUnavailable is returned on a bus that has no state bucket (a
	// plugin's or a read-only bus).
	ErrStateUnavailable = errors.New("shared state is not available on this bus")
)

// provisionFlow provisions the buckets of shared state and limits.
func (b *Bus) provisionFlow(_ context.Context, kv func(name, desc string, history uint8, markerTTL time.Duration) (jetstream.KeyValue, error)) error {
	var err error
	if b.shKV, err = kv(BucketState, "qtasks shared and per-task state (every write is also a state event)", 1, 0); err != nil {
		return err
	}
	if b.limKV, err = kv(BucketLimits, "qtasks cluster-wide limits: concurrency slots and rate cells", 1, 0); err != nil {
		return err
	}
	return nil
}

// LimitsBucket is the bucket of cluster-wide limits (BucketLimits), or nil
// on a plugin's or a read-only bus. Only executors use it.
func (b *Bus) LimitsBucket() jetstream.KeyValue { return b.limKV }

// StateEntry is a state key's value and revision.
type StateEntry struct {
	Key      string
	Value    json.RawMessage
	Revision uint64
	// refused is why the value is no executor's (ErrNotState).
	refused error
}

// stateKey is the bucket key of key in scope of kind: s.<scope>.<key> for
// shared state, t.<task id>.<key> for a task's own.
func stateKey(kind, scope, key string) (string, error) {
	w := events.StateWrite{Kind: kind, Scope: scope, Key: key, Op: events.StateDelete, Revision: 1}
	if err := w.Check(); err != nil {
		return "", err
	}
	if kind == events.StateTask {
		// A task id is a subject token; a KV key takes fewer bytes.
		if strings.ContainsFunc(scope, func(r rune) bool { return !taskScopeRune(r) }) {
			return "", fmt.Errorf("%w: task id %q cannot name a state scope", events.ErrInvalidEvent, scope)
		}
		return "t." + scope + "." + key, nil
	}
	return "s." + scope + "." + key, nil
}

func (b *Bus) stateSubject(k string) string { return "$KV." + BucketState + "." + k }

// ErrNotState is a value of the state bucket that no executor wrote: a
// direct get's echo (a plugin can have the server write one there,
// kv.go), or no JSON. A read refuses it; a write replaces it, and the
// replaced revision, named by no state event, is the missing link that
// shows it (events.StateWrite.Prev).
var ErrNotState = errors.New("not a state value")

// stateCurrent reads key k as the bucket's stream holds it: its value and
// revision, exists false (and rev the delete marker's, or 0) when absent.
// A value no executor wrote (ErrNotState) exists, with its revision, and
// its refusal in refused.
func (b *Bus) stateCurrent(ctx context.Context, k string) (e StateEntry, exists bool, err error) {
	if b.shKV == nil {
		return StateEntry{}, false, ErrStateUnavailable
	}
	// kvGet, not KeyValue.Get: the headers as stored tell an echo, whose
	// own Nats-Sequence KeyValue.Get takes for the revision (a write
	// would then conflict for ever).
	m, err := b.kvGet(ctx, BucketState, k)
	switch {
	case err != nil:
		return StateEntry{}, false, fmt.Errorf("reading state %s: %w", k, err)
	case m == nil:
		return StateEntry{}, false, nil
	case m.Deleted:
		// Absent; the revision of its delete marker is what a write must
		// replace.
		return StateEntry{Revision: m.Revision}, false, nil
	}
	e = StateEntry{Value: m.Value, Revision: m.Revision}
	if err := m.echo(); err != nil {
		e.refused = fmt.Errorf("state %s: %w: %w", k, ErrNotState, err)
	} else if !json.Valid(m.Value) {
		e.refused = fmt.Errorf("state %s: %w: not JSON", k, ErrNotState)
	}
	return e, true, nil
}

// GetState returns key of scope (kind events.StateShared or
// events.StateTask). A key never set or deleted is ErrStateNotFound.
func (b *Bus) GetState(ctx context.Context, kind, scope, key string) (StateEntry, error) {
	k, err := stateKey(kind, scope, key)
	if err != nil {
		return StateEntry{}, err
	}
	e, ok, err := b.stateCurrent(ctx, k)
	if err != nil {
		return StateEntry{}, err
	}
	if !ok {
		return StateEntry{}, fmt.Errorf("%w: %s %s/%s", ErrStateNotFound, kind, scope, key)
	}
	if e.refused != nil {
		return StateEntry{}, e.refused
	}
	e.Key = key
	return e, nil
}

// ListState returns every key of scope, in key order.
func (b *Bus) ListState(ctx context.Context, kind, scope string) ([]StateEntry, error) {
	k, err := stateKey(kind, scope, "x")
	if err != nil {
		return nil, err
	}
	if b.shKV == nil {
		return nil, ErrStateUnavailable
	}
	prefix := strings.TrimSuffix(k, "x")
	l, err := b.shKV.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		return nil, fmt.Errorf("listing state %s: %w", scope, err)
	}
	var keys []string
	for key := range l.Keys() {
		keys = append(keys, key)
	}
	out := make([]StateEntry, 0, len(keys))
	for _, key := range keys {
		e, ok, err := b.stateCurrent(ctx, key)
		if err != nil {
			return nil, err
		}
		if ok && e.refused != nil {
			b.log.WarnContext(ctx, "leaving out a state value no executor wrote", "key", key, "revision", e.Revision, "err", e.refused)
		} else if ok {
			e.Key = strings.TrimPrefix(key, prefix)
			out = append(out, e)
		}
	}
	return out, nil
}

// StateWriter names who writes state: the event attributes of a task run
// (TaskID, Attempt, Run; empty outside a task), the writer's CloudEvents
// source, and the queue whose state subject records the write.
type StateWriter struct {
	Source  string
	Queue   string
	TaskID  string
	Attempt int
	Run     int
	// By names a writer outside a task (recorded in StateWrite.By).
	By string
}

// Any is the revision that WriteState takes as "whatever the key's
// revision is": an unconditional write.
const Any = ^uint64(0)

// WriteState sets key of scope to value (delete when value is nil) if the
// key is at revision rev (0: absent; Any: unconditionally), then records
// the write as a state event (events.TypeState on events.StateSubject) and
// returns it.
//
// ErrStateConflict means nothing was written. A *StateUnrecordedError means
// the value was written and its event could not be stored: the write
// stands, the log misses it (the Prev → Revision chain of the key's events
// shows the gap). Any other error means nothing was written.
func (b *Bus) WriteState(ctx context.Context, by StateWriter, kind, scope, key string, value json.RawMessage, rev uint64) (events.StateWrite, error) {
	k, err := stateKey(kind, scope, key)
	if err != nil {
		return events.StateWrite{}, err
	}
	if !events.ValidToken(by.Queue) {
		return events.StateWrite{}, fmt.Errorf("%w: queue %q", events.ErrInvalidEvent, by.Queue)
	}
	w := events.StateWrite{Kind: kind, Scope: scope, Key: key, Op: events.StateDelete, By: by.By}
	if value != nil {
		if !json.Valid(value) {
			return events.StateWrite{}, fmt.Errorf("%w: state value of %s is not JSON", events.ErrInvalidEvent, key)
		}
		if len(value) > events.MaxStateValueSize {
			return events.StateWrite{}, fmt.Errorf("state value of %s is %d bytes, at most %d: %w", key, len(value), events.MaxStateValueSize, events.ErrTooLarge)
		}
		sum := sha256.Sum256(value)
		w.Op, w.Digest, w.Size = events.StatePut, "sha256:"+hex.EncodeToString(sum[:]), len(value)
		if len(value) <= events.MaxStateValueInline {
			w.Value = value
		}
	}
	for {
		cur, exists, err := b.stateCurrent(ctx, k)
		if err != nil {
			return events.StateWrite{}, err
		}
		switch {
		case rev == Any:
		case rev == 0 && exists, rev != 0 && (!exists || cur.Revision != rev):
			return events.StateWrite{}, fmt.Errorf("%w: %s %s/%s is at revision %d (exists %t), want %d", ErrStateConflict, kind, scope, key, cur.Revision, exists, rev)
		}
		if w.Op == events.StateDelete && !exists {
			return events.StateWrite{}, fmt.Errorf("%w: %s %s/%s", ErrStateNotFound, kind, scope, key)
		}
		m := nats.NewMsg(b.stateSubject(k))
		m.Data = value
		if w.Op == events.StateDelete {
			m.Header.Set(kvOperationHeader, kvOperationDelete)
		}
		ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(cur.Revision))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			if rev == Any {
				continue // another write came between: read again
			}
			return events.StateWrite{}, fmt.Errorf("%w: %s %s/%s moved past revision %d", ErrStateConflict, kind, scope, key, cur.Revision)
		}
		if err != nil {
			return events.StateWrite{}, fmt.Errorf("writing state %s %s/%s (outcome unknown if the server took it): %w", kind, scope, key, err)
		}
		w.Prev, w.Revision = cur.Revision, ack.Sequence
		break
	}
	if err := b.recordState(ctx, by, k, w); err != nil {
		return w, &StateUnrecordedError{Write: w, Err: err}
	}
	return w, nil
}

// recordState publishes the state event of w. Its id (and message id) is
// the key's and revision's: unique, and a retry does not record the write
// twice.
func (b *Bus) recordState(ctx context.Context, by StateWriter, k string, w events.StateWrite) error {
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	msgID := "state:" + k + ":" + strconv.FormatUint(w.Revision, 10)
	ev := events.Event{
		ID: msgID, Source: by.Source, Type: events.TypeState, Subject: w.Scope,
		Time: time.Now().UTC(), DataContentType: events.ContentTypeJSON, Data: data,
		TaskID: by.TaskID, Attempt: by.Attempt, Run: by.Run,
	}
	// The write is made; its record must not be lost to the caller's
	// context ending now.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.PublishTimeout)
	defer cancel()
	var last error
	for range 3 {
		if _, last = b.PublishOwn(ctx, by.Source, events.StateSubject(by.Queue), msgID, &ev); last == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return last
}

// StateUnrecordedError is a state write that was made but whose event could
// not be stored in the log.
type StateUnrecordedError struct {
	Write events.StateWrite
	Err   error
}

func (e *StateUnrecordedError) Error() string {
	return fmt.Sprintf("state %s/%s was written (revision %d) but its event is not in the log: %v", e.Write.Scope, e.Write.Key, e.Write.Revision, e.Err)
}

func (e *StateUnrecordedError) Unwrap() error { return e.Err }

// taskScopeRune reports whether r may be in a task id that names a state
// scope.
func taskScopeRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '=' || r == '/'
}
