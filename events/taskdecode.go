package events

import (
	"encoding/json"
	"strconv"
	"time"
)

// DecodeTask decodes a task record: exactly what json.Unmarshal(data, t)
// does to a zero t, errors included. A worker decodes the task message of
// every task it takes (issue #15, fourth round: ≈ 2 % of a run's CPU in
// encoding/json): a record in the shape Task.AppendJSON writes (known
// keys, each once, no space, strings of printable ASCII without escapes,
// integers, compact raw JSON) is read by hand; anything else (another
// spelling of a key, an escape, an extra map, a space, an error) goes to
// encoding/json, which then reads it as it always did (FuzzDecodeTask
// compares the two on every input the hand reader takes).
func DecodeTask(data []byte, t *Task) error {
	if decodeTaskFast(data, t) {
		return nil
	}
	*t = Task{}
	return json.Unmarshal(data, t)
}

// decodeTaskFast reads data into t if it has the shape DecodeTask reads by
// hand, and reports whether it did; t is then as json.Unmarshal leaves it.
// When it reports false, t may hold part of data.
func decodeTaskFast(d []byte, t *Task) bool {
	if len(d) < 2 || d[0] != '{' || d[len(d)-1] != '}' {
		return false
	}
	var seen uint32 // a bit per key: a key twice goes to encoding/json (which keeps the last)
	i, end := 1, len(d)-1
	for i < end {
		if seen != 0 {
			if d[i] != ',' {
				return false
			}
			i++
		}
		key, j, ok := ScanPlainString(d, i)
		if !ok || j >= end || d[j] != ':' {
			return false
		}
		i = j + 1
		k, ok := taskKeys[string(key)]
		if !ok || seen&(1<<k) != 0 {
			return false
		}
		seen |= 1 << k
		if i, ok = decodeTaskField(d, i, end, k, t); !ok {
			return false
		}
	}
	return i == end
}

// The keys of a task record DecodeTask reads by hand: json's names of
// Task's fields, but extra (a map, left to encoding/json).
const (
	tkID = iota
	tkName
	tkQueue
	tkPriority
	tkStatus
	tkArgs
	tkKw
	tkResult
	tkError
	tkReason
	tkAttempt
	tkRun
	tkRetry
	tkRetryParent
	tkRetryChild
	tkDelayMS
	tkTags
	tkIdempotencyKey
	tkSubmitDigest
	tkWorker
	tkCreatedAt
	tkUpdatedAt
	tkNotBefore
	tkTimeoutMS
	tkTrace
)

var taskKeys = map[string]int{
	"id": tkID, "task_name": tkName, "queue": tkQueue, "priority": tkPriority, "status": tkStatus,
	"args": tkArgs, "kw": tkKw, "result": tkResult, "error": tkError, "reason": tkReason,
	"attempt": tkAttempt, "run": tkRun, "retry": tkRetry, "retry_parent": tkRetryParent,
	"retry_child": tkRetryChild, "delay_ms": tkDelayMS, "tags": tkTags,
	"idempotency_key": tkIdempotencyKey, "submit_digest": tkSubmitDigest, "worker": tkWorker,
	"created_at": tkCreatedAt, "updated_at": tkUpdatedAt, "not_before": tkNotBefore,
	"timeout_ms": tkTimeoutMS, "trace": tkTrace,
}

// decodeTaskField reads the value of key k at d[i:], before end, into t,
// and returns the index after it.
func decodeTaskField(d []byte, i, end, k int, t *Task) (int, bool) {
	switch k {
	case tkID, tkName, tkQueue, tkStatus, tkError, tkReason, tkRetryParent, tkRetryChild,
		tkIdempotencyKey, tkSubmitDigest, tkWorker, tkTrace:
		s, j, ok := ScanPlainString(d, i)
		if !ok {
			return 0, false
		}
		*taskString(t, k) = string(s)
		return j, true
	case tkPriority, tkAttempt, tkRun, tkRetry, tkDelayMS, tkTimeoutMS:
		j := i
		if j < end && d[j] == '-' {
			j++
		}
		digits := j
		for j < end && '0' <= d[j] && d[j] <= '9' {
			j++
		}
		// No digit, a leading zero (not JSON), or a fraction or exponent
		// (json refuses them for an integer): encoding/json judges.
		if j == digits || d[digits] == '0' && j-digits > 1 || j < end && d[j] != ',' {
			return 0, false
		}
		n, err := strconv.ParseInt(string(d[i:j]), 10, 64)
		if err != nil {
			return 0, false
		}
		switch k {
		case tkDelayMS:
			t.DelayMS = n
		case tkTimeoutMS:
			t.TimeoutMS = n
		default:
			if int64(int(n)) != n {
				return 0, false // past int on a 32-bit platform
			}
			*taskInt(t, k) = int(n)
		}
		return j, true
	case tkArgs, tkKw, tkResult:
		j, ok := skipCompactJSON(d, i, end, 0)
		if !ok {
			return 0, false
		}
		raw := make(json.RawMessage, j-i)
		copy(raw, d[i:j])
		switch k {
		case tkArgs:
			t.Args = raw
		case tkKw:
			t.Kw = raw
		default:
			t.Result = raw
		}
		return j, true
	case tkTags:
		if i >= end || d[i] != '[' {
			return 0, false
		}
		j := i + 1
		tags := []string{}
		for j < end && d[j] != ']' {
			if len(tags) > 0 {
				if d[j] != ',' {
					return 0, false
				}
				j++
			}
			s, n, ok := ScanPlainString(d, j)
			if !ok {
				return 0, false
			}
			tags = append(tags, string(s))
			j = n
		}
		if j >= end {
			return 0, false
		}
		t.Tags = tags
		return j + 1, true
	case tkCreatedAt, tkUpdatedAt, tkNotBefore:
		_, j, ok := ScanPlainString(d, i)
		if !ok {
			return 0, false
		}
		// What json.Unmarshal calls for a time: the same parse, the same
		// result; its error goes to encoding/json to be reported as json
		// reports it.
		if err := taskTime(t, k).UnmarshalJSON(d[i:j]); err != nil {
			return 0, false
		}
		return j, true
	}
	return 0, false
}

func taskString(t *Task, k int) *string {
	switch k {
	case tkID:
		return &t.ID
	case tkName:
		return &t.Name
	case tkQueue:
		return &t.Queue
	case tkStatus:
		return &t.Status
	case tkError:
		return &t.Error
	case tkReason:
		return &t.Reason
	case tkRetryParent:
		return &t.RetryParent
	case tkRetryChild:
		return &t.RetryChild
	case tkIdempotencyKey:
		return &t.IdempotencyKey
	case tkSubmitDigest:
		return &t.SubmitDigest
	case tkWorker:
		return &t.Worker
	default:
		return &t.Trace
	}
}

func taskInt(t *Task, k int) *int {
	switch k {
	case tkPriority:
		return &t.Priority
	case tkAttempt:
		return &t.Attempt
	case tkRun:
		return &t.Run
	default:
		return &t.Retry
	}
}

func taskTime(t *Task, k int) *time.Time {
	switch k {
	case tkCreatedAt:
		return &t.CreatedAt
	case tkUpdatedAt:
		return &t.UpdatedAt
	default:
		return &t.NotBefore
	}
}

// maxFastDepth bounds the nesting of raw JSON DecodeTask reads by hand;
// deeper goes to encoding/json.
const maxFastDepth = 32

// skipCompactJSON returns the index after the JSON value at d[i:], before
// end, if it is one without space outside strings and with strings of
// printable ASCII (escapes allowed): a value json.Valid accepts, which
// json.Unmarshal copies as it stands into a json.RawMessage.
func skipCompactJSON(d []byte, i, end, depth int) (int, bool) {
	if i >= end || depth > maxFastDepth {
		return 0, false
	}
	switch c := d[i]; {
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		j := i + 1
		first := true
		for j < end && d[j] != closer {
			if !first {
				if d[j] != ',' {
					return 0, false
				}
				j++
			}
			first = false
			if c == '{' {
				var ok bool
				if j, ok = skipJSONString(d, j, end); !ok || j >= end || d[j] != ':' {
					return 0, false
				}
				j++
			}
			var ok bool
			if j, ok = skipCompactJSON(d, j, end, depth+1); !ok {
				return 0, false
			}
		}
		if j >= end {
			return 0, false
		}
		return j + 1, true
	case c == '"':
		return skipJSONString(d, i, end)
	case c == '-' || '0' <= c && c <= '9':
		return skipJSONNumber(d, i, end)
	case c == 't':
		return skipLiteral(d, i, end, "true")
	case c == 'f':
		return skipLiteral(d, i, end, "false")
	case c == 'n':
		return skipLiteral(d, i, end, "null")
	}
	return 0, false
}

func skipLiteral(d []byte, i, end int, lit string) (int, bool) {
	if end-i < len(lit) || string(d[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// skipJSONString skips a JSON string of printable ASCII and valid escapes.
func skipJSONString(d []byte, i, end int) (int, bool) {
	if i >= end || d[i] != '"' {
		return 0, false
	}
	for j := i + 1; j < end; j++ {
		switch c := d[j]; {
		case c == '"':
			return j + 1, true
		case c == '\\':
			j++
			if j >= end {
				return 0, false
			}
			switch d[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if end-j < 5 {
					return 0, false
				}
				for _, h := range d[j+1 : j+5] {
					if !isHex(h) {
						return 0, false
					}
				}
				j += 4
			default:
				return 0, false
			}
		case c < 0x20 || c >= 0x7f:
			return 0, false
		}
	}
	return 0, false
}

// skipJSONNumber skips a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func skipJSONNumber(d []byte, i, end int) (int, bool) {
	j := i
	if d[j] == '-' {
		j++
	}
	digits := func() bool {
		n := j
		for j < end && '0' <= d[j] && d[j] <= '9' {
			j++
		}
		return j > n
	}
	if j < end && d[j] == '0' {
		j++
	} else if !digits() {
		return 0, false
	}
	if j < end && d[j] == '.' {
		j++
		if !digits() {
			return 0, false
		}
	}
	if j < end && (d[j] == 'e' || d[j] == 'E') {
		j++
		if j < end && (d[j] == '+' || d[j] == '-') {
			j++
		}
		if !digits() {
			return 0, false
		}
	}
	return j, true
}

// ScanPlainString reads the JSON string at d[i:] if it has no escape and
// only printable ASCII, returning its bytes and the index after it: the
// fast path of the hand-written decoders (a task message here, a PubAck in
// bus), which leave anything else to encoding/json.
func ScanPlainString(d []byte, i int) ([]byte, int, bool) {
	if i >= len(d) || d[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(d); j++ {
		switch c := d[j]; {
		case c == '"':
			return d[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, 0, false
		}
	}
	return nil, 0, false
}
