// Package taskrec finds the task record in a trigger's payload, for the
// built-in plugins that read or patch a task's extra and tags.
package taskrec

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/qtasks/qtasks-go/events"
)

// ErrNoRecord is returned for a trigger whose payload carries no task
// record (task_executor_args_replace, process triggers, ...).
var ErrNoRecord = errors.New("the payload of this trigger carries no task record")

// ErrMalformed wraps a payload that does not have the shape docs/PROTOCOL.md
// §7.2 gives its trigger.
var ErrMalformed = errors.New("malformed payload")

// paths maps each trigger whose payload carries the task record (or, for
// qtasks_add_task_before_broker, its extra at the top level) to the keys
// leading to it (PROTOCOL.md §7.2).
var paths = map[string][]string{
	events.QTasksAddTaskBeforeBroker: {},
	events.BrokerAddBefore:           {"model"},
	events.BrokerAddAfter:            {"model"},
	events.StorageAdd:                {"task_status"},
	events.StorageGet:                {"result"},
	events.BrokerGet:                 {"task"},
	events.WorkerExecuteBefore:       {"model"},
	events.BrokerUpdate:              {"kw", "mapping"},
	events.StorageUpdate:             {"kw", "mapping"},
	events.WorkerTaskErrorRetry:      {"model"},
	events.WorkerRemoveFinishedTask:  {"model"},
	events.BrokerRemoveFinishedTask:  {"model"},
	events.StorageRemoveFinishedTask: {"model"},
	events.WorkerExecuteAfter:        {"model"},
}

// Path returns the keys leading from trigger's payload to the task record,
// and whether its payload carries one. For qtasks_add_task_before_broker
// the path is empty: the payload itself has task_name, extra, args and kw.
func Path(trigger string) ([]string, bool) {
	p, ok := paths[trigger]
	return p, ok
}

// Pointer is the JSON Pointer of key below the record of trigger's payload
// (e.g. "/model/extra" for worker_execute_before and key "extra").
func Pointer(trigger string, key ...string) (string, bool) {
	p, ok := paths[trigger]
	if !ok {
		return "", false
	}
	var b strings.Builder
	for _, k := range append(append([]string(nil), p...), key...) {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(k))
	}
	return b.String(), true
}

// Writable reports whether a patch on trigger may change key of the task
// record (e.g. "extra", "tags"), under the trigger's contract.
func Writable(trigger, key string) bool {
	ptr, ok := Pointer(trigger, key)
	if !ok {
		return false
	}
	t, ok := events.Lookup(trigger)
	return ok && t.Returnable && t.Allows(ptr)
}

// Triggers lists the triggers whose payload carries the task record.
func Triggers() []string {
	out := make([]string, 0, len(paths))
	for _, t := range events.Catalog() {
		if _, ok := paths[t.Name]; ok {
			out = append(out, t.Name)
		}
	}
	return out
}

// WritableTriggers lists the triggers on which key of the task record may
// be patched.
func WritableTriggers(key string) []string {
	var out []string
	for _, t := range Triggers() {
		if Writable(t, key) {
			out = append(out, t)
		}
	}
	return out
}

// Record returns the task record in trigger's payload as its JSON members.
// A record that is absent or null is returned empty (qtasks_add_task_before_broker
// may carry "extra": null).
func Record(trigger string, payload []byte) (map[string]json.RawMessage, error) {
	p, ok := paths[trigger]
	if !ok {
		return nil, fmt.Errorf("%s: %w", trigger, ErrNoRecord)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("%w: %s payload is not a JSON object: %w", ErrMalformed, trigger, err)
	}
	var where strings.Builder
	for _, k := range p {
		where.WriteString("/" + k)
		v, ok := m[k]
		if !ok || string(v) == "null" {
			return nil, fmt.Errorf("%w: %s payload has no %s", ErrMalformed, trigger, where.String())
		}
		m = nil
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("%w: %s payload: %s is not a JSON object", ErrMalformed, trigger, where.String())
		}
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	return m, nil
}

// Extra returns the extra of the task record in trigger's payload; nil when
// it has none.
func Extra(trigger string, payload []byte) (map[string]json.RawMessage, error) {
	rec, err := Record(trigger, payload)
	if err != nil {
		return nil, err
	}
	v, ok := rec["extra"]
	if !ok || string(v) == "null" {
		return nil, nil //nolint:nilnil // no extra: a nil map, which reads as empty
	}
	var extra map[string]json.RawMessage
	if err := json.Unmarshal(v, &extra); err != nil {
		ptr, _ := Pointer(trigger, "extra")
		return nil, fmt.Errorf("%w: %s payload: %s is not a JSON object", ErrMalformed, trigger, ptr)
	}
	return extra, nil
}
