package events

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	ce "github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"
)

// batchEvents are events of every kind a batch may carry, with data of
// every form: JSON embedded, JSON with white space around it and other
// content types (base64), none.
func batchEvents() []Event {
	ws := factEvent()
	ws.ID, ws.Data = "fact-ws", []byte(" {\"input\":{}}\n")
	text := factEvent()
	text.ID, text.DataContentType, text.Data = "fact-text", "text/plain; charset=utf-8", []byte("not json \x00\xff")
	esc := factEvent()
	esc.ID, esc.Subject, esc.TaskName = "fact-esc", `a "quoted" \ subject <&> é`, "name\twith\ttabs"
	esc.Data = []byte(`{"input":{"s":"\u00e9\n"}}`)
	errPatch := patchEvent()
	errPatch.ID, errPatch.DataContentType, errPatch.Data, errPatch.PluginError = "patch-err", "", []byte("boom"), "it failed"
	return []Event{
		fullEvent(), factEvent(), patchEvent(), errPatch, ws, text, esc,
		{ID: "t", Source: "s", Type: TypeTask, Time: time.Date(2026, 12, 7, 1, 2, 3, 4, time.UTC)},
		{ID: "n", Source: "s", Type: TypePatch, Plugin: "p", Invocation: "i"},
		{ID: "null", Source: "s", Type: TypeDeadLetter, DataContentType: ContentTypeJSON, Data: []byte(`null`)},
	}
}

// viaBinary is what the event's binary-mode message decodes to.
func viaBinary(tb testing.TB, e Event) Event {
	tb.Helper()
	got, err := Decode(encode(e), e.Data)
	require.NoError(tb, err)
	return got
}

func TestBatchRoundTrip(t *testing.T) {
	t.Parallel()
	evs := batchEvents()
	data, err := EncodeBatch(evs)
	require.NoError(t, err)
	require.True(t, json.Valid(data), "%s", data)
	got, err := DecodeBatch(data)
	require.NoError(t, err)
	require.Len(t, got, len(evs))
	for i, e := range evs {
		requireSameEvent(t, viaBinary(t, e), got[i])
	}
	// White space anywhere JSON allows it changes nothing.
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, data, "\n ", "\t"))
	got, err = DecodeBatch(pretty.Bytes())
	require.NoError(t, err)
	for i, e := range evs {
		// Data in the data member is the JSON value as it stands, indented
		// now; base64 data is untouched.
		want, g := viaBinary(t, e), got[i]
		if jsonContent(e.DataContentType) && len(e.Data) > 0 && embeddable(e.Data) {
			var c bytes.Buffer
			require.NoError(t, json.Compact(&c, g.Data))
			g.Data = c.Bytes()
		}
		requireSameEvent(t, want, g)
	}
	// Deterministic: the same events encode to the same bytes.
	again, err := AppendBatch([]byte("prefix"), evs)
	require.NoError(t, err)
	require.Equal(t, data, again[len("prefix"):])
}

// requireSameEvent compares events field by field, data by bytes (nil and
// empty alike).
func requireSameEvent(tb testing.TB, want, got Event) {
	tb.Helper()
	require.True(tb, bytes.Equal(want.Data, got.Data), "data %q, want %q", got.Data, want.Data)
	require.True(tb, want.Time.Equal(got.Time), "time %v, want %v", got.Time, want.Time)
	want.Data, got.Data, want.Time, got.Time = nil, nil, time.Time{}, time.Time{}
	require.Equal(tb, want, got)
}

func TestBatchDataForms(t *testing.T) {
	t.Parallel()
	evs := batchEvents()
	data, err := EncodeBatch(evs)
	require.NoError(t, err)
	var elems []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(data, &elems))
	form := func(i int) string {
		_, d := elems[i]["data"]
		_, b := elems[i]["data_base64"]
		switch {
		case d && !b:
			return "data"
		case b && !d:
			return "base64"
		case !d && !b:
			return "none"
		}
		return "both"
	}
	require.Equal(t, "data", form(0))   // application/json
	require.Equal(t, "base64", form(2)) // merge patch: not application/json
	require.Equal(t, "base64", form(4)) // white space around the JSON
	require.Equal(t, "base64", form(5)) // text
	require.Equal(t, "none", form(7))
	require.JSONEq(t, string(evs[0].Data), string(elems[0]["data"]))
	// Attributes are strings, as in binary mode; datacontenttype is the
	// content-type header's name in the JSON format.
	require.JSONEq(t, `"2"`, string(elems[0]["attempt"]))
	require.JSONEq(t, `"application/json"`, string(elems[0]["datacontenttype"]))
	require.NotContains(t, elems[0], "content-type")
}

// TestBatchElementsAreCloudEvents reads a batch with the CloudEvents SDK
// (its HTTP binding reads a batch this way): every element is a valid
// CloudEvent with the event's attributes and data.
func TestBatchElementsAreCloudEvents(t *testing.T) {
	t.Parallel()
	evs := batchEvents()
	data, err := EncodeBatch(evs)
	require.NoError(t, err)
	var sdk []ce.Event
	require.NoError(t, json.Unmarshal(data, &sdk))
	require.Len(t, sdk, len(evs))
	for i, e := range evs {
		s := sdk[i]
		require.NoError(t, s.Validate(), "element %d", i)
		require.Equal(t, ce.CloudEventsVersionV1, s.SpecVersion())
		require.Equal(t, e.ID, s.ID())
		require.Equal(t, e.Source, s.Source())
		require.Equal(t, e.Type, s.Type())
		require.Equal(t, e.Subject, s.Subject())
		require.True(t, e.Time.Equal(s.Time()), "element %d: time %v, want %v", i, s.Time(), e.Time)
		require.Equal(t, e.DataContentType, s.DataContentType())
		require.True(t, bytes.Equal(e.Data, s.Data()), "element %d: data %q, want %q", i, s.Data(), e.Data)
		// Extensions: exactly the binary mode's headers, as strings
		// (decoded: structured mode carries values, not their
		// percent-encoded header form).
		want := map[string]any{}
		for k, v := range encode(e) {
			name, ok := strings.CutPrefix(k, HeaderPrefix)
			if !ok {
				continue
			}
			switch name {
			case "specversion", "id", "source", "type", "subject", "time":
				continue
			}
			dv, err := DecodeHeaderValue(v[0])
			require.NoError(t, err)
			want[name] = dv
		}
		require.Equal(t, want, normalizeExt(s.Extensions()), "element %d", i)
	}
}

func normalizeExt(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func TestDecodeBatchRejects(t *testing.T) {
	t.Parallel()
	good, err := EncodeBatch([]Event{factEvent()})
	require.NoError(t, err)
	el := string(good[1 : len(good)-1])
	one := func(el string) string { return "[" + el + "]" }
	for name, in := range map[string]string{
		"NotJSON":          `[{`,
		"NotArray":         el,
		"Empty":            `[]`,
		"ElementNotObject": `["x"]`,
		"Trailing":         one(el) + ` x`,
		"TwoArrays":        one(el) + one(el),
		"Duplicate":        one(strings.Replace(el, `"id":"fact-1"`, `"id":"fact-1","id":"other"`, 1)),
		"BothData":         one(strings.Replace(el, `"data":`, `"data_base64":"e30=","data":`, 1)),
		"NumberAttribute":  one(strings.Replace(el, `"attempt":"1"`, `"attempt":1`, 1)),
		"UpperName":        one(strings.Replace(el, `"taskid"`, `"TaskID"`, 1)),
		"DashName":         one(strings.Replace(el, `"taskid"`, `"task-id"`, 1)),
		"BadBase64":        one(strings.Replace(el, `"data":{"input":{}}`, `"data_base64":"!!"`, 1)),
		"Base64NotString":  one(strings.Replace(el, `"data":{"input":{}}`, `"data_base64":1`, 1)),
		"OldSpecVersion":   one(strings.Replace(el, `"specversion":"1.0"`, `"specversion":"0.3"`, 1)),
		"NoID":             one(strings.Replace(el, `"id":"fact-1",`, ``, 1)),
		"TriggerNotType":   one(strings.Replace(el, `"trigger":"storage_add"`, `"trigger":"storage_get"`, 1)),
		"SecondBad":        `[` + el + `,{"id":"x"}]`,
		"TooManyMembers":   one(strings.Replace(el, `{`, `{`+manyMembers(maxBatchMembers), 1)),
		"TrailingComma":    `[` + el + `,]`,
		"MemberComma":      one(strings.Replace(el, `}`, `,}`, 1)),
		"NoComma":          one(strings.Replace(el, `","id"`, `" "id"`, 1)),
		"NoColon":          one(strings.Replace(el, `"id":`, `"id" `, 1)),
		"ControlChar":      one(strings.Replace(el, `"fact-1"`, "\"fact\t1\"", 1)),
		"NotUTF8":          one(strings.Replace(el, `"fact-1"`, "\"fact\xff1\"", 1)),
		"EscapedName":      one(strings.Replace(el, `"taskid"`, `"task\u0069d"`, 1)),
		"BadData":          one(strings.Replace(el, `{"input":{}}`, `{"input":}`, 1)),
		"BadDataLiteral":   one(strings.Replace(el, `{"input":{}}`, `tru`, 1)),
		"BadEscape":        one(strings.Replace(el, `"fact-1"`, `"fact\q1"`, 1)),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.NotEqual(t, string(good), in, "the case must change the batch")
			evs, err := DecodeBatch([]byte(in))
			require.ErrorIs(t, err, ErrInvalidEvent, "%s", in)
			require.Nil(t, evs)
		})
	}
	// Attributes qtasks does not know are ignored, as in binary mode, up to
	// the bound on members.
	evs, err := DecodeBatch([]byte(one(strings.Replace(el, `{`, `{`+manyMembers(maxBatchMembers-20), 1))))
	require.NoError(t, err)
	requireSameEvent(t, viaBinary(t, factEvent()), evs[0])
	_, err = DecodeBatch(append(bytes.Repeat([]byte(" "), MaxBatchSize), good...))
	require.ErrorIs(t, err, ErrTooLarge)
}

// manyMembers is n distinct extension attributes, each followed by a comma.
func manyMembers(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(`"x` + strconv.Itoa(i) + `":"v",`)
	}
	return b.String()
}

func TestAppendBatchRejects(t *testing.T) {
	t.Parallel()
	dst := []byte("kept")
	out, err := AppendBatch(dst, nil)
	require.ErrorIs(t, err, ErrInvalidEvent)
	require.Equal(t, "kept", string(out))

	// A value that is not UTF-8 is written as binary mode writes it (its
	// bad bytes as U+FFFD), so the batch carries what a lone event would.
	odd := factEvent()
	odd.TaskName = "not utf-8 \xff"
	out, err = AppendBatch(nil, []Event{odd})
	require.NoError(t, err)
	evs, err := DecodeBatch(out)
	require.NoError(t, err)
	require.Equal(t, "not utf-8 \uFFFD", evs[0].TaskName)

	invalid := factEvent()
	invalid.ID = ""
	out, err = AppendBatch(dst, []Event{factEvent(), invalid})
	require.ErrorIs(t, err, ErrInvalidEvent)
	require.Equal(t, "kept", string(out))
	negative := factEvent()
	negative.Run = -1 // Encode writes it; Decode refuses it
	_, err = AppendBatch(dst, []Event{negative})
	require.ErrorIs(t, err, ErrInvalidEvent)

	big := factEvent()
	big.Data = []byte(`{"input":"` + strings.Repeat("x", MaxBatchSize/2) + `"}`)
	out, err = AppendBatch(dst, []Event{big, big})
	require.ErrorIs(t, err, ErrTooLarge)
	require.Equal(t, "kept", string(out))
	// One of them fits (a fact of MaxDataSize does not: it travels alone,
	// in binary mode).
	_, err = AppendBatch(nil, []Event{big})
	require.NoError(t, err)
}

// FuzzBatch: an event that its binary-mode message carries (Encode, then
// Decode accepts it) comes back from a batch as that message decodes it,
// beside another event; and any bytes DecodeBatch accepts re-encode to a
// batch that decodes to the same events.
func FuzzBatch(f *testing.F) {
	for _, e := range batchEvents() {
		f.Add(e.ID, e.Source, e.Type, e.Subject, e.DataContentType, e.Data, e.TaskID, e.TaskName, e.Trigger,
			e.Attempt, e.Run, e.PluginError, e.Time.UnixNano())
	}
	// A valid batch as the data, for the second half.
	seed, _ := EncodeBatch(batchEvents())
	e := factEvent()
	f.Add(e.ID, e.Source, e.Type, e.Subject, e.DataContentType, seed, e.TaskID, e.TaskName, e.Trigger, 1, 1, "", int64(0))
	f.Fuzz(func(t *testing.T, id, source, typ, subject, ct string, data []byte, taskID, taskName, trigger string,
		attempt, run int, pluginErr string, nanos int64,
	) {
		e := Event{
			ID: id, Source: source, Type: typ, Subject: subject, DataContentType: ct, Data: data,
			TaskID: taskID, TaskName: taskName, Trigger: trigger, Attempt: attempt, Run: run, PluginError: pluginErr,
			Plugin: "p", Invocation: "i",
		}
		if nanos != 0 {
			e.Time = time.Unix(0, nanos)
		}
		want, err := Decode(encode(e), e.Data)
		if err != nil {
			return // not an event binary mode carries
		}
		evs := []Event{factEvent(), e}
		b, err := EncodeBatch(evs)
		if err != nil {
			// Only what JSON text cannot carry byte for byte.
			require.ErrorIs(t, err, ErrInvalidEvent)
			require.False(t, validUTF8Attrs(e), "%v", err)
			return
		}
		got, err := DecodeBatch(b)
		require.NoError(t, err, "%s", b)
		require.Len(t, got, 2)
		requireSameEvent(t, want, got[1])

		// The batch bytes as fuzz input too: whatever decodes, re-encodes.
		if evs, err := DecodeBatch(data); err == nil {
			b2, err := EncodeBatch(evs)
			require.NoError(t, err)
			again, err := DecodeBatch(b2)
			require.NoError(t, err)
			for i := range evs {
				requireSameEvent(t, evs[i], again[i])
			}
		}
	})
}

func validUTF8Attrs(e Event) bool {
	for _, v := range encode(e) {
		for _, s := range v {
			if !utf8.ValidString(s) {
				return false
			}
		}
	}
	return true
}

// phaseFacts is a phase of a task's life as one batch: n facts of a
// 634-byte payload with qtasks' attributes.
func phaseFacts(n int) []Event {
	evs := make([]Event, n)
	data := []byte(`{"input":"` + strings.Repeat("x", 634-12) + `"}`)
	now := time.Now()
	for i := range evs {
		evs[i] = Event{
			ID: "0193e7a2-7c1e-7b9a-9d1c-2b8f0e4f5a6b:1:1:storage_update:" + strconv.Itoa(i), Source: "qtasks/bench-node-1234-abcd1234",
			Type: TypeTriggerPrefix + StorageUpdate, Subject: "0193e7a2-7c1e-7b9a-9d1c-2b8f0e4f5a6b", Time: now,
			DataContentType: ContentTypeJSON, Data: data, TaskID: "0193e7a2-7c1e-7b9a-9d1c-2b8f0e4f5a6b", TaskName: "noop",
			Trigger: StorageUpdate, Attempt: 1, Run: 1,
		}
	}
	return evs
}

// BenchmarkEncodeBatch: a phase of 8 facts (intake, or the end of a run)
// into one batch; per fact.
func BenchmarkEncodeBatch(b *testing.B) {
	evs := phaseFacts(8)
	buf := make([]byte, 0, 16<<10)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendBatch(buf[:0], evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/fact")
	b.SetBytes(int64(len(buf)))
}

// BenchmarkDecodeBatch: the same batch decoded and validated; per fact.
func BenchmarkDecodeBatch(b *testing.B) {
	evs := phaseFacts(8)
	data, err := EncodeBatch(evs)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeBatch(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/fact")
}
