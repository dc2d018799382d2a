package projections

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/qtasks/qtasks-go/events"
)

// decodeFact reads a fact's data as json.Unmarshal into events.Fact would
// (keys matched case-insensitively, the last of duplicate keys wins), but
// without copying input and output: they are slices of data. Only calls and
// failed, when present, go through encoding/json. The projection decodes
// every fact; this is most of its JSON work.
func decodeFact(data []byte, f *events.Fact) error {
	if !validJSON(data) {
		// Let encoding/json say what is wrong.
		return json.Unmarshal(data, f)
	}
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		var v events.Fact
		return json.Unmarshal(data, &v) // an error: not an object
	}
	i++
	for {
		i = skipWS(data, i)
		if data[i] == '}' {
			return nil
		}
		if data[i] == ',' {
			i = skipWS(data, i+1)
		}
		// Key (a string).
		kEnd := skipValue(data, i)
		key := data[i+1 : kEnd-1]
		i = skipWS(data, kEnd)
		i = skipWS(data, i+1) // ':'
		vEnd := skipValue(data, i)
		val := data[i:vEnd]
		i = vEnd
		name := string(key)
		if bytes.IndexByte(key, '\\') >= 0 {
			if err := json.Unmarshal(data[kEnd-len(key)-2:kEnd], &name); err != nil {
				return err
			}
		}
		switch {
		case strings.EqualFold(name, "input"):
			f.Input = rawOrNil(val)
		case strings.EqualFold(name, "output"):
			f.Output = rawOrNil(val)
		case strings.EqualFold(name, "calls"):
			f.Calls = nil
			if err := json.Unmarshal(val, &f.Calls); err != nil {
				return err
			}
		case strings.EqualFold(name, "failed"):
			f.Failed = ""
			if err := json.Unmarshal(val, &f.Failed); err != nil {
				return err
			}
		}
	}
}

// rawOrNil is what json.RawMessage holds after unmarshalling val (JSON
// null included, as the text null).
func rawOrNil(val []byte) json.RawMessage { return json.RawMessage(val) }

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the end of the (valid) JSON value starting at i.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		i++
		for {
			switch b[i] {
			case '\\':
				i += 2
			case '"':
				return i + 1
			default:
				i++
			}
		}
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = skipValue(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	// A number, true, false or null.
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}
