package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// headerText writes headers one "name: value" per line, the form the fuzzer
// mutates: it can change names (and their case), values, repeat names and
// drop lines.
func headerText(h Headers) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range h[k] {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func parseHeaderText(s string) Headers {
	h := Headers{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		h[k] = append(h[k], v)
	}
	return h
}

func FuzzDecode(f *testing.F) {
	for _, e := range []Event{
		fullEvent(), factEvent(), patchEvent(),
		{ID: "t", Source: "s", Type: TypeTask},
		{ID: "d", Source: "qtasks/n", Type: TypeDeadLetter, Data: []byte(`{"stream":"s"}`)},
	} {
		f.Add(headerText(encode(e)), e.Data)
	}
	// Case-folded names, a numeric offset, odd integers.
	h := encode(factEvent())
	f.Add(strings.ToUpper(headerText(h)), []byte(`{}`))
	h["ce-time"] = []string{"2025-01-01T01:02:03.5+05:30"}
	h["ce-attempt"] = []string{"+7"}
	h["ce-run"] = []string{"007"}
	f.Add(headerText(h), []byte(`{}`))
	// Values that need percent-encoding, and v1 values written verbatim.
	e := patchEvent()
	e.TaskName, e.PluginError, e.PluginVersion = `50%off "é"`, "line\n100% wrong", "1.0 beta"
	f.Add(headerText(encode(e)), e.Data)
	h = encode(e)
	h["ce-taskname"] = []string{"50%off"}
	h["ce-pluginerror"] = []string{`"quoted \" error"`}
	f.Add(headerText(h), e.Data)
	h = encode(patchEvent())
	h["content-type"] = []string{"application/json-patch+json; charset=utf-8"}
	f.Add(headerText(h), []byte(`[{"op":"add","path":"/kw/x","value":1}]`))

	f.Fuzz(func(t *testing.T, headers string, data []byte) {
		h := parseHeaderText(headers)
		e, err := Decode(h, data)
		if err != nil {
			require.True(t, errors.Is(err, ErrInvalidEvent) || errors.Is(err, ErrTooLarge), err.Error())
			return
		}
		require.NoError(t, e.Validate())
		again, err := Decode(h, data)
		require.NoError(t, err)
		require.Equal(t, e, again, "decoding is not deterministic")

		h2 := Headers{}
		e.Encode(h2)
		e2, err := Decode(h2, data)
		require.NoError(t, err, "re-decoding %v", h2)
		require.True(t, e.Time.Equal(e2.Time), "time %v became %v", e.Time, e2.Time)
		e.Time, e2.Time = time.Time{}, time.Time{}
		require.Equal(t, e, e2)

		// What this package accepts, the CloudEvents SDK accepts too.
		ev := sdkEventFromHeaders(t, h2, data)
		require.NoError(t, ev.Validate(), "headers %v", h2)
	})
}

// fuzzDocs are fixed payloads, one per trigger under fuzz.
var fuzzDocs = []struct {
	trigger string
	doc     string
}{
	{TaskExecutorArgsReplace, `{"args":[1,"a"],"kw":{"k":{"n":1}},"task_name":"t","status":"new","extra":null,"kwx":1}`},
	{BrokerAddBefore, `{"model":{"id":"t","priority":0,"args":[],"kw":{},"extra":{},"tags":null,"status":"new","result":null},"storage":"s"}`},
	{StorageUpdate, `{"kw":{"name":"n","mapping":{"status":"process","extra":{"a":1}}}}`},
	{WorkerTaskErrorRetry, `{"model":{"status":"retry","delay_ms":0,"id":"t"},"trace":"tb"}`},
	{QTasksAddTaskBeforeBroker, `{"task_name":"t","priority":0,"args":[],"kw":{},"extra":{},"queue":"q"}`},
	{StorageAddProcess, `{"task_id":"t"}`}, // one-way: every patch is refused
}

func FuzzApplyPatch(f *testing.F) {
	seeds := []string{
		``,
		`{}`,
		`null`,
		`[]`,
		`{"kw":{"x":1}}`,
		`{"kw":null}`,
		`{"task_name":"x"}`,
		`{"other":{}}`,
		`{"extra":{"a":1}}`,
		`{"model":{"priority":5,"id":"u"}}`,
		`{"model":{"result":{"a":{}}}}`,
		`{"kw":{"mapping":{"extra":{"b":2}}}}`,
		`{"kw/x":1}`,
		`[{"op":"add","path":"/kw/x","value":1}]`,
		`[{"op":"replace","path":"/","value":1}]`,
		`[{"op":"replace","path":"","value":{}}]`,
		`[{"op":"move","from":"/task_name","path":"/kw/t"}]`,
		`[{"op":"copy","from":"/kw","path":"/kw/c"}]`,
		`[{"op":"remove","path":"/kw/missing"}]`,
		`[{"op":"replace","path":"/task_name","Path":"/kw","value":1}]`,
		`[{"op":"replace","Op":"test","path":"/task_name","value":1}]`,
		`[{"op":"test","path":"/task_name","value":"t"},{"op":"add","path":"/args/-","value":2}]`,
		`[{"op":"replace","path":"/model/delay_ms","value":10}]`,
		`[{"op":"add","path":"/model/extra/x","value":1}]`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), true, []byte(s))
		f.Add(uint8(i), false, []byte(s))
	}

	f.Fuzz(func(t *testing.T, which uint8, merge bool, patch []byte) {
		fd := fuzzDocs[int(which)%len(fuzzDocs)]
		tr, ok := Lookup(fd.trigger)
		require.True(t, ok)
		ct := ContentTypeJSONPatch
		if merge {
			ct = ContentTypeMergePatch
		}
		doc := []byte(fd.doc)

		out, err := ApplyPatch(tr, doc, ct, patch)
		require.Equal(t, fd.doc, string(doc), "the input document was modified")
		if err != nil {
			require.Nil(t, out)
			var pe *PatchError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, tr.Name, pe.Trigger)
			require.True(t, errors.Is(err, ErrPathNotAllowed) || errors.Is(err, ErrBadPatch) ||
				errors.Is(err, ErrNotReturnable) || errors.Is(err, ErrWrongType), err.Error())
			if errors.Is(err, ErrPathNotAllowed) {
				require.False(t, tr.Allows(pe.Path), "rejected an allowed path %q", pe.Path)
			}
			if errors.Is(err, ErrWrongType) {
				require.NotEmpty(t, tr.PathType(pe.Path), "a type error on %q, which has no type", pe.Path)
			}
			return
		}
		// What a patch leaves at a typed path is of its type, or was there before.
		var top, dtop map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(out, &top))
		require.NoError(t, json.Unmarshal(doc, &dtop))
		for _, p := range tr.Paths {
			v, ok := valueAt(top, p)
			if !ok || jsonTypeCheck[tr.PathType(p)](v) {
				continue
			}
			dv, _ := valueAt(dtop, p)
			require.True(t, sameJSON(dv, v), "%s holds %s, not %s", p, v, tr.PathType(p))
		}
		require.True(t, tr.Returnable, "a one-way trigger took a patch")
		require.LessOrEqual(t, len(out), MaxDataSize)
		require.True(t, json.Valid(out), "result is not JSON: %s", out)
		var obj map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(out, &obj), "result is not an object: %s", out)
		require.NotNil(t, obj, "result is not an object: %s", out)
		if len(bytes.TrimSpace(patch)) == 0 {
			require.Equal(t, fd.doc, string(out))
		}

		before, after := decodeUseNumber(t, doc), decodeUseNumber(t, out)
		if p, bad := disallowedChange(tr, "", before, after); bad {
			t.Fatalf("%s (%s) changed %q, which %s does not allow\npatch: %s\nbefore: %s\nafter:  %s",
				tr.Name, ct, p, tr.Name, patch, doc, out)
		}
	})
}

func decodeUseNumber(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	require.NoError(t, d.Decode(&v))
	return v
}

// disallowedChange reports the first path at which a and b differ that tr
// does not allow. Objects are compared key by key; any other difference is
// a change of the value at path itself.
func disallowedChange(tr Trigger, path string, a, b any) (string, bool) {
	if reflect.DeepEqual(a, b) || (path != "" && tr.Allows(path)) {
		return "", false
	}
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		return path, true
	}
	for k := range am {
		if p, bad := disallowedChange(tr, path+"/"+escapePointer(k), am[k], bm[k]); bad {
			return p, true
		}
		if _, ok := bm[k]; !ok && !tr.Allows(path+"/"+escapePointer(k)) {
			return path + "/" + escapePointer(k), true
		}
	}
	for k := range bm {
		if _, ok := am[k]; !ok && !tr.Allows(path+"/"+escapePointer(k)) {
			return path + "/" + escapePointer(k), true
		}
	}
	return "", false
}

func TestDisallowedChange(t *testing.T) {
	t.Parallel()

	tr := Trigger{Name: "t", Returnable: true, Paths: []string{"/kw", "/model/extra"}}
	tests := []struct {
		name   string
		before string
		after  string
		want   string
	}{
		{"Same", `{"a":1}`, `{"a":1}`, ""},
		{"Allowed", `{"kw":1}`, `{"kw":{"x":2}}`, ""},
		{"AllowedNested", `{"model":{"extra":1,"id":2}}`, `{"model":{"id":2}}`, ""},
		{"Added", `{}`, `{"a":null}`, "/a"},
		{"Removed", `{"a":null}`, `{}`, "/a"},
		{"Changed", `{"model":{"id":1}}`, `{"model":{"id":2}}`, "/model/id"},
		{"Retyped", `{"model":{}}`, `{"model":[]}`, "/model"},
		{"Root", `{}`, `[]`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, bad := disallowedChange(tr, "", decodeUseNumber(t, []byte(tc.before)), decodeUseNumber(t, []byte(tc.after)))
			require.Equal(t, tc.want, p)
			require.Equal(t, tc.want != "" || tc.name == "Root", bad)
		})
	}
}
