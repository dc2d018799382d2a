package projections

import (
	"database/sql"
	"encoding/json"
	"testing"
)

// BenchmarkAppendStoredEntry writes one fact as the console benchmark's
// projection holds it (one call, its stored changes).
func BenchmarkAppendStoredEntry(b *testing.B) {
	changes, err := Diff([]byte(`{"result":3}`), []byte(`{"result":30}`))
	if err != nil {
		b.Fatal(err)
	}
	diffs, err := json.Marshal([][]Change{changes})
	if err != nil {
		b.Fatal(err)
	}
	fr := factRow{
		e: Entry{
			Seq: 1234567, Trigger: "task_executor_run_task",
			Component: "task_executor", Attempt: 1, Run: 1, EventID: "019af6c2-3b1e-7c4d-9a2b-6f1e2d3c4b5a:1:1:t:3", Source: "qtasks/node-1",
		},
		data: []byte(`{"input":{"result":3},"output":{"result":30},"calls":[{"plugin":"scale","version":"1","invocation":"x",` +
			`"outcome":"applied","content_type":"application/json-patch+json",` +
			`"patch":[{"op":"replace","path":"/result","value":30}],"latency_us":300}]}`),
		at:     sql.NullString{String: "2026-11-01T00:00:00.000000000Z", Valid: true},
		stored: diffs,
	}
	tr := &timelineReader{id: "019af6c2-3b1e-7c4d-9a2b-6f1e2d3c4b5a"}
	dst := make([]byte, 0, 4096)
	for b.Loop() {
		var ok bool
		if dst, ok = tr.appendStoredEntry(dst[:0], &fr, nil); !ok {
			b.Fatal("not written")
		}
	}
	b.SetBytes(int64(len(fr.data)))
}
