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
	var buf [8]member
	ms, valid := validObject(data, buf[:0])
	if !valid || data[skipWS(data, 0)] != '{' {
		// Not an object, or not JSON: let encoding/json say what is wrong
		// (or, for null, that nothing is).
		var v events.Fact
		err := json.Unmarshal(data, &v)
		*f = v
		return err
	}
	for _, m := range ms {
		k, val := data[m.key:m.keyEnd], data[m.val:m.valEnd]
		key := k[1 : len(k)-1]
		name := string(key)
		if bytes.IndexByte(key, '\\') >= 0 {
			var unescaped string
			if err := json.Unmarshal(k, &unescaped); err != nil {
				return err
			}
			name = unescaped
		}
		switch {
		case strings.EqualFold(name, "input"):
			f.Input = rawOrNil(val)
		case strings.EqualFold(name, "output"):
			f.Output = rawOrNil(val)
		// Locals: &f.Calls would move the caller's Prepared to the heap.
		case strings.EqualFold(name, "calls"):
			var calls []events.PluginCall
			err := json.Unmarshal(val, &calls)
			f.Calls = calls
			if err != nil {
				return err
			}
		case strings.EqualFold(name, "failed"):
			var failed string
			err := json.Unmarshal(val, &failed)
			f.Failed = failed
			if err != nil {
				return err
			}
		}
	}
	return nil
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
