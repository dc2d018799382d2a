package events

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// The hand-written JSON encoding of a task record and of the trigger
// payloads (payloads.go). A task is encoded on every record write, in every
// task message and in half a run's facts; encoding/json spends most of that
// in reflection and in re-validating fields that are JSON already. These
// encoders write exactly the bytes json.Marshal writes (TestTaskAppendJSON,
// FuzzTaskAppendJSON), and hand a value they cannot write that cheaply (an
// Extra map, a string to escape, raw JSON to compact, a time json refuses)
// to encoding/json, so that nothing differs, errors included.

// AppendJSON appends t's JSON encoding to dst: the bytes json.Marshal(t)
// returns, or its error.
func (t *Task) AppendJSON(dst []byte) ([]byte, error) {
	if len(t.Extra) > 0 {
		return appendMarshal(dst, t)
	}
	dst = slices.Grow(dst, t.sizeHint())
	start := len(dst)
	var ok bool
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, t.ID)
	dst = append(dst, `,"task_name":`...)
	dst = appendString(dst, t.Name)
	dst = append(dst, `,"queue":`...)
	dst = appendString(dst, t.Queue)
	dst = append(dst, `,"priority":`...)
	dst = strconv.AppendInt(dst, int64(t.Priority), 10)
	dst = append(dst, `,"status":`...)
	dst = appendString(dst, t.Status)
	dst = append(dst, `,"args":`...)
	if dst, ok = appendRawJSON(dst, t.Args); !ok {
		return appendMarshal(dst[:start], t)
	}
	dst = append(dst, `,"kw":`...)
	if dst, ok = appendRawJSON(dst, t.Kw); !ok {
		return appendMarshal(dst[:start], t)
	}
	if len(t.Result) > 0 {
		dst = append(dst, `,"result":`...)
		if dst, ok = appendRawJSON(dst, t.Result); !ok {
			return appendMarshal(dst[:start], t)
		}
	}
	dst = appendOmitString(dst, `,"error":`, t.Error)
	dst = appendOmitString(dst, `,"reason":`, t.Reason)
	dst = append(dst, `,"attempt":`...)
	dst = strconv.AppendInt(dst, int64(t.Attempt), 10)
	if t.Run != 0 {
		dst = append(dst, `,"run":`...)
		dst = strconv.AppendInt(dst, int64(t.Run), 10)
	}
	dst = append(dst, `,"retry":`...)
	dst = strconv.AppendInt(dst, int64(t.Retry), 10)
	dst = appendOmitString(dst, `,"retry_parent":`, t.RetryParent)
	dst = appendOmitString(dst, `,"retry_child":`, t.RetryChild)
	if t.DelayMS != 0 {
		dst = append(dst, `,"delay_ms":`...)
		dst = strconv.AppendInt(dst, t.DelayMS, 10)
	}
	if len(t.Tags) > 0 {
		dst = append(dst, `,"tags":`...)
		dst = appendStrings(dst, t.Tags)
	}
	dst = appendOmitString(dst, `,"idempotency_key":`, t.IdempotencyKey)
	dst = appendOmitString(dst, `,"submit_digest":`, t.SubmitDigest)
	dst = appendOmitString(dst, `,"worker":`, t.Worker)
	dst = append(dst, `,"created_at":`...)
	if dst, ok = appendTime(dst, t.CreatedAt); !ok {
		return appendMarshal(dst[:start], t)
	}
	dst = append(dst, `,"updated_at":`...)
	if dst, ok = appendTime(dst, t.UpdatedAt); !ok {
		return appendMarshal(dst[:start], t)
	}
	if !t.NotBefore.IsZero() {
		dst = append(dst, `,"not_before":`...)
		if dst, ok = appendTime(dst, t.NotBefore); !ok {
			return appendMarshal(dst[:start], t)
		}
	}
	if t.TimeoutMS != 0 {
		dst = append(dst, `,"timeout_ms":`...)
		dst = strconv.AppendInt(dst, t.TimeoutMS, 10)
	}
	dst = appendOmitString(dst, `,"trace":`, t.Trace)
	return append(dst, '}'), nil
}

// sizeHint is about the size of t's encoding, so that it is written
// into one allocation: its fields' names and fixed-size values take less
// than 400 bytes.
func (t *Task) sizeHint() int {
	n := 400 + len(t.ID) + len(t.Name) + len(t.Queue) + len(t.Status) + len(t.Args) + len(t.Kw) + len(t.Result) +
		len(t.Error) + len(t.Reason) + len(t.RetryParent) + len(t.RetryChild) + len(t.IdempotencyKey) +
		len(t.SubmitDigest) + len(t.Worker) + len(t.Trace)
	for _, tag := range t.Tags {
		n += len(tag) + 3
	}
	return n
}

// appendMarshal appends json.Marshal(v) to dst.
func appendMarshal(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// appendString appends s as encoding/json writes a string (HTML-safe).
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) //nolint:errchkjson // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendOmitString appends key and s unless s is empty (omitempty).
func appendOmitString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, key...)
	return appendString(dst, s)
}

// appendStrings appends a non-nil []string as encoding/json writes it.
func appendStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

// appendRawJSON appends raw as encoding/json writes a json.RawMessage
// (null when nil), and reports false when it cannot do so by copying:
// raw is empty but not nil, not valid JSON, or has bytes encoding/json
// would compact or escape (space, <, >, &, U+2028, U+2029).
func appendRawJSON(dst []byte, raw json.RawMessage) ([]byte, bool) {
	if raw == nil {
		return append(dst, "null"...), true
	}
	for _, c := range raw {
		if c <= ' ' || c == '<' || c == '>' || c == '&' || c == 0xe2 {
			return dst, false
		}
	}
	if !json.Valid(raw) {
		return dst, false
	}
	return append(dst, raw...), true
}

// appendTime appends t as encoding/json writes a time.Time, and reports
// false when encoding/json refuses it (a year outside 0-9999).
func appendTime(dst []byte, t time.Time) ([]byte, bool) {
	b, err := t.AppendText(append(dst, '"'))
	if err != nil {
		return dst, false // AppendText returns nil then
	}
	return append(b, '"'), true
}
