package events

import (
	"encoding/json"
	"errors"
	"fmt"
)

// TypeState is a write to shared or per-task state (QTasks' AsyncState,
// made durable and distributed): who wrote what, under which revision. Only
// executors write it, on StateSubject, which no plugin's rights include.
const TypeState = "io.qtasks.state"

// SubjectState prefixes state writes: qtasks.state.<queue>, the queue of
// the task that wrote (or of the app, for a write made outside a task). The
// scope and key are in the data, not the subject: a subject per key would
// cost the server an index entry per key for as long as the log keeps it.
const SubjectState = SubjectRoot + ".state"

// StateSubject is where the state writes of queue's tasks are recorded.
func StateSubject(queue string) string { return SubjectState + "." + queue }

// ExtraState is the key of a task record's extra that holds the task's
// per-task state, a JSON object: what plugins patch (plugins/state) and
// what the task function's own state writes (StateTask) leave there when
// its run ends.
const ExtraState = "state"

// State kinds (StateWrite.Kind).
const (
	// StateShared is state shared by every task of every worker, under a
	// scope name the tasks agree on.
	StateShared = "shared"
	// StateTask is a task's own state: the scope is the task id, shared by
	// the task's attempts and by nothing else.
	StateTask = "task"
)

// State operations (StateWrite.Op).
const (
	StatePut    = "put"
	StateDelete = "delete"
)

// Limits of state.
const (
	// MaxStateValueSize bounds one state value, in bytes of JSON.
	MaxStateValueSize = 64 * 1024
	// MaxStateValueInline is the largest value a state event carries as it
	// is; a larger one is recorded by its digest and size only, so that a
	// loop writing a big value does not fill the log with copies of it.
	MaxStateValueInline = 4 * 1024
)

// StateWrite is the data of a state event. The event's ce-taskid,
// ce-attempt and ce-run name the task run that wrote (absent for a write
// made outside a task), its source the process.
type StateWrite struct {
	Kind  string `json:"kind"`
	Scope string `json:"scope"`
	Key   string `json:"key"`
	Op    string `json:"op"`
	// Prev is the key's revision the write replaced (0: the key did not
	// exist); Revision the one it made. Every write is a compare-and-set on
	// Prev, so the writes of one key form a chain Prev → Revision: a
	// missing link is a write whose event was lost (docs/PROTOCOL.md §12.10).
	Prev     uint64 `json:"prev"`
	Revision uint64 `json:"revision"`
	// Value is the value written, when it is at most MaxStateValueInline
	// bytes; Digest ("sha256:<hex>" of the value's JSON) and Size are set
	// for every put.
	Value  json.RawMessage `json:"value,omitempty"`
	Digest string          `json:"digest,omitempty"`
	Size   int             `json:"size,omitempty"`
	// By says who wrote a write made outside a task (the app's node id).
	By string `json:"by,omitempty"`
}

// ValidStateName reports whether s can be a state scope or key: letters,
// digits, '-' and '_', 1 to 64 bytes (a JetStream KV key token and a
// subject token both).
func ValidStateName(s string) bool { return ValidName(s) }

// Check reports what makes w an invalid state write, or nil.
func (w *StateWrite) Check() error {
	var errs []error
	switch w.Kind {
	case StateShared:
		if !ValidStateName(w.Scope) {
			errs = append(errs, fmt.Errorf("scope %q: want letters, digits, - and _, 1 to 64 bytes", w.Scope))
		}
	case StateTask:
		if !ValidToken(w.Scope) {
			errs = append(errs, fmt.Errorf("task scope %q is not a valid task id", w.Scope))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: want %s or %s", w.Kind, StateShared, StateTask))
	}
	if !ValidStateName(w.Key) {
		errs = append(errs, fmt.Errorf("key %q: want letters, digits, - and _, 1 to 64 bytes", w.Key))
	}
	switch w.Op {
	case StatePut:
		if w.Digest == "" || w.Size <= 0 || w.Size > MaxStateValueSize {
			errs = append(errs, fmt.Errorf("a put records its value's digest and size (1 to %d bytes)", MaxStateValueSize))
		}
		if len(w.Value) > MaxStateValueInline {
			errs = append(errs, fmt.Errorf("inline value of %d bytes, at most %d", len(w.Value), MaxStateValueInline))
		}
	case StateDelete:
		if len(w.Value) > 0 || w.Digest != "" {
			errs = append(errs, errors.New("a delete records no value"))
		}
	default:
		errs = append(errs, fmt.Errorf("op %q: want %s or %s", w.Op, StatePut, StateDelete))
	}
	if w.Revision <= w.Prev {
		errs = append(errs, fmt.Errorf("revision %d does not follow %d", w.Revision, w.Prev))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}
