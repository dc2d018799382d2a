package projections

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/qtasks/qtasks-go/events"
)

// decodeRecord decodes the task record that doc holds under the members
// path (each name matched as encoding/json matches a field: case
// insensitively) into m, as json.Unmarshal of doc into structs nesting the
// record under path would, without reflection: with encoding/json, the
// three records of a task's life were a quarter of Prepare's time for the
// task's 30 events (12 µs a record on the benchmark machine; 5 µs now, see
// BenchmarkDecodeRecord). Arguments and results are slices of doc, as
// decodeFact's input and output are; strings are copies.
//
// It returns false when it cannot be sure to decode what encoding/json
// would (escaped or non-ASCII keys, a member given twice, a value of
// another type, a number that is not an integer, bad UTF-8 unescaped,
// anything encoding/json would refuse): the caller then decodes with
// encoding/json, which also says what is wrong. m is then partly written.
// doc must be valid JSON (a fact's input or output is: decodeFact checked
// it).
func decodeRecord(doc []byte, path []string, m *events.Task) bool {
	var buf [24]member
	for _, name := range path {
		ms, isNull, ok := objectMembers(doc, buf[:0])
		if !ok {
			return false
		}
		if isNull {
			return true // a null record leaves the struct as it is
		}
		var val []byte
		for _, mb := range ms {
			k, ok := plainKey(doc, mb)
			if !ok {
				return false
			}
			if strings.EqualFold(k, name) {
				if val != nil {
					return false
				}
				val = doc[mb.val:mb.valEnd]
			}
		}
		if val == nil {
			return true
		}
		doc = val
	}
	ms, isNull, ok := objectMembers(doc, buf[:0])
	if !ok {
		return false
	}
	if isNull {
		return true
	}
	var seen uint32
	for _, mb := range ms {
		k, ok := plainKey(doc, mb)
		if !ok {
			return false
		}
		f := recordField(k)
		if f < 0 {
			continue // encoding/json ignores unknown members
		}
		if seen&(1<<f) != 0 {
			return false
		}
		seen |= 1 << f
		if !setRecordField(m, f, doc[mb.val:mb.valEnd]) {
			return false
		}
	}
	return true
}

// objectMembers returns the members of the object b (valid JSON), or
// isNull for null; ok is false for any other value.
func objectMembers(b []byte, buf []member) (ms []member, isNull, ok bool) {
	i := skipWS(b, 0)
	if i >= len(b) {
		return nil, false, false
	}
	switch b[i] {
	case 'n':
		return nil, true, true
	case '{':
		ms, ok = validObject(b, buf)
		return ms, false, ok
	}
	return nil, false, false
}

// plainKey returns a member's name when it is ASCII without escapes: the
// names encoding/json matches to fields as strings.EqualFold does.
func plainKey(b []byte, mb member) (string, bool) {
	k := b[mb.key+1 : mb.keyEnd-1]
	for _, c := range k {
		if c == '\\' || c >= utf8.RuneSelf {
			return "", false
		}
	}
	return bytesText(k), true
}

// Fields of events.Task that decodeRecord decodes.
const (
	rfID = iota
	rfName
	rfQueue
	rfPriority
	rfStatus
	rfArgs
	rfKw
	rfResult
	rfError
	rfReason
	rfAttempt
	rfRun
	rfRetry
	rfRetryParent
	rfRetryChild
	rfDelayMS
	rfTags
	rfExtra
	rfIdempotencyKey
	rfSubmitDigest
	rfWorker
	rfCreatedAt
	rfUpdatedAt
	rfNotBefore
	rfTimeoutMS
	rfTrace
	rfCount
)

// recordFields are events.Task's JSON names; TestRecordFields checks them
// against the struct tags.
var recordFields = [rfCount]string{
	rfID: "id", rfName: "task_name", rfQueue: "queue", rfPriority: "priority", rfStatus: "status", rfArgs: "args",
	rfKw: "kw", rfResult: "result", rfError: "error", rfReason: "reason", rfAttempt: "attempt", rfRun: "run",
	rfRetry: "retry", rfRetryParent: "retry_parent", rfRetryChild: "retry_child", rfDelayMS: "delay_ms", rfTags: "tags",
	rfExtra: "extra", rfIdempotencyKey: "idempotency_key", rfSubmitDigest: "submit_digest", rfWorker: "worker", rfCreatedAt: "created_at",
	rfUpdatedAt: "updated_at", rfNotBefore: "not_before", rfTimeoutMS: "timeout_ms", rfTrace: "trace",
}

// recordField returns the field named k (ASCII, any case), or -1.
func recordField(k string) int {
	var buf [16]byte
	if len(k) > len(buf) {
		return -1 // longer than any name
	}
	for i := range len(k) {
		c := k[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(k)]) {
	case "id":
		return rfID
	case "task_name":
		return rfName
	case "queue":
		return rfQueue
	case "priority":
		return rfPriority
	case "status":
		return rfStatus
	case "args":
		return rfArgs
	case "kw":
		return rfKw
	case "result":
		return rfResult
	case "error":
		return rfError
	case "reason":
		return rfReason
	case "attempt":
		return rfAttempt
	case "run":
		return rfRun
	case "retry":
		return rfRetry
	case "retry_parent":
		return rfRetryParent
	case "retry_child":
		return rfRetryChild
	case "delay_ms":
		return rfDelayMS
	case "tags":
		return rfTags
	case "extra":
		return rfExtra
	case "idempotency_key":
		return rfIdempotencyKey
	case "submit_digest":
		return rfSubmitDigest
	case "worker":
		return rfWorker
	case "created_at":
		return rfCreatedAt
	case "updated_at":
		return rfUpdatedAt
	case "not_before":
		return rfNotBefore
	case "timeout_ms":
		return rfTimeoutMS
	case "trace":
		return rfTrace
	}
	return -1
}

// setRecordField decodes val (valid JSON) into field f of m as
// encoding/json would; false when it cannot be sure to.
func setRecordField(m *events.Task, f int, val []byte) bool {
	switch f {
	case rfID:
		return setString(&m.ID, val)
	case rfName:
		return setString(&m.Name, val)
	case rfQueue:
		return setString(&m.Queue, val)
	case rfStatus:
		return setString(&m.Status, val)
	case rfError:
		return setString(&m.Error, val)
	case rfReason:
		return setString(&m.Reason, val)
	case rfRetryParent:
		return setString(&m.RetryParent, val)
	case rfRetryChild:
		return setString(&m.RetryChild, val)
	case rfIdempotencyKey:
		return setString(&m.IdempotencyKey, val)
	case rfSubmitDigest:
		return setString(&m.SubmitDigest, val)
	case rfWorker:
		return setString(&m.Worker, val)
	case rfTrace:
		return setString(&m.Trace, val)
	case rfPriority:
		return setInt(&m.Priority, val, strconv.IntSize)
	case rfAttempt:
		return setInt(&m.Attempt, val, strconv.IntSize)
	case rfRun:
		return setInt(&m.Run, val, strconv.IntSize)
	case rfRetry:
		return setInt(&m.Retry, val, strconv.IntSize)
	case rfDelayMS:
		return setInt(&m.DelayMS, val, 64)
	case rfTimeoutMS:
		return setInt(&m.TimeoutMS, val, 64)
	case rfArgs:
		m.Args = json.RawMessage(val) // RawMessage keeps null as the text null
	case rfKw:
		m.Kw = json.RawMessage(val)
	case rfResult:
		m.Result = json.RawMessage(val)
	case rfCreatedAt:
		return m.CreatedAt.UnmarshalJSON(val) == nil // what encoding/json calls, null included
	case rfUpdatedAt:
		return m.UpdatedAt.UnmarshalJSON(val) == nil
	case rfNotBefore:
		return m.NotBefore.UnmarshalJSON(val) == nil
	case rfTags:
		return setTags(m, val)
	case rfExtra:
		if string(val) == "null" {
			m.Extra = nil
			return true
		}
		extra := m.Extra
		err := json.Unmarshal(val, &extra)
		m.Extra = extra
		return err == nil
	}
	return true
}

// setString decodes a JSON string or null. Strings are copied: task ids
// stay in the writer's caches, which must not hold the events' data.
func setString(s *string, val []byte) bool {
	switch val[0] {
	case 'n':
		return true // null leaves a string as it is
	case '"':
		body := val[1 : len(val)-1]
		if bytes.IndexByte(body, '\\') >= 0 || !utf8.Valid(body) {
			// encoding/json unescapes, and replaces what is not UTF-8.
			// (Into a local: a pointer into the record would move the
			// record to the heap.)
			t := *s
			err := json.Unmarshal(val, &t)
			*s = t
			return err == nil
		}
		*s = string(body)
		return true
	}
	return false
}

// setInt decodes a JSON integer or null into an integer of the given
// size; a fraction or an exponent is an error for encoding/json too.
func setInt[T int | int64](p *T, val []byte, bitSize int) bool {
	if val[0] == 'n' {
		return true
	}
	if len(val) <= 9 { // up to 9 digits fit any size asked for: ParseInt's answer without its generality
		n := 0
		for _, c := range val {
			if c < '0' || c > '9' {
				n = -1
				break
			}
			n = n*10 + int(c-'0')
		}
		if n >= 0 && bitSize >= 32 {
			*p = T(n)
			return true
		}
	}
	n, err := strconv.ParseInt(bytesText(val), 10, bitSize)
	if err != nil {
		return false
	}
	*p = T(n)
	return true
}

// decodeArgs decodes the arguments doc holds (members args and kw) into e
// as json.Unmarshal would into json.RawMessage fields; false when it
// cannot be sure to, as decodeRecord.
func decodeArgs(doc []byte, e *effect) bool {
	var buf [8]member
	ms, isNull, ok := objectMembers(doc, buf[:0])
	if !ok {
		return false
	}
	if isNull {
		return true
	}
	for _, mb := range ms {
		k, ok := plainKey(doc, mb)
		if !ok {
			return false
		}
		var p *json.RawMessage
		switch {
		case strings.EqualFold(k, "args"):
			p = &e.args
		case strings.EqualFold(k, "kw"):
			p = &e.kw
		default:
			continue
		}
		if *p != nil {
			return false
		}
		*p = json.RawMessage(doc[mb.val:mb.valEnd])
	}
	return true
}

// setTags decodes a JSON array of strings without escapes, or null, as
// encoding/json decodes into a nil slice: an empty array is an empty
// slice, not nil.
func setTags(m *events.Task, val []byte) bool {
	switch val[0] {
	case 'n':
		m.Tags = nil
		return true
	case '[':
	default:
		return false
	}
	tags := m.Tags[:0]
	i := skipWS(val, 1)
	if val[i] == ']' {
		if tags == nil {
			tags = []string{}
		}
		m.Tags = tags
		return true
	}
	for {
		if val[i] != '"' {
			return false
		}
		end := i + 1
		for val[end] != '"' {
			if val[end] == '\\' || val[end] >= utf8.RuneSelf {
				return false
			}
			end++
		}
		tags = append(tags, string(val[i+1:end]))
		i = skipWS(val, end+1)
		if val[i] == ']' {
			m.Tags = tags
			return true
		}
		if val[i] != ',' {
			return false
		}
		i = skipWS(val, i+1)
	}
}
