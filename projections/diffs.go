package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/qtasks/qtasks-go/events"
)

// schemaDiffs stores with each fact what its plugin calls' patches changed
// (callDiffs, each shadow's against the payload as the chain left it), as
// a JSON array with one element per call: the call's changes, or null.
// The projector computes it once, in Prepare, beside the writer; the task
// page computed it for each call of each fact on every request, which was
// 60% of the page's time (docs/ARCHITECTURE.md, "The operator console"). A
// column of facts, not of plugin_calls: the task page reads the facts of a
// task by facts_task and finds the diffs in the rows it reads, where
// plugin_calls has no index by task. NULL when no call changed anything.
const schemaDiffs = `
ALTER TABLE facts ADD COLUMN diffs TEXT;
`

// encodeDiffs is the diffs column of a fact: nil (NULL) when no call has
// a change.
func encodeDiffs(diffs [][]Change) []byte {
	for _, d := range diffs {
		if len(d) > 0 {
			b, err := json.Marshal(diffs)
			if err != nil { // Changes hold JSON that Diff parsed
				return nil
			}
			return b
		}
	}
	return nil
}

// factDiffs returns the changes of each call of a fact for the timeline:
// the stored ones, or, for a firing with a shadow call whose live plugin
// shadowOf names and the firing called, all of them computed again, so
// that the shadow's patch is diffed against what its live plugin saw (the
// log does not say whom a shadow shadowed, so the stored diffs cannot).
func factDiffs(trigger string, f *events.Fact, stored []byte, shadowOf func(string) string) ([][]Change, error) {
	if shadowOf != nil && shadowsLive(f.Calls, shadowOf) {
		return factCallDiffs(trigger, f.Input, f.Output, f.Calls, true, shadowOf), nil
	}
	if len(stored) == 0 {
		return nil, nil
	}
	out, ok := decodeDiffs(stored)
	if !ok {
		var slow [][]Change // a variable of its own: &slow moves it to the heap
		if err := json.Unmarshal(stored, &slow); err != nil {
			return nil, fmt.Errorf("diffs: %w", err)
		}
		out = slow
	}
	if len(out) != len(f.Calls) {
		return nil, fmt.Errorf("diffs: %d for %d calls", len(out), len(f.Calls))
	}
	return out, nil
}

// decodeDiffs decodes a diffs column as json.Unmarshal into a nil
// [][]Change would, without reflection (the unmarshal was a sixth of the
// task page's time): strings and values are slices of b, which the caller
// must not change. It returns false when it cannot be sure to decode what
// encoding/json would (escapes, keys not as encodeDiffs writes them); the
// caller then uses encoding/json.
func decodeDiffs(b []byte) ([][]Change, bool) {
	var ebuf [32]member
	if len(b) == 0 || b[skipWS(b, 0)] != '[' {
		return nil, false
	}
	elems, ok := validObject(b, ebuf[:0])
	if !ok {
		return nil, false
	}
	out := make([][]Change, len(elems))
	var cbuf [16]member
	var mbuf [4]member
	for i, el := range elems {
		arr := b[el.val:el.valEnd]
		switch arr[0] {
		case 'n':
			continue
		case '[':
		default:
			return nil, false
		}
		chs := splitValid(arr, cbuf[:0]) // validated with b
		changes := make([]Change, 0, len(chs))
		for _, ce := range chs {
			doc := arr[ce.val:ce.valEnd]
			if doc[0] != '{' {
				return nil, false
			}
			ms := splitValid(doc, mbuf[:0])
			var c Change
			for _, mb := range ms {
				k, ok := plainKey(doc, mb)
				if !ok {
					return nil, false
				}
				val := doc[mb.val:mb.valEnd]
				switch k {
				case "op":
					ok = val[0] == '"' && setString(&c.Op, val)
				case "path":
					ok = val[0] == '"' && setString(&c.Path, val)
				case "old":
					c.Old = json.RawMessage(val)
				case "new":
					c.New = json.RawMessage(val)
				default:
					ok = false
				}
				if !ok {
					return nil, false
				}
			}
			changes = append(changes, c)
		}
		out[i] = changes
	}
	return out, true
}

// shadowsLive reports whether a shadow call with a patch shadows, by
// shadowOf, a plugin that the firing called live.
func shadowsLive(calls []events.PluginCall, shadowOf func(string) string) bool {
	for _, c := range calls {
		if !c.Shadow || c.Outcome != events.OutcomeShadow || len(c.Patch) == 0 {
			continue
		}
		live := shadowOf(c.Plugin)
		if live == "" {
			continue
		}
		for _, l := range calls {
			if !l.Shadow && l.Plugin == live {
				return true
			}
		}
	}
	return false
}

// backfillDiffs is migration 8's data step: it computes the diffs of the
// facts already projected, exactly as Prepare computes them for new facts.
func backfillDiffs(ctx context.Context, tx *sql.Tx) error {
	const page = 500
	var after int64 = -1
	for {
		type fact struct {
			pos     int64
			trigger string
			data    string
		}
		var facts []fact
		rows, err := tx.QueryContext(ctx, `SELECT pos, trigger, data FROM facts
			WHERE pos > ? AND json_array_length(data, '$.calls') > 0 ORDER BY pos LIMIT ?`, after, page)
		if err != nil {
			return fmt.Errorf("backfilling diffs: %w", err)
		}
		for rows.Next() {
			var f fact
			if err := rows.Scan(&f.pos, &f.trigger, &f.data); err != nil {
				_ = rows.Close() //nolint:sqlclosecheck // closed before the page's writes, on the same transaction; a defer would hold it open across them
				return fmt.Errorf("backfilling diffs: %w", err)
			}
			facts = append(facts, f)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("backfilling diffs: %w", err)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("backfilling diffs: %w", err)
		}
		for _, f := range facts {
			var ef events.Fact
			if err := decodeFact([]byte(f.data), &ef); err != nil {
				return fmt.Errorf("backfilling diffs: fact at %d: %w", f.pos, err)
			}
			if d := encodeDiffs(factCallDiffs(f.trigger, ef.Input, ef.Output, ef.Calls, true, nil)); d != nil {
				if _, err := tx.ExecContext(ctx, `UPDATE facts SET diffs = ? WHERE pos = ?`, string(d), f.pos); err != nil {
					return fmt.Errorf("backfilling diffs: %w", err)
				}
			}
			after = f.pos
		}
		if len(facts) < page {
			return nil
		}
	}
}
