package projections

import (
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// textNull scans what sql.NullString scans, into the same value, with
// the same errors.
func TestTextNull(t *testing.T) {
	t.Parallel()
	for _, src := range []any{
		"", "text", nil, []byte("bytes"), []byte{}, int64(-3), 1.5, true, time.Date(2026, 12, 8, 1, 2, 3, 4, time.UTC), struct{}{},
	} {
		var want, got sql.NullString
		wantErr := want.Scan(src)
		gotErr := textNull{&got}.Scan(src)
		require.Equal(t, want, got, "%#v", src)
		require.Equal(t, wantErr == nil, gotErr == nil, "%#v: %v, %v", src, wantErr, gotErr)
	}
}
