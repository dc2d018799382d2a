package projections

import (
	"database/sql"
	"testing"
)

// BenchmarkAppendTimeText writes a task's six times as the tasks page
// does, from the text of their columns.
func BenchmarkAppendTimeText(b *testing.B) {
	s := sql.NullString{String: "2026-11-01T00:00:00.040000000Z", Valid: true}
	dst := make([]byte, 0, 1024)
	for b.Loop() {
		dst = dst[:0]
		for _, name := range taskTimeNames {
			dst = appendTimeText(dst, name, s)
		}
	}
}
