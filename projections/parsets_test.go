package projections

import (
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// parseTS reads what ts writes, and reads anything else as time.Parse does.
func TestParseTS(t *testing.T) {
	t.Parallel()
	for _, tm := range []time.Time{
		time.Date(2026, 12, 7, 17, 4, 5, 123456789, time.UTC),
		time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", 3600)),
	} {
		s := ts(tm).(string)
		got, ok := parseLayout(s)
		require.True(t, ok, s)
		require.True(t, tm.Equal(got), "%s: %v", s, got)
		require.Equal(t, time.UTC, got.Location())
		require.Equal(t, got, parseTS(sql.NullString{String: s, Valid: true}))
	}
	for _, s := range []string{
		"2026-02-30T00:00:00.000000000Z", "2026-13-01T00:00:00.000000000Z", "2026-12-07T24:00:00.000000000Z",
		"2026-12-07T17:04:05.12345678xZ", "2026-12-07T17:04:05Z", "2026-12-07T17:04:05.000000000+01:00", "", "garbage",
	} {
		_, ok := parseLayout(s)
		require.False(t, ok, s)
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			want = time.Time{}
		}
		require.Equal(t, want, parseTS(sql.NullString{String: s, Valid: true}), s)
	}
}

// appendTimeText writes what appendTimeField writes for parseTS of the same
// text: times as ts writes them (whose text it copies) and anything else.
func TestAppendTimeText(t *testing.T) {
	t.Parallel()
	var texts []sql.NullString
	for _, tm := range []time.Time{
		time.Date(2026, 12, 7, 17, 4, 5, 123456789, time.UTC), time.Date(2026, 12, 7, 17, 4, 5, 120000000, time.UTC),
		time.Date(2026, 12, 7, 17, 4, 5, 0, time.UTC), time.Date(2026, 12, 7, 17, 4, 5, 1, time.UTC),
		time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		texts = append(texts, sql.NullString{String: ts(tm).(string), Valid: true})
	}
	for _, s := range []string{
		"0001-01-01T00:00:00.000000000Z", // the zero time, which ts writes as NULL
		"2026-02-30T00:00:00.000000000Z", "2100-02-29T00:00:00.000000000Z", "2026-04-31T00:00:00.000000000Z",
		"2026-13-01T00:00:00.000000000Z", "2026-12-07T24:00:00.000000000Z", "2026-12-07T17:04:05.12345678xZ",
		"2026-12-07T17:04:05Z", "2026-12-07T17:04:05.5Z", "2026-12-07T17:04:05.000000000+01:00", "", "garbage",
	} {
		texts = append(texts, sql.NullString{String: s, Valid: true})
	}
	texts = append(texts, sql.NullString{})
	for _, s := range texts {
		want := appendTimeField([]byte("x"), `,"t":`, parseTS(s))
		require.Equal(t, string(want), string(appendTimeText([]byte("x"), `,"t":`, s)), "%q", s.String)
	}
}
