package projections

import (
	"database/sql"
	"encoding/json"
	"strconv"
	"time"
)

// AppendJSON appends t as encoding/json writes it (the same fields, order
// and omissions), without reflection: the console's tasks page spent a
// third of its time in json.Marshal, most of it re-validating the
// json.RawMessage fields (BenchmarkConsole, ARCHITECTURE.md "The operator
// console"). The JSON columns (arguments, result, extra) are copied as the
// projection holds them when they are in the form json.Marshal writes
// (appendRawJSON): the projector writes only JSON it has parsed, so they
// are not validated again. TestTaskAppendJSON holds it to json.Marshal.
func (t *Task) AppendJSON(dst []byte) []byte {
	return t.appendJSON(dst, nil)
}

// appendJSON is AppendJSON, with the six times (created_at to updated_at)
// taken from their columns' text when times is not nil (AppendTasksJSON):
// t's times are then not read.
func (t *Task) appendJSON(dst []byte, times *[6]sql.NullString) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, t.ID)
	dst = append(dst, `,"name":`...)
	dst = appendJSONString(dst, t.Name)
	dst = append(dst, `,"queue":`...)
	dst = appendJSONString(dst, t.Queue)
	dst = append(dst, `,"priority":`...)
	dst = strconv.AppendInt(dst, int64(t.Priority), 10)
	dst = append(dst, `,"status":`...)
	dst = appendJSONString(dst, t.Status)
	dst = append(dst, `,"attempt":`...)
	dst = strconv.AppendInt(dst, int64(t.Attempt), 10)
	dst = append(dst, `,"retries_left":`...)
	dst = strconv.AppendInt(dst, int64(t.RetriesLeft), 10)
	dst = appendRawField(dst, `,"args_submitted":`, t.ArgsSubmitted)
	dst = appendRawField(dst, `,"kw_submitted":`, t.KwSubmitted)
	dst = appendRawField(dst, `,"args_executed":`, t.ArgsExecuted)
	dst = appendRawField(dst, `,"kw_executed":`, t.KwExecuted)
	dst = appendRawField(dst, `,"result":`, t.Result)
	dst = appendStringField(dst, `,"error":`, t.Error)
	dst = appendStringField(dst, `,"reason":`, t.Reason)
	dst = appendStringField(dst, `,"retry_parent":`, t.RetryParent)
	dst = appendStringField(dst, `,"retry_child":`, t.RetryChild)
	dst = appendStringField(dst, `,"worker":`, t.Worker)
	if len(t.Tags) > 0 {
		dst = append(dst, `,"tags":[`...)
		for i, tag := range t.Tags {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, tag)
		}
		dst = append(dst, ']')
	}
	dst = appendRawField(dst, `,"extra":`, t.Extra)
	dst = appendStringField(dst, `,"idempotency_key":`, t.IdempotencyKey)
	dst = appendStringField(dst, `,"trace":`, t.Trace)
	if times != nil {
		for i, name := range taskTimeNames {
			dst = appendTimeText(dst, name, times[i])
		}
	} else {
		for i, tm := range [...]time.Time{t.CreatedAt, t.QueuedAt, t.StartedAt, t.ExecutedAt, t.FinishedAt, t.UpdatedAt} {
			dst = appendTimeField(dst, taskTimeNames[i], tm)
		}
	}
	dst = append(dst, `,"first_seq":`...)
	dst = strconv.AppendUint(dst, t.FirstSeq, 10)
	dst = append(dst, `,"last_seq":`...)
	dst = strconv.AppendUint(dst, t.LastSeq, 10)
	if len(t.Attempts) > 0 {
		dst = append(dst, `,"attempts":[`...)
		for i := range t.Attempts {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = t.Attempts[i].appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

func appendRawField(dst []byte, name string, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return dst
	}
	return appendRawJSON(append(dst, name...), raw)
}

func appendStringField(dst []byte, name, s string) []byte {
	if s == "" {
		return dst
	}
	return appendJSONString(append(dst, name...), s)
}

func appendTimeField(dst []byte, name string, t time.Time) []byte {
	if t.IsZero() {
		return dst
	}
	if y := t.Year(); y < 0 || y > 9999 {
		b, err := t.MarshalJSON() // refuses such years, as encoding/json would
		if err != nil {
			return dst
		}
		return append(append(dst, name...), b...)
	}
	dst = append(dst, name...)
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// taskTimeNames are the members of a task's six times, in the order of
// Task's fields and of taskScan.times.
var taskTimeNames = [6]string{`,"created_at":`, `,"queued_at":`, `,"started_at":`, `,"executed_at":`, `,"finished_at":`, `,"updated_at":`}

// appendTimeText appends name and the time of a timestamp column as
// appendTimeField appends parseTS of it. A time in the projection's own
// layout (ts), which is what the projector writes, is copied as text:
// RFC 3339 with the fraction's trailing zeros dropped is what
// time.RFC3339Nano writes for it. Parsing six times per task and
// formatting them again was a fifth of the tasks page's time beyond its
// query (BenchmarkConsole; docs/ARCHITECTURE.md, "The operator console").
// TestAppendTimeText holds it to appendTimeField.
func appendTimeText(dst []byte, name string, s sql.NullString) []byte {
	if !s.Valid || s.String == "" {
		return dst
	}
	if _, _, _, _, _, _, _, ok := layoutFields(s.String); !ok || s.String == zeroLayoutTime {
		return appendTimeField(dst, name, parseTS(s))
	}
	dst = append(dst, name...)
	dst = append(dst, '"')
	dst = append(dst, s.String[:19]...)
	frac := s.String[20:29]
	n := len(frac)
	for n > 0 && frac[n-1] == '0' {
		n--
	}
	if n > 0 {
		dst = append(dst, '.')
		dst = append(dst, frac[:n]...)
	}
	return append(dst, `Z"`...)
}

// zeroLayoutTime is the zero time.Time as ts would write it, which
// appendTimeField omits.
const zeroLayoutTime = "0001-01-01T00:00:00.000000000Z"

// appendJSONString appends s as encoding/json writes a string: plain
// ASCII as it is, anything else (escapes, HTML characters, other scripts,
// invalid UTF-8) through encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			b, _ := json.Marshal(s) //nolint:errchkjson // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// plainByte tells the bytes that encoding/json writes as they are in a
// string: printable ASCII but for ", \ and the HTML characters <, >, &.
// A table: the seven comparisons for each byte were a twentieth of the
// task page's time (BenchmarkConsole).
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()
