package projections

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// recordFields names every field of events.Task by its JSON name, in
// order: a field added to Task must be added to decodeRecord.
func TestRecordFields(t *testing.T) {
	t.Parallel()
	for i, name := range checkFieldNames[events.Task](t, "decodeRecord", recordFields[:rfCount]) {
		if got := recordField(strings.ToUpper(name)); got != i {
			t.Errorf("recordField(%q) = %d, want %d", strings.ToUpper(name), got, i)
		}
	}
}

// checkFieldNames fails unless names are the JSON names of T's fields, in
// order, and returns them: a field added to T must be added to the hand
// decoder too.
func checkFieldNames[T any](t *testing.T, decoder string, names []string) []string {
	t.Helper()
	typ := reflect.TypeFor[T]()
	if typ.NumField() != len(names) {
		t.Fatalf("%s has %d fields, %s knows %d", typ, typ.NumField(), decoder, len(names))
	}
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if name != names[i] {
			t.Errorf("field %d of %s is %q, %s has %q", i, typ, name, decoder, names[i])
		}
	}
	return names
}

// checkDecodeRecord compares decodeRecord with json.Unmarshal into the
// payloads of the three records: when decodeRecord decodes, it must
// decode what encoding/json does, and encoding/json must not refuse the
// document.
func checkDecodeRecord(t *testing.T, doc []byte) {
	t.Helper()
	if !validJSON(doc) {
		return // decodeRecord's documents are valid: decodeFact checked them
	}
	var add struct {
		Model events.Task `json:"task_status"`
	}
	var update struct {
		Kw struct {
			Mapping events.Task `json:"mapping"`
		} `json:"kw"`
	}
	var direct events.Task
	for _, c := range []struct {
		v    any
		m    *events.Task
		path []string
	}{{&add, &add.Model, []string{"task_status"}}, {&update, &update.Kw.Mapping, []string{"kw", "mapping"}}, {&direct, &direct, nil}} {
		var got events.Task
		if !decodeRecord(doc, c.path, &got) {
			continue
		}
		if err := json.Unmarshal(doc, c.v); err != nil {
			t.Fatalf("decodeRecord(%q, %q) decoded what encoding/json refuses: %v", doc, c.path, err)
		}
		if !reflect.DeepEqual(got, *c.m) {
			t.Fatalf("decodeRecord(%q, %q) =\n%#v\nencoding/json:\n%#v", doc, c.path, got, *c.m)
		}
	}
	var args struct {
		Args json.RawMessage `json:"args"`
		Kw   json.RawMessage `json:"kw"`
	}
	var e effect
	if decodeArgs(doc, &e) {
		if err := json.Unmarshal(doc, &args); err != nil {
			t.Fatalf("decodeArgs(%q) decoded what encoding/json refuses: %v", doc, err)
		}
		if string(e.args) != string(args.Args) || string(e.kw) != string(args.Kw) || (e.args == nil) != (args.Args == nil) ||
			(e.kw == nil) != (args.Kw == nil) {
			t.Fatalf("decodeArgs(%q) = %q, %q; encoding/json: %q, %q", doc, e.args, e.kw, args.Args, args.Kw)
		}
	}
}

// recordSeeds are the documents of the recorded log's records, and edge
// cases.
func recordSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	seeds := [][]byte{
		[]byte(`null`), []byte(`{}`), []byte(`{"task_status":null}`), []byte(`{"kw":{"mapping":null}}`), []byte(`[]`),
		[]byte(`{"task_status":{"id":"a","ID":"b"}}`), []byte(`{"task_status":{"id":"a\u00e9","tags":[],"extra":{"x":1}}}`),
		[]byte(`{"task_status":{"attempt":1.5}}`), []byte(`{"task_status":{"attempt":-0,"priority":9223372036854775807}}`),
		[]byte(`{"task_status":{"tags":["a","b"],"tags":null}}`), []byte(`{"task_status":{"created_at":"2026-01-02T03:04:05Z"}}`),
		[]byte(`{"task_status":{"created_at":"2026-01-02 03:04:05"}}`), []byte(`{"TASK_STATUS":{"Task_Name":"x","ſtatus":"s"}}`),
		[]byte("{\"task_status\":{\"id\":\"\xff\"}}"), []byte(`{"task_status":{"result":null,"args":[1],"kw":{"a":null}}}`),
		[]byte(`{"args":[1],"kw":{"a":2}}`), []byte(`{"args":null,"ARGS":1}`), []byte(`{"task_status":{"tags":[1]}}`),
		[]byte(`{"task_status":{"extra":{"a":1},"extra":{"b":2}}}`), []byte(`{"task_status":{"id":1}}`),
	}
	return append(seeds, loggedRecords(tb)...)
}

// loggedRecords are the inputs and outputs of the recorded log's facts that
// hold task records or arguments.
func loggedRecords(tb testing.TB) [][]byte {
	tb.Helper()
	var docs [][]byte
	for _, m := range projectionstest.ReadFile(tb, projectionstest.ScenarioLog()) {
		var f events.Fact
		if err := json.Unmarshal([]byte(m.Data), &f); err == nil {
			for _, d := range [][]byte{f.Input, f.Output} {
				if len(d) > 0 && (strings.Contains(string(d), `"attempt"`) || strings.Contains(string(d), `"args"`)) {
					docs = append(docs, d)
				}
			}
		}
	}
	return docs
}

func TestDecodeRecord(t *testing.T) {
	t.Parallel()
	for _, doc := range recordSeeds(t) {
		checkDecodeRecord(t, doc)
	}
	// The recorded log's records decode without encoding/json.
	paths := map[string][]string{`{"task_status":`: {"task_status"}, `{"kw":{"mapping":`: {"kw", "mapping"}, `{"model":`: {"model"}}
	found := map[string]int{}
	for _, doc := range loggedRecords(t) {
		for prefix, path := range paths {
			if strings.HasPrefix(string(doc), prefix) {
				var m events.Task
				require.True(t, decodeRecord(doc, path, &m), "decodeRecord(%s) falls back to encoding/json", doc)
				found[prefix]++
			}
		}
	}
	require.Len(t, found, len(paths), "records of each kind in the recorded log")
}

func FuzzDecodeRecord(f *testing.F) {
	for _, doc := range recordSeeds(f) {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc []byte) { checkDecodeRecord(t, doc) })
}

// BenchmarkDecodeRecord compares decodeRecord with encoding/json on the
// recorded log's task records (storage_update's kw.mapping).
//
//	go test ./projections/ -run NONE -bench DecodeRecord
func BenchmarkDecodeRecord(b *testing.B) {
	var docs [][]byte
	for _, d := range loggedRecords(b) {
		if strings.HasPrefix(string(d), `{"kw":{"mapping":`) {
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		b.Fatal("no records")
	}
	b.Run("decodeRecord", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			var m events.Task
			if !decodeRecord(docs[i%len(docs)], []string{"kw", "mapping"}, &m) {
				b.Fatal("not decoded")
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			var p struct {
				Kw struct {
					Mapping events.Task `json:"mapping"`
				} `json:"kw"`
			}
			if err := json.Unmarshal(docs[i%len(docs)], &p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestCallFields(t *testing.T) {
	t.Parallel()
	checkFieldNames[events.PluginCall](t, "decodeCalls", callFields[:cfCount])
}

// checkDecodeCalls compares decodeCalls with json.Unmarshal into a nil
// slice.
func checkDecodeCalls(t *testing.T, val []byte) {
	t.Helper()
	if !validJSON(val) {
		return
	}
	got, ok := decodeCalls(val)
	if !ok {
		return
	}
	var want []events.PluginCall
	if err := json.Unmarshal(val, &want); err != nil {
		t.Fatalf("decodeCalls(%q) decoded what encoding/json refuses: %v", val, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeCalls(%q) =\n%#v\nencoding/json:\n%#v", val, got, want)
	}
}

func callSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	seeds := [][]byte{
		[]byte(`null`), []byte(`[]`), []byte(` [ ] `), []byte(`[null]`), []byte(`[{}]`), []byte(`[1]`), []byte(`{}`),
		[]byte(`[{"plugin":"p","PLUGIN":"q"}]`), []byte(`[{"shadow":true,"patch_omitted":false,"invoke_seq":18446744073709551615}]`),
		[]byte(`[{"invoke_seq":-1}]`), []byte(`[{"latency_us":1e3}]`), []byte(`[{"patch":null,"outcome":"applied","x":[1]}]`),
		[]byte(`[{"shadow":null,"reason":"a\nb"},{"version":"\u00e9"}]`), []byte(`[{"shadow":"true"}]`),
	}
	for _, m := range projectionstest.ReadFile(tb, projectionstest.ScenarioLog()) {
		var raw struct {
			Calls json.RawMessage `json:"calls"`
		}
		if err := json.Unmarshal([]byte(m.Data), &raw); err == nil && len(raw.Calls) > 0 {
			seeds = append(seeds, raw.Calls)
		}
	}
	return seeds
}

func TestDecodeCalls(t *testing.T) {
	t.Parallel()
	seeds := callSeeds(t)
	require.Greater(t, len(seeds), 20, "the recorded log has facts with calls")
	for _, val := range seeds {
		checkDecodeCalls(t, val)
	}
	_, ok := decodeCalls(seeds[len(seeds)-1])
	require.True(t, ok, "the recorded calls decode without encoding/json")
}

func FuzzDecodeCalls(f *testing.F) {
	for _, val := range callSeeds(f) {
		f.Add(val)
	}
	f.Fuzz(func(t *testing.T, val []byte) { checkDecodeCalls(t, val) })
}
