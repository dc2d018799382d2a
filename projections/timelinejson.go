package projections

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
)

// AppendTimelineJSON appends task id's timeline (TimelineOf, with the same
// shadowOf) as json.Marshal writes a Timeline, byte for byte, or returns
// ErrNotFound. It writes from the rows it reads, without building the
// Entry and Call values: the console's task page spent half its time
// building them and encoding them with reflection, re-validating every
// fact's input and output (BenchmarkConsole; docs/ARCHITECTURE.md, "The
// operator console"). TestAppendTimelineJSON holds it to json.Marshal of
// TimelineOf.
func (d *DB) AppendTimelineJSON(ctx context.Context, dst []byte, id string, shadowOf func(shadow string) string) ([]byte, error) {
	tr, err := d.openTimeline(ctx, id)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `{"task":`...)
	dst = tr.task.AppendJSON(dst)
	dst = append(dst, `,"entries":[`...)
	var calls []Call // one entry's at a time
	first := true
	err = tr.eachFact(ctx, func(fr *factRow) error {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		var ok bool
		if dst, ok = tr.appendStoredEntry(dst, fr, shadowOf); ok {
			return nil
		}
		if err := fr.decode(); err != nil {
			return err
		}
		diffs, err := factDiffs(fr.e.Trigger, &fr.f, fr.stored, shadowOf)
		if err != nil {
			return err
		}
		calls = calls[:0]
		for j := range fr.f.Calls {
			calls = append(calls, tr.call(fr, j, diffs))
		}
		fr.e.Calls = calls
		dst = fr.e.appendJSON(dst)
		return nil
	})
	if err != nil {
		return dst, err
	}
	actions, err := tr.actions(ctx)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `],"actions":[`...)
	for i := range actions {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = actions[i].appendJSON(dst)
	}
	return append(dst, "]}"...), nil
}

// appendJSON appends e as encoding/json writes it.
func (e *Entry) appendJSON(dst []byte) []byte {
	dst = e.appendHead(dst, nil, nil)
	dst = appendRawField(dst, `,"input":`, e.Input)
	dst = appendRawField(dst, `,"output":`, e.Output)
	dst = appendStringField(dst, `,"failed":`, e.Failed)
	dst = appendStringField(dst, `,"replay":`, e.Replay)
	if len(e.Calls) > 0 {
		dst = append(dst, `,"calls":[`...)
		for i := range e.Calls {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = e.Calls[i].appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// appendHead appends e's opening brace and its members up to source, its
// time from the text of the column when at is not nil (appendTimeText),
// from e.Time otherwise, and its trigger, component and source through
// sc when it is not nil.
func (e *Entry) appendHead(dst []byte, at *sql.NullString, sc *stringCache) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	if e.Index != 0 {
		dst = append(dst, `,"index":`...)
		dst = strconv.AppendInt(dst, int64(e.Index), 10)
	}
	if at != nil {
		dst = appendTimeText(dst, `,"time":`, *at)
	} else {
		dst = appendTimeField(dst, `,"time":`, e.Time)
	}
	dst = append(dst, `,"trigger":`...)
	dst = sc.append(dst, scTrigger, e.Trigger)
	dst = append(dst, `,"component":`...)
	dst = sc.append(dst, scComponent, e.Component)
	dst = append(dst, `,"attempt":`...)
	dst = strconv.AppendInt(dst, int64(e.Attempt), 10)
	dst = append(dst, `,"run":`...)
	dst = strconv.AppendInt(dst, int64(e.Run), 10)
	dst = append(dst, `,"event_id":`...)
	dst = appendJSONString(dst, e.EventID)
	dst = append(dst, `,"source":`...)
	return sc.append(dst, scSource, e.Source)
}

// stringCache keeps the JSON of the last trigger, component and source a
// timeline wrote: a task's facts repeat a few of each, and comparing one
// with the last is cheaper than checking its bytes again (appendJSONString).
type stringCache struct {
	s    [scCount]string
	json [scCount][]byte
}

// Slots of stringCache.
const (
	scTrigger = iota
	scComponent
	scSource
	scCount
)

// append appends s as appendJSONString does, through slot of c; with c
// nil, appendJSONString's.
func (c *stringCache) append(dst []byte, slot int, s string) []byte {
	if c == nil {
		return appendJSONString(dst, s)
	}
	if c.json[slot] == nil || c.s[slot] != s {
		c.s[slot], c.json[slot] = s, appendJSONString(c.json[slot][:0], s)
	}
	return append(dst, c.json[slot]...)
}

// appendJSON appends c as encoding/json writes it.
func (c *Call) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"fact_seq":`...)
	dst = strconv.AppendUint(dst, c.FactSeq, 10)
	if c.FactIdx != 0 {
		dst = append(dst, `,"fact_idx":`...)
		dst = strconv.AppendInt(dst, int64(c.FactIdx), 10)
	}
	dst = append(dst, `,"idx":`...)
	dst = strconv.AppendInt(dst, int64(c.Idx), 10)
	dst = appendStringField(dst, `,"task_id":`, c.TaskID)
	dst = append(dst, `,"trigger":`...)
	dst = appendJSONString(dst, c.Trigger)
	dst = append(dst, `,"attempt":`...)
	dst = strconv.AppendInt(dst, int64(c.Attempt), 10)
	dst = append(dst, `,"plugin":`...)
	dst = appendJSONString(dst, c.Plugin)
	dst = appendStringField(dst, `,"version":`, c.Version)
	dst = append(dst, `,"invocation":`...)
	dst = appendJSONString(dst, c.Invocation)
	dst = append(dst, `,"outcome":`...)
	dst = appendJSONString(dst, c.Outcome)
	dst = appendStringField(dst, `,"policy":`, c.Policy)
	dst = appendStringField(dst, `,"reason":`, c.Reason)
	dst = appendStringField(dst, `,"content_type":`, c.ContentType)
	dst = appendRawField(dst, `,"patch":`, c.Patch)
	dst = append(dst, `,"latency_us":`...)
	dst = strconv.AppendInt(dst, c.LatencyUS, 10)
	if c.Shadow {
		dst = append(dst, `,"shadow":true`...)
	}
	if c.InvokeSeq != 0 {
		dst = append(dst, `,"invoke_seq":`...)
		dst = strconv.AppendUint(dst, c.InvokeSeq, 10)
	}
	if c.PatchSeq != 0 {
		dst = append(dst, `,"patch_seq":`...)
		dst = strconv.AppendUint(dst, c.PatchSeq, 10)
	}
	if len(c.Changes) > 0 {
		dst = append(dst, `,"changes":[`...)
		for i := range c.Changes {
			if i > 0 {
				dst = append(dst, ',')
			}
			ch := &c.Changes[i]
			dst = append(dst, `{"op":`...)
			dst = appendJSONString(dst, ch.Op)
			dst = append(dst, `,"path":`...)
			dst = appendJSONString(dst, ch.Path)
			dst = appendRawField(dst, `,"old":`, ch.Old)
			dst = appendRawField(dst, `,"new":`, ch.New)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// appendJSON appends a as encoding/json writes it.
func (a *Attempt) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"attempt":`...)
	dst = strconv.AppendInt(dst, int64(a.Attempt), 10)
	dst = append(dst, `,"status":`...)
	dst = appendJSONString(dst, a.Status)
	dst = appendStringField(dst, `,"worker":`, a.Worker)
	dst = append(dst, `,"runs":`...)
	dst = strconv.AppendInt(dst, int64(a.Runs), 10)
	dst = appendTimeField(dst, `,"queued_at":`, a.QueuedAt)
	dst = appendTimeField(dst, `,"started_at":`, a.StartedAt)
	dst = appendTimeField(dst, `,"executed_at":`, a.ExecutedAt)
	dst = appendTimeField(dst, `,"finished_at":`, a.FinishedAt)
	dst = appendRawField(dst, `,"result":`, a.Result)
	dst = appendStringField(dst, `,"error":`, a.Error)
	dst = appendStringField(dst, `,"reason":`, a.Reason)
	dst = appendStringField(dst, `,"retry_parent":`, a.RetryParent)
	dst = appendStringField(dst, `,"retry_child":`, a.RetryChild)
	if a.FinalSeq != 0 {
		dst = append(dst, `,"final_seq":`...)
		dst = strconv.AppendUint(dst, a.FinalSeq, 10)
	}
	return append(dst, '}')
}

// appendJSON appends a as encoding/json writes it.
func (a *Action) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, a.Seq, 10)
	dst = append(dst, `,"action":`...)
	dst = appendJSONString(dst, a.Action)
	dst = appendStringField(dst, `,"task_id":`, a.TaskID)
	if a.Attempt != 0 {
		dst = append(dst, `,"attempt":`...)
		dst = strconv.AppendInt(dst, int64(a.Attempt), 10)
	}
	dst = append(dst, `,"queue":`...)
	dst = appendJSONString(dst, a.Queue)
	dst = append(dst, `,"by":`...)
	dst = appendJSONString(dst, a.By)
	dst = appendStringField(dst, `,"reason":`, a.Reason)
	dst = appendTimeField(dst, `,"time":`, a.Time)
	return append(dst, '}')
}

// appendRawJSON appends raw as encoding/json writes a json.RawMessage:
// compacted, with <, >, & and U+2028, U+2029 escaped in its strings. What
// the projection holds is valid JSON (the projector writes only JSON it
// has parsed) and nearly always in that form already, which one pass
// checks; only otherwise is it rewritten. JSON that is not valid after
// all is copied as it is (json.Marshal would refuse it).
func appendRawJSON(dst, raw []byte) []byte {
	if marshalForm(raw) {
		return append(dst, raw...)
	}
	var c, h bytes.Buffer
	if err := json.Compact(&c, raw); err != nil {
		return append(dst, raw...)
	}
	json.HTMLEscape(&h, c.Bytes())
	return append(dst, h.Bytes()...)
}

// marshalForm reports whether valid JSON raw is as json.Marshal writes a
// json.RawMessage: no whitespace between tokens, and none of the
// characters it escapes for HTML. It runs over every value the task page
// and the tasks page write: a loop outside strings and one inside, each
// stopping only at the bytes a table marks (a switch of comparisons on
// every byte was a fifth of appendStoredEntry's time).
func marshalForm(raw []byte) bool {
	i, n := 0, len(raw)
	for i < n {
		for i < n && !mfStopOut[raw[i]] {
			i++
		}
		if i >= n {
			return true
		}
		if raw[i] != '"' {
			return false // whitespace, or what valid JSON holds only in strings
		}
		for i++; ; {
			for i < n && !mfStopIn[raw[i]] {
				i++
			}
			if i >= n {
				return true
			}
			switch raw[i] {
			case '"':
				i++
			case '\\':
				i += 2
				continue
			case 0xE2:
				if i+2 < n && raw[i+1] == 0x80 && (raw[i+2] == 0xA8 || raw[i+2] == 0xA9) {
					return false // U+2028, U+2029
				}
				i++
				continue
			default:
				return false // <, >, &
			}
			break
		}
	}
	return true
}

// mfStopOut and mfStopIn are the bytes marshalForm looks at outside
// strings and in them.
var mfStopOut, mfStopIn = func() (out, in [256]bool) {
	for _, c := range []byte{'"', ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2} {
		out[c] = true
	}
	for _, c := range []byte{'"', '\\', '<', '>', '&', 0xE2} {
		in[c] = true
	}
	return out, in
}()
