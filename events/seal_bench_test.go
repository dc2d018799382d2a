package events_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/events"
)

// BenchmarkMsgHash hashes a fact-sized message (1.5 KiB of data, the
// headers of a task event), as the sealer and verify do for every message.
func BenchmarkMsgHash(b *testing.B) {
	h := events.Headers{}
	ev := events.Event{
		ID: "0192c0de-0000-7000-8000-000000000000:1:1:storage_add:0", Source: "qtasks/node-1", Type: events.TypeTriggerPrefix + events.StorageAdd,
		Time: time.Now(), DataContentType: events.ContentTypeJSON, TaskID: "0192c0de-0000-7000-8000-000000000000", TaskName: "add",
		Trigger: events.StorageAdd, Attempt: 1, Run: 1,
	}
	ev.Encode(h)
	data := bytes.Repeat([]byte("x"), 1536)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		events.MsgHash(12345, "qtasks.trigger.storage_add.default", h, data)
	}
}
