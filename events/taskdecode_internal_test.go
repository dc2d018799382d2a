package events

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// taskDecodeSeeds are records as Task.AppendJSON writes them, and some it
// does not write, for TestDecodeTask and FuzzDecodeTask.
func taskDecodeSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	now := time.Date(2026, 12, 8, 0, 1, 2, 345678901, time.UTC)
	tasks := []Task{
		{
			ID: "0b7e1f0c-5a43-4f1e-9d7a-2f1f6f7c9a10", Name: "add", Queue: "default", Status: StatusNew,
			Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":1,"b":2}`), Attempt: 1, Retry: 3,
			IdempotencyKey: "qtasks-gen:0b7e", CreatedAt: now, UpdatedAt: now, TimeoutMS: 30000,
		},
		{
			ID: "t2", Name: "n", Queue: "q", Priority: -3, Status: StatusProcess, Args: json.RawMessage(`[1,-2.5e3,"x\"y",true,null,{"k":[false]}]`),
			Kw: json.RawMessage(`{}`), Result: json.RawMessage(`"r"`), Error: "boom", Reason: "why", Attempt: 2, Run: 7,
			RetryParent: "t2#1", RetryChild: "t2#3", DelayMS: 1500, Tags: []string{"a", "b"}, SubmitDigest: "d",
			Worker: "w", CreatedAt: now, UpdatedAt: now.Add(time.Second), NotBefore: now.Add(time.Hour),
			Trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		},
		{ID: "t3", Tags: []string{}, Extra: map[string]json.RawMessage{"state": json.RawMessage(`{"n":1}`)}},
		{ID: "t<4>", Name: "é", Kw: json.RawMessage(`{"a":"\u00e9"}`)},
	}
	var out [][]byte
	for i := range tasks {
		b, err := tasks[i].AppendJSON(nil)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	for _, s := range []string{
		`{}`, `{"id":"x","id":"y"}`, `{"ID":"x"}`, `{"id":"x","other":1}`, `{"priority":01}`, `{"priority":1.0}`,
		`{"priority":-0}`, `{"priority":9223372036854775808}`, `{"args":[1,]}`, `{"args":{"a"}}`, `{"kw":nul}`,
		`{"created_at":"2026-13-01T00:00:00Z"}`, `{"created_at":null}`, `{"tags":null}`, `{"tags":["a",1]}`,
		`{"id":"x"} `, ` {"id":"x"}`, `{"args":[1] }`, `{"args":"\u12"}`, `{"args":-}`, `{"args":1e}`,
		`{"status":"a\u0062"}`, `{"status":"\t"}`, `[]`, `{"id":"x",}`, `{,"id":"x"}`,
	} {
		out = append(out, []byte(s))
	}
	return out
}

// DecodeTask gives what json.Unmarshal gives, error or not, whether it
// read the record by hand or not; the records AppendJSON writes without
// an Extra map are read by hand.
func TestDecodeTask(t *testing.T) {
	t.Parallel()
	seeds := taskDecodeSeeds(t)
	for i, data := range seeds {
		requireDecodesAsJSON(t, data)
		if i < 2 {
			var got Task
			if !decodeTaskFast(data, &got) {
				t.Errorf("%s: not read by hand", data)
			}
		}
	}
}

// FuzzDecodeTask: on every input, DecodeTask's result and error are
// json.Unmarshal's, and an input the hand reader takes is one
// json.Unmarshal decodes to the same task.
func FuzzDecodeTask(f *testing.F) {
	for _, s := range taskDecodeSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		requireDecodesAsJSON(t, data)
	})
}

func requireDecodesAsJSON(t *testing.T, data []byte) {
	t.Helper()
	var want Task
	werr := json.Unmarshal(data, &want)
	var fast Task
	if decodeTaskFast(data, &fast) {
		if werr != nil {
			t.Fatalf("%q: read by hand, json.Unmarshal: %v", data, werr)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q: by hand %+v, json.Unmarshal %+v", data, fast, want)
		}
	}
	var got Task
	err := DecodeTask(data, &got)
	if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
		t.Fatalf("%q: error %v, json.Unmarshal's %v", data, err, werr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: %+v, json.Unmarshal %+v", data, got, want)
	}
}

// BenchmarkDecodeTask: a task message as a worker reads it, by hand
// against encoding/json.
func BenchmarkDecodeTask(b *testing.B) {
	data := taskDecodeSeeds(b)[0]
	b.Run("DecodeTask", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var t Task
			if err := DecodeTask(data, &t); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var t Task
			if err := json.Unmarshal(data, &t); err != nil {
				b.Fatal(err)
			}
		}
	})
}
