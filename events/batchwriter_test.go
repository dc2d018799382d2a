package events

import (
	"bytes"
	"errors"
	"strconv"
	"testing"
	"time"
)

// TestBatchWriter: the writer's bytes are AppendBatch's for the same
// events, whatever their attributes and data, and the batch decodes to them.
func TestBatchWriter(t *testing.T) {
	now := time.Date(2026, 12, 7, 17, 0, 0, 123456789, time.FixedZone("x", 3600))
	base := Event{
		ID: "t1:1:1:storage_get:0", Source: "qtasks/node-1", Type: TypeTriggerPrefix + StorageGet, Subject: "t1",
		Time: now, DataContentType: ContentTypeJSON, Data: []byte(`{"input":{"a":1}}`), TaskID: "t1", TaskName: "noop",
		Trigger: StorageGet, Attempt: 1, Run: 2,
	}
	vary := []func(e *Event){
		func(_ *Event) {},
		func(e *Event) { e.TaskName = `name "quoted" \ and ünïcode %41 and space` },
		func(e *Event) { e.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
		func(e *Event) { e.Time = time.Time{}; e.Attempt = 0; e.Run = 0 },
		func(e *Event) { e.Data = []byte(` {"input":1} `) },          // white space: base64
		func(e *Event) { e.Data = []byte(`not json`) },               // base64
		func(e *Event) { e.Data = nil },                              // no data
		func(e *Event) { e.DataContentType = ContentTypeMergePatch }, // base64
		func(e *Event) { e.Replay = "ns1"; e.TimeoutMS = 30 },
		func(e *Event) { e.Subject = ""; e.TaskID = ""; e.TaskName = "" },
		func(e *Event) {
			e.Type, e.Plugin, e.Invocation, e.PluginVersion, e.PluginError = TypePatch, "p1", "inv", "1.0", "boom"
		},
	}
	var evs []Event
	for _, v := range vary {
		e := base
		v(&e)
		evs = append(evs, e)
	}
	for _, trusted := range []bool{false, true} {
		var w BatchWriter
		for i := range evs {
			// trusted is only ever said of compact JSON the caller wrote.
			if err := w.Add(&evs[i], trusted && (i == 0 || i == 1)); err != nil {
				t.Fatalf("add %d: %v", i, err)
			}
		}
		want, err := EncodeBatch(evs)
		if err != nil {
			t.Fatal(err)
		}
		if w.Len() != len(evs) || w.Size() != len(want) {
			t.Fatalf("len %d size %d, want %d and %d", w.Len(), w.Size(), len(evs), len(want))
		}
		got := w.Take()
		if !bytes.Equal(got, want) {
			t.Fatalf("trusted=%v:\n got %s\nwant %s", trusted, got, want)
		}
		back, err := DecodeBatch(got)
		if err != nil || len(back) != len(evs) {
			t.Fatalf("decode: %d events, %v", len(back), err)
		}
		if w.Len() != 0 || w.Take() != nil {
			t.Fatal("Take did not empty the writer")
		}
	}
}

// TestBatchJoiner: batches joined write the batch of all their events in
// order, as one writer adding them would; a batch that would pass
// MaxBatchSize is refused with the joiner unchanged.
func TestBatchJoiner(t *testing.T) {
	ev := func(task string, i int) Event {
		return Event{
			ID: task + ":1:0:broker_add_before:" + strconv.Itoa(i), Source: "qtasks/n", Type: TypeTriggerPrefix + BrokerAddBefore,
			Subject: task, DataContentType: ContentTypeJSON, Data: []byte(`{"input":{"n":` + strconv.Itoa(i) + `}}`),
			TaskID: task, Trigger: BrokerAddBefore, Attempt: 1,
		}
	}
	var all []Event
	var j BatchJoiner
	for k, task := range []string{"t1", "t2", "t3"} {
		var w BatchWriter
		for i := range k + 1 {
			e := ev(task, i)
			all = append(all, e)
			if err := w.Add(&e, true); err != nil {
				t.Fatal(err)
			}
		}
		n := w.Len()
		if err := j.Add(w.Take(), n); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Add(nil, 0); err != nil {
		t.Fatal(err)
	}
	want, err := EncodeBatch(all)
	if err != nil {
		t.Fatal(err)
	}
	if j.Len() != len(all) {
		t.Fatalf("len %d, want %d", j.Len(), len(all))
	}
	if got := j.Take(); !bytes.Equal(got, want) || cap(got) != len(want) {
		t.Fatalf("got %s (cap %d)\nwant %s", got, cap(got), want)
	}
	if j.Len() != 0 || j.Take() != nil {
		t.Fatal("Take did not empty the joiner")
	}

	big := ev("t1", 0)
	big.Data = append(append([]byte(`"`), bytes.Repeat([]byte("x"), MaxBatchSize/2)...), '"')
	var w BatchWriter
	if err := w.Add(&big, true); err != nil {
		t.Fatal(err)
	}
	b := w.Take()
	if err := j.Add(b, 1); err != nil {
		t.Fatal(err)
	}
	if err := j.Add(b, 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if got := j.Take(); !bytes.Equal(got, b) {
		t.Fatal("a refused Add changed the joiner")
	}
}

// TestBatchWriterRefuses: what AppendBatch refuses, Add refuses, and the
// batch is as it was.
func TestBatchWriterRefuses(t *testing.T) {
	ok := Event{
		ID: "a", Source: "qtasks/n", Type: TypeTriggerPrefix + StorageGet, Trigger: StorageGet,
		DataContentType: ContentTypeJSON, Data: []byte(`{}`),
	}
	var w BatchWriter
	if err := w.Add(&ok, true); err != nil {
		t.Fatal(err)
	}
	before := w.Size()
	bad := []Event{ok, ok, ok, ok}
	bad[0].TaskName = "bad \xff utf-8"
	bad[1].Trigger = "nope"                 // does not match its type
	bad[2].Run = -1                         // Decode refuses negative numbers
	bad[3].Data = make([]byte, MaxDataSize) // valid alone, but no room beside the other
	bad[3].Data[0], bad[3].Data[len(bad[3].Data)-1] = '"', '"'
	for i := range bad {
		err := w.Add(&bad[i], false)
		if err == nil {
			t.Fatalf("event %d accepted", i)
		}
		// AppendBatch writes an invalid UTF-8 value as binary mode's header
		// carries it (U+FFFD for each bad byte); the writer leaves such an
		// event to travel alone, in binary mode.
		if _, aerr := EncodeBatch([]Event{ok, bad[i]}); aerr == nil && i != 0 {
			t.Fatalf("event %d: AppendBatch accepts it", i)
		}
		if w.Len() != 1 || w.Size() != before {
			t.Fatalf("event %d: the batch changed", i)
		}
	}
	if err := w.Add(&bad[3], false); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if _, err := DecodeBatch(w.Take()); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkBatchWriter: BenchmarkEncodeBatch's phase of 8 facts through
// the writer, as the executor packs them (its data trusted); per fact.
func BenchmarkBatchWriter(b *testing.B) {
	evs := phaseFacts(8)
	b.ReportAllocs()
	var w BatchWriter
	n := 0
	for b.Loop() {
		for i := range evs {
			if err := w.Add(&evs[i], true); err != nil {
				b.Fatal(err)
			}
		}
		n = len(w.Take())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/fact")
	b.SetBytes(int64(n))
}

// A writer checks a fact whose shared attributes are those of the last
// event it checked whole by its own attributes only (BatchWriter.check):
// its answer is checkBatchable's, errors included, for every fact.
func TestBatchWriterChecksOwnAttributes(t *testing.T) {
	t.Parallel()
	first := Event{
		ID: "t1:1:1:storage_get:0", Source: "qtasks/node-1", Type: TypeTriggerPrefix + StorageGet, Subject: "t1",
		Time: time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC), DataContentType: ContentTypeJSON, Data: []byte(`{}`),
		TaskID: "t1", TaskName: "noop", Trigger: StorageGet, Attempt: 1, Run: 1,
	}
	for _, tc := range []struct {
		name string
		vary func(e *Event)
	}{
		{"the same", func(*Event) {}},
		{"another trigger", func(e *Event) {
			e.Type, e.Trigger, e.ID = TypeTriggerPrefix+BrokerGet, BrokerGet, "t1:1:1:broker_get:0"
		}},
		{"blank id", func(e *Event) { e.ID = " " }},
		{"id not UTF-8", func(e *Event) { e.ID = "a\xff" }},
		{"unknown trigger", func(e *Event) { e.Type, e.Trigger = TypeTriggerPrefix+"nope", "nope" }},
		{"trigger not the type's", func(e *Event) { e.Trigger = BrokerGet }},
		{"not a fact", func(e *Event) { e.Type = TypeTask }},
		{"negative run", func(e *Event) { e.Run = -1 }},
		{"negative timeout", func(e *Event) { e.TimeoutMS = -1 }},
		{"year 10000", func(e *Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"data too large", func(e *Event) { e.Data = make([]byte, MaxDataSize+1) }},
		{"another task", func(e *Event) { e.TaskID, e.Subject = "t 2", "t 2" }},
		{"a plugin attribute", func(e *Event) { e.Plugin = "p q" }},
		{"task name not UTF-8", func(e *Event) { e.TaskName = "\xff" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var w BatchWriter
			ok := first
			if err := w.Add(&ok, true); err != nil {
				t.Fatal(err)
			}
			ev := first
			tc.vary(&ev)
			want := checkBatchable(&ev)
			got := w.check(&ev)
			if (got == nil) != (want == nil) || got != nil && got.Error() != want.Error() {
				t.Fatalf("check: %v, checkBatchable: %v", got, want)
			}
		})
	}
}
