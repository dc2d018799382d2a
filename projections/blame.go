package projections

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/jsondiff"
)

// Change is one difference between two JSON documents, at a JSON Pointer.
type Change struct {
	// Op is "add", "remove" or "replace".
	Op   string          `json:"op"`
	Path string          `json:"path"`
	Old  json.RawMessage `json:"old,omitempty"`
	New  json.RawMessage `json:"new,omitempty"`
}

// String renders the change for a terminal: "+ /kw/x: 1", "- /kw/y: 2",
// "~ /kw/a: 1 → 10".
func (c Change) String() string {
	switch c.Op {
	case "add":
		return "+ " + c.Path + ": " + string(c.New)
	case "remove":
		return "- " + c.Path + ": " + string(c.Old)
	}
	return "~ " + c.Path + ": " + string(c.Old) + " → " + string(c.New)
}

// Diff returns the changes that turn JSON document a into b, leaf by leaf:
// objects are compared key by key, arrays of equal length element by
// element; anything else that differs is one replace. Keys are visited in
// sorted order, so the result is deterministic. An empty document is null.
func Diff(a, b []byte) ([]Change, error) {
	ops, err := jsondiff.Diff(orNull(a), orNull(b), jsondiff.Leaves)
	if err != nil {
		return nil, err
	}
	var out []Change
	for _, o := range ops {
		out = append(out, Change{Op: o.Op, Path: o.Path, Old: o.Old, New: o.New})
	}
	return out, nil
}

func orNull(b []byte) []byte {
	if len(bytes.TrimSpace(b)) == 0 {
		return []byte("null")
	}
	return b
}

// fieldMap maps a part of a trigger's payload to a field of the task record
// (JSON Pointers into events.Task's JSON): a change at payload path From (or
// below) is a change of the task field To (or below).
type fieldMap struct{ From, To string }

func modelFields(prefix string, fields ...string) []fieldMap {
	out := make([]fieldMap, len(fields))
	for i, f := range fields {
		out[i] = fieldMap{prefix + "/" + f, "/" + f}
	}
	return out
}

// blameFields says, for each returnable trigger whose patches change the
// task (its record, its arguments or its result), which payload paths the
// executor takes back into the task. Changes elsewhere in a payload are
// recorded with the plugin call but change no task field.
var blameFields = map[string][]fieldMap{
	events.QTasksAddTaskBeforeBroker:             modelFields("", "task_name", "priority", "args", "kw", "extra"),
	events.BrokerAddBefore:                       modelFields("/model", "priority", "args", "kw", "extra", "tags", "result"),
	events.StorageAdd:                            modelFields("/task_status", "priority", "args", "kw", "extra", "tags", "result"),
	events.StorageGet:                            modelFields("/result", "priority", "args", "kw", "extra"),
	events.BrokerGet:                             modelFields("/task", "priority", "args", "kw", "extra"),
	events.BrokerAddWorker:                       modelFields("", "priority", "args", "kw"),
	events.WorkerAdd:                             modelFields("", "priority", "args", "kw"),
	events.WorkerExecuteBefore:                   modelFields("/model", "extra"),
	events.BrokerUpdate:                          modelFields("/kw/mapping", "extra"),
	events.StorageUpdate:                         modelFields("/kw/mapping", "extra"),
	events.WorkerRunTaskBefore:                   modelFields("/task_broker", "priority", "args", "kw"),
	events.TaskExecutorArgsReplace:               modelFields("", "args", "kw"),
	events.TaskExecutorRunTask:                   modelFields("", "result"),
	events.TaskExecutorRunTaskGen:                {{"/results", "/result"}},
	events.TaskExecutorRunTaskTriggerError:       modelFields("", "result"),
	events.TaskExecutorAfterExecuteResultReplace: modelFields("", "result"),
	events.TaskExecutorDecode:                    modelFields("", "result"),
	events.WorkerTaskErrorRetry:                  modelFields("/model", "status", "delay_ms"),
	events.WorkerRemoveFinishedTask:              modelFields("/model", "result", "extra"),
	events.BrokerRemoveFinishedTask:              modelFields("/model", "result", "extra"),
}

// taskField maps a payload path of trigger to a task field path.
func taskField(trigger, p string) (string, bool) {
	for _, m := range blameFields[trigger] {
		if p == m.From {
			return m.To, true
		}
		if rest, ok := strings.CutPrefix(p, m.From+"/"); ok {
			return m.To + "/" + rest, true
		}
	}
	return "", false
}

// blameRow is a task field changed by a plugin call.
type blameRow struct {
	path  string
	op    string
	value json.RawMessage // the new value; nil for a removal
	idx   int             // the call's position in the fact
	call  events.PluginCall
}

// callDiffs replays the applied calls of a firing over its input and
// returns, for each call (by position), the changes its patch made to the
// payload. Only applied calls change the payload, in chain order. A shadow
// call changes nothing; it saw what the live plugin it shadows saw, and its
// patch is diffed against that payload when shadowOf names that plugin and
// the firing called it. The fact does not say which plugin a shadow
// shadowed: without shadowOf (or for a shadow it does not know), the patch
// is diffed against the payload as the chain left it. Without shadows,
// only the calls that changed the payload (applied, not shadow) are diffed.
func callDiffs(trigger string, input json.RawMessage, calls []events.PluginCall, shadows bool, shadowOf func(shadow string) string) [][]Change {
	return factCallDiffs(trigger, input, nil, calls, shadows, shadowOf)
}

// factCallDiffs is callDiffs for a fact whose output is known: the
// payload the last applied live call left is the fact's output (the
// executor records the chain's payload there), so that call's patch is not
// applied a second time (issue #15: "a patch is applied twice"). Most
// firings with a mutator have one applied call, and then no patch is
// applied here at all.
func factCallDiffs(trigger string, input, output json.RawMessage, calls []events.PluginCall, shadows bool, shadowOf func(shadow string) string) [][]Change {
	t, ok := events.Lookup(trigger)
	if !ok || !t.Returnable {
		return nil
	}
	// last is the last call that changed the payload, when every such
	// call's patch is in the fact: a patch dropped to keep a large fact
	// under the limit leaves the payloads after it unknown, and then the
	// patches are applied as callDiffs applies them.
	last := -1
	if len(output) > 0 {
		for i := range calls {
			if c := &calls[i]; c.Outcome == events.OutcomeApplied && !c.Shadow {
				if len(c.Patch) == 0 {
					last = -1
					break
				}
				last = i
			}
		}
	}
	out := make([][]Change, len(calls))
	mc := events.NewMutatorChain(t, input, 0)
	var saw map[string][]byte // what each live plugin saw, for its shadows
	for i := range calls {
		c := &calls[i]
		doc := mc.Payload()
		if shadows && shadowOf != nil && !c.Shadow {
			if saw == nil {
				saw = map[string][]byte{}
			}
			if _, dup := saw[c.Plugin]; !dup {
				saw[c.Plugin] = doc
			}
		}
		if len(c.Patch) == 0 || (c.Outcome != events.OutcomeApplied && c.Outcome != events.OutcomeShadow) ||
			(!shadows && (c.Outcome != events.OutcomeApplied || c.Shadow)) {
			continue
		}
		var next []byte
		switch {
		case i == last:
			// The chain goes on from the recorded output (the shadows
			// after it are diffed against it).
			next = output
			mc = events.NewMutatorChain(t, output, 0)
		case c.Outcome == events.OutcomeApplied && !c.Shadow:
			// A live call that changed the payload: the chain's own
			// replay says what the next plugin saw.
			if mc.Replay(c) != nil {
				continue // the executor rejected it too; the call's reason says why
			}
			next = mc.Payload()
		default:
			// A shadow's patch, judged as a live one against what it
			// saw (as verdict.CallEffect does): recorded only, it changes
			// nothing for the plugins after it.
			from := doc
			if c.Shadow && shadowOf != nil {
				if d, ok := saw[shadowOf(c.Plugin)]; ok {
					from = d
				}
			}
			a := events.RecordedAnswer(*c)
			var judged events.PluginCall
			if next = a.Judge(t, from, &judged); judged.Outcome != events.OutcomeApplied {
				continue
			}
			doc = from
		}
		ch, err := Diff(doc, next)
		if err != nil {
			continue
		}
		out[i] = ch
	}
	return out
}

// blameOf returns the task fields that the applied calls of a firing of
// trigger changed, in call order.
func blameOf(trigger string, input json.RawMessage, calls []events.PluginCall) []blameRow {
	if !blameable(trigger, calls) {
		return nil
	}
	return blameFrom(trigger, calls, callDiffs(trigger, input, calls, false, nil))
}

// blameable reports whether a firing of trigger with calls can change a
// task field: the trigger maps payload paths to fields and a call applied.
func blameable(trigger string, calls []events.PluginCall) bool {
	if _, ok := blameFields[trigger]; !ok {
		return false
	}
	for _, c := range calls {
		if c.Outcome == events.OutcomeApplied && !c.Shadow {
			return true
		}
	}
	return false
}

// blameFrom returns the task fields that the applied calls changed, from
// the calls' diffs (callDiffs: an applied call's diff is the same with or
// without shadows, since a shadow changes nothing).
func blameFrom(trigger string, calls []events.PluginCall, diffs [][]Change) []blameRow {
	if !blameable(trigger, calls) {
		return nil
	}
	var out []blameRow
	for i, changes := range diffs {
		c := calls[i]
		if c.Outcome != events.OutcomeApplied || c.Shadow {
			continue
		}
		for _, ch := range changes {
			f, ok := taskField(trigger, ch.Path)
			if !ok {
				continue
			}
			out = append(out, blameRow{path: f, op: ch.Op, value: ch.New, idx: i, call: c})
		}
	}
	return out
}

// backfillBlame is migration 2's data step: it computes field blame from
// the facts a schema 1 projection holds, exactly as Apply computes it for
// new facts.
func backfillBlame(ctx context.Context, tx *sql.Tx) error {
	const page = 500
	var after int64
	for {
		type fact struct {
			seq     int64
			trigger string
			taskID  string
			attempt int
			data    string
		}
		var facts []fact
		rows, err := tx.QueryContext(ctx, `SELECT f.seq, f.trigger, k.id, f.attempt, f.data
			FROM facts f JOIN task_keys k ON k.key = f.task_key
			WHERE f.seq > ? AND f.replay IS NULL
			AND EXISTS (SELECT 1 FROM plugin_calls c WHERE c.fact_seq = f.seq AND c.outcome = 'applied' AND c.shadow = 0)
			ORDER BY f.seq LIMIT ?`, after, page)
		if err != nil {
			return fmt.Errorf("backfilling blame: %w", err)
		}
		for rows.Next() {
			var f fact
			if err := rows.Scan(&f.seq, &f.trigger, &f.taskID, &f.attempt, &f.data); err != nil {
				_ = rows.Close() //nolint:sqlclosecheck // closed before the page's writes, on the same transaction; a defer would hold it open across them
				return fmt.Errorf("backfilling blame: %w", err)
			}
			facts = append(facts, f)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("backfilling blame: %w", err)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("backfilling blame: %w", err)
		}
		for _, f := range facts {
			var ef events.Fact
			if err := decodeFact([]byte(f.data), &ef); err != nil {
				return fmt.Errorf("backfilling blame: fact %d: %w", f.seq, err)
			}
			for _, b := range blameOf(f.trigger, ef.Input, ef.Calls) {
				if _, err := tx.ExecContext(ctx, `DELETE FROM field_blame WHERE task_id = ? AND path > ? AND path < ?`,
					f.taskID, b.path+"/", b.path+"0"); err != nil {
					return fmt.Errorf("backfilling blame: %w", err)
				}
				// Schema 2's field_blame, keyed by task id (Apply's statements
				// are of the current schema).
				if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO field_blame (task_id, path, plugin, version, seq, idx,
					trigger, attempt, op, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, f.taskID, b.path, b.call.Plugin, b.call.Version,
					f.seq, b.idx, f.trigger, f.attempt, b.op, nullText(b.value)); err != nil {
					return fmt.Errorf("backfilling blame: %w", err)
				}
			}
			after = f.seq
		}
		if len(facts) < page {
			return nil
		}
	}
}
