package events_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

func TestParseTraceParent(t *testing.T) {
	t.Parallel()
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	p, err := events.ParseTraceParent(good)
	require.NoError(t, err)
	require.Equal(t, events.TraceParent{Version: "00", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", ParentID: "00f067aa0ba902b7", Flags: "01"}, p)
	require.True(t, events.ValidTraceParent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"))

	for name, s := range map[string]string{
		"empty":           "",
		"short":           good[:54],
		"version 00 long": good + "-x",
		"upper case":      strings.ToUpper(good),
		"version ff":      "ff" + good[2:],
		"zero trace":      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"zero parent":     "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"separators":      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"future no dash":  "01" + good[2:] + "x",
		"huge":            "01" + good[2:] + "-" + strings.Repeat("a", 60<<10),
		"non hex":         "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
	} {
		_, err := events.ParseTraceParent(s)
		require.ErrorIs(t, err, events.ErrInvalidTraceParent, name)
	}
}

func TestCheckIdempotencyKey(t *testing.T) {
	t.Parallel()
	require.NoError(t, events.CheckIdempotencyKey("order-42:retry/1"))
	require.NoError(t, events.CheckIdempotencyKey(strings.Repeat("k", events.MaxIdempotencyKeyLen)))
	for _, k := range []string{strings.Repeat("k", events.MaxIdempotencyKeyLen+1), "a b", "tab\there", "é", "nul\x00"} {
		require.ErrorIs(t, events.CheckIdempotencyKey(k), events.ErrInvalidIdempotencyKey, "%q", k)
	}
}

// Whatever a client sends as traceparent, the parser does not panic, and
// what it accepts is bounded and made of its four fields.
func FuzzParseTraceParent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
	f.Add("00-xyz")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := events.ParseTraceParent(s)
		if err != nil {
			return
		}
		if len(s) > events.MaxTraceParentLen || !strings.HasPrefix(s, p.Version+"-"+p.TraceID+"-"+p.ParentID+"-"+p.Flags) {
			t.Fatalf("accepted %q as %+v", s, p)
		}
	})
}
