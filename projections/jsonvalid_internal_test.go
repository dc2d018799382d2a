package projections

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func checkValidJSON(t *testing.T, data []byte) {
	t.Helper()
	want := json.Valid(data)
	if got := validJSON(data); got != want {
		t.Fatalf("validJSON(%q) = %t, json.Valid says %t", data, got, want)
	}
	// validObject agrees, and finds what encoding/json finds at the top.
	ms, got := validObject(data, nil)
	if got != want {
		t.Fatalf("validObject(%q) = %t, json.Valid says %t", data, got, want)
	}
	if !got {
		return
	}
	if split := splitValid(data, nil); !slices.Equal(split, ms) {
		t.Fatalf("splitValid(%q) = %v, validObject %v", data, split, ms)
	}
	var elems []json.RawMessage
	var members map[string]json.RawMessage
	switch {
	case json.Unmarshal(data, &elems) == nil:
		if len(ms) != len(elems) {
			t.Fatalf("validObject(%q): %d elements, encoding/json %d", data, len(ms), len(elems))
		}
		for i, m := range ms {
			if v := data[m.val:m.valEnd]; !bytes.Equal(v, elems[i]) {
				t.Fatalf("validObject(%q): element %d is %q, encoding/json %q", data, i, v, elems[i])
			}
		}
	case json.Unmarshal(data, &members) == nil:
		for _, m := range ms {
			var k string
			if err := json.Unmarshal(data[m.key:m.keyEnd], &k); err != nil {
				t.Fatalf("validObject(%q): key %q: %v", data, data[m.key:m.keyEnd], err)
			}
			if !json.Valid(data[m.val:m.valEnd]) {
				t.Fatalf("validObject(%q): member %s's value %q", data, k, data[m.val:m.valEnd])
			}
			if _, ok := members[k]; !ok {
				t.Fatalf("validObject(%q): member %q, which encoding/json does not have", data, k)
			}
		}
		if len(members) > 0 && len(ms) == 0 {
			t.Fatalf("validObject(%q): no members", data)
		}
	default:
		if len(ms) != 0 {
			t.Fatalf("validObject(%q): members of a scalar", data)
		}
	}
}

func TestValidJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		``, ` `, `{}`, `[]`, ` {"a" : [1, -0.5e+7, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9"]} `, `"\u12"`, `"\u12G4"`,
		`"\x"`, "\"\x01\"", "\"\x7f\xff\"", `01`, `-`, `-0`, `1.`, `1.e5`, `1e`, `1e+`, `.5`, `+1`, `1E-2`, `tru`, `truex`,
		`nul`, `{"a"}`, `{"a":}`, `{,}`, `{"a":1,}`, `[1,]`, `[,1]`, `[1 2]`, `{"a":1 "b":2}`, `{1:2}`, `"a`, `[`, `{`,
		`]`, `}`, `1 2`, "\t\r\n1\n", `[[[]]]`, `{"a":{"b":{}}}`, "\"\\u0000\"", `-01`, `0.0e0`, `[-]`, `"\`,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
		strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
	} {
		checkValidJSON(t, []byte(s))
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,"x\u00e9"]}`, `[true,false,null]`, `-0`, `"\"`, `{"a":1,}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkValidJSON(t, data) })
}

// ts writes what time.Format with timeLayout writes.
func FuzzTimestamp(f *testing.F) {
	f.Add(int64(0), int64(0))
	f.Add(int64(1795000000), int64(123456789))
	f.Add(int64(-62135596800), int64(1))   // year 1
	f.Add(int64(253402300799), int64(999)) // the last second of 9999
	f.Add(int64(253402300800), int64(0))   // year 10000
	f.Add(int64(-62167219201), int64(5))   // year -1
	f.Fuzz(func(t *testing.T, sec, nsec int64) {
		tm := time.Unix(sec, nsec).In(time.FixedZone("x", 3600*5+1800))
		got := ts(tm)
		if tm.IsZero() {
			if got != nil {
				t.Fatalf("ts(zero) = %v", got)
			}
			return
		}
		if want := tm.UTC().Format(timeLayout); got != want {
			t.Fatalf("ts(%v) = %v, want %s", tm, got, want)
		}
	})
}
