package events

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// BatchWriter builds a CloudEvents JSON batch one event at a time, as a
// writer that packs a phase's facts does (docs/PROTOCOL.md §4): the bytes
// are exactly those AppendBatch writes for the same events (TestBatchWriter
// holds it), but each attribute is written straight from the Event's fields
// in the batch's fixed order, without a header map, and the writer may tell
// it that an event's data is JSON it encoded itself, so that it is not
// parsed again. The zero value is an empty writer.
type BatchWriter struct {
	buf []byte // '[' and the elements so far; nil when empty
	n   int
	// shared are the attributes a run's facts share, as in the last event
	// checked whole (checkBatchable): a later fact with the same values has
	// only its own attributes checked (check).
	shared sharedAttrs
}

// sharedAttrs are the attributes the facts of one run have in common.
type sharedAttrs struct {
	source, subject, taskID, taskName, traceParent string
	ok                                             bool
}

// Len is the number of events in the batch.
func (w *BatchWriter) Len() int { return w.n }

// Size is the size the batch would have if taken now.
func (w *BatchWriter) Size() int {
	if w.n == 0 {
		return 0
	}
	return len(w.buf) + 1
}

// Add appends ev to the batch. trustedJSON says that ev.Data is compact
// JSON (as json.Marshal writes it, which the caller encoded itself): it is
// then embedded without being checked again. Add fails, changing nothing,
// when ev is not an event Decode would accept from its binary-mode message,
// when an attribute is not valid UTF-8 (a JSON string could not carry it
// byte for byte), or with ErrTooLarge when the batch would pass
// MaxBatchSize: the caller then takes the batch and starts another, or
// sends ev alone.
func (w *BatchWriter) Add(ev *Event, trustedJSON bool) error {
	if err := w.check(ev); err != nil {
		return err
	}
	start := len(w.buf)
	if w.n == 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, 4096)
		}
		w.buf = append(w.buf, '[')
	} else {
		w.buf = append(w.buf, ',')
	}
	w.buf = appendBatchElement(w.buf, ev, trustedJSON)
	if len(w.buf)+1 > MaxBatchSize {
		w.buf = w.buf[:start]
		return fmt.Errorf("%w: the batch would pass %d bytes", ErrTooLarge, MaxBatchSize)
	}
	w.n++
	return nil
}

// Reuse gives the writer buf's storage for the batch it starts next, and
// reports whether it took it: it does when it holds no buffer (a new
// writer, or one whose batch was just taken). A caller that pools the
// buffers of batches whose messages are stored saves their allocation and
// their growth; buf's contents do not matter.
func (w *BatchWriter) Reuse(buf []byte) bool {
	if w.buf != nil || w.n > 0 {
		return false
	}
	w.buf = buf[:0]
	return true
}

// Take returns the batch, closed, and empties the writer. The bytes are the
// caller's (a publish may keep them until its ack); the writer starts a new
// buffer.
func (w *BatchWriter) Take() []byte {
	if w.n == 0 {
		return nil
	}
	w.buf = append(w.buf, ']')
	b := w.buf
	w.buf, w.n = nil, 0
	return b
}

// check is checkBatchable(ev), the same answer at a fraction of its cost
// for the common case (issue #15, fourth round: ≈ 1.5 % of a run's CPU
// with every trigger recorded): a fact of the run whose shared attributes
// (source, subject, task id and name, traceparent) are those of the last
// event checked whole, with JSON data and no plugin attribute, has only its
// own attributes checked (id, type, trigger, time, the numbers, the data's
// size); anything else, and any fact that fails, is checked whole, which
// gives the error.
func (w *BatchWriter) check(ev *Event) error {
	sh := &w.shared
	if sh.ok && ev.Source == sh.source && ev.Subject == sh.subject && ev.TaskID == sh.taskID &&
		ev.TaskName == sh.taskName && ev.TraceParent == sh.traceParent && ev.DataContentType == ContentTypeJSON &&
		ev.Plugin == "" && ev.PluginVersion == "" && ev.Invocation == "" && ev.PluginError == "" && ev.Replay == "" &&
		ownAttrsValid(ev) {
		return nil
	}
	if err := checkBatchable(ev); err != nil {
		return err
	}
	*sh = sharedAttrs{source: ev.Source, subject: ev.Subject, taskID: ev.TaskID, taskName: ev.TaskName, traceParent: ev.TraceParent, ok: true}
	return nil
}

// ownAttrsValid reports whether the attributes of a fact that are its own
// pass checkBatchable's checks of them: for a fact whose other attributes
// passed them in an event checked whole.
func ownAttrsValid(ev *Event) bool {
	name, ok := strings.CutPrefix(ev.Type, TypeTriggerPrefix)
	if !ok || ev.Trigger != name || strings.TrimSpace(ev.ID) == "" || len(ev.Data) > MaxDataSize ||
		ev.Attempt < 0 || ev.Run < 0 || ev.TimeoutMS < 0 || !utf8.ValidString(ev.ID) || !utf8.ValidString(ev.Type) {
		return false
	}
	if _, known := Lookup(name); !known {
		return false
	}
	if !ev.Time.IsZero() {
		if y := ev.Time.UTC().Year(); y < 0 || y > 9999 {
			return false
		}
	}
	return true
}

// checkBatchable is what AppendBatch checks of an event, without encoding
// it to headers and decoding it back: that Decode would accept the event
// from its binary-mode message, and that every attribute is valid UTF-8.
func checkBatchable(ev *Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	if ev.Attempt < 0 || ev.Run < 0 || ev.TimeoutMS < 0 {
		return fmt.Errorf("%w: attempt, run and timeoutms are non-negative", ErrInvalidEvent)
	}
	for _, v := range [...]string{
		ev.ID, ev.Source, ev.Type, ev.Subject, ev.DataContentType, ev.TaskID, ev.TaskName,
		ev.Trigger, ev.Plugin, ev.PluginVersion, ev.Invocation, ev.PluginError, ev.TraceParent, ev.Replay,
	} {
		if !utf8.ValidString(v) {
			return fmt.Errorf("%w: an attribute is not valid UTF-8", ErrInvalidEvent)
		}
	}
	return nil
}

// appendBatchElement appends ev as one element of a batch: its attributes
// in the order of their binary-mode header names (as AppendBatch sorts
// them), then its data.
func appendBatchElement(dst []byte, ev *Event, trustedJSON bool) []byte {
	dst = append(dst, '{')
	first := true
	str := func(name, v string) {
		if v == "" {
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, `":`...)
		dst = appendJSONString(dst, v)
	}
	num := func(name string, n int) {
		if n == 0 {
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, `":"`...)
		dst = strconv.AppendInt(dst, int64(n), 10)
		dst = append(dst, '"')
	}
	// The order of "ce-<name>" sorted, then content-type.
	num(ExtAttempt, ev.Attempt)
	str("id", ev.ID)
	str(ExtInvocation, ev.Invocation)
	str(ExtPlugin, ev.Plugin)
	str(ExtPluginError, ev.PluginError)
	str(ExtPluginVersion, ev.PluginVersion)
	str(ExtReplay, ev.Replay)
	num(ExtRun, ev.Run)
	str("source", ev.Source)
	str("specversion", SpecVersion)
	str("subject", ev.Subject)
	str(ExtTaskID, ev.TaskID)
	str(ExtTaskName, ev.TaskName)
	if !ev.Time.IsZero() {
		dst = append(dst, `,"time":"`...)
		dst = ev.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	num(ExtTimeoutMS, ev.TimeoutMS)
	str(ExtTraceParent, ev.TraceParent)
	str(ExtTrigger, ev.Trigger)
	str("type", ev.Type)
	str(batchContentType, ev.DataContentType)
	if d := ev.Data; len(d) > 0 {
		if jsonContent(ev.DataContentType) && (trustedJSON && compactEnds(d) || embeddable(d)) {
			dst = append(dst, `,"data":`...)
			dst = append(dst, d...)
		} else {
			dst = append(dst, `,"data_base64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, d)
			dst = append(dst, '"')
		}
	}
	return append(dst, '}')
}

// compactEnds reports whether d has no white space at its ends, which the
// data member must not have to come back byte for byte.
func compactEnds(d []byte) bool {
	switch d[0] {
	case ' ', '\t', '\r', '\n':
		return false
	}
	switch d[len(d)-1] {
	case ' ', '\t', '\r', '\n':
		return false
	}
	return true
}

// BatchJoiner joins whole batches, as BatchWriter.Take returns them, into
// one: the bytes are those one BatchWriter adding every event would write,
// in order. It is how a client that submits many tasks at once packs the
// phase batches of their runs into one phase message (docs/PROTOCOL.md
// §4.4): each batch is copied once, when the joined one is taken. The
// zero value is an empty joiner.
type BatchJoiner struct {
	parts [][]byte
	size  int // of the joined batch so far
	n     int
}

// Len is the number of events in the joined batch.
func (j *BatchJoiner) Len() int { return j.n }

// Add appends batch, of n events, which the joiner keeps until Take. It
// fails with ErrTooLarge, changing nothing, when the joined batch would
// pass MaxBatchSize.
func (j *BatchJoiner) Add(batch []byte, n int) error {
	if n == 0 {
		return nil
	}
	size := len(batch)
	if j.n > 0 {
		size = j.size + len(batch) - 1 // one ',' for a ']' and a '['
	}
	if size > MaxBatchSize {
		return fmt.Errorf("%w: the batch would pass %d bytes", ErrTooLarge, MaxBatchSize)
	}
	j.parts = append(j.parts, batch)
	j.size, j.n = size, j.n+n
	return nil
}

// Take returns the joined batch and empties the joiner.
func (j *BatchJoiner) Take() []byte {
	if j.n == 0 {
		return nil
	}
	out := make([]byte, 0, j.size)
	for i, p := range j.parts {
		if i == 0 {
			out = append(out, p[:len(p)-1]...)
		} else {
			out = append(append(out, ','), p[1:len(p)-1]...)
		}
	}
	out = append(out, ']')
	j.parts, j.size, j.n = nil, 0, 0
	return out
}
