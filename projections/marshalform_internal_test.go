package projections

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// marshalForm says whether json.Marshal writes valid JSON as it is: on
// random JSON with and without spaces, escapes, the characters it escapes
// for HTML, U+2028 and U+2029, other scripts.
func TestMarshalForm(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	pick := func(alts ...string) string { return alts[rng.IntN(len(alts))] }
	strs := []string{
		`""`, `"a"`, `"a b"`, `"q\"x"`, `"\\"`, `"\u003c"`, `"<"`, `">"`, `"&"`, "\"\u2028\"", "\"\u2029\"",
		"\"\u2027\"", `"naïve 日本"`, `"\n"`, `"tab\t"`, `"\/"`,
	}
	var value func(depth int) string
	value = func(depth int) string {
		sp := func() string { return pick("", "", "", "", " ", "\n", "\t", "\r") }
		switch k := rng.IntN(7); {
		case depth > 3 || k < 3:
			return pick(strs...) + pick("", "") + pick("", "")
		case k == 3:
			return pick("1", "-2.5e3", "true", "false", "null")
		case k == 4:
			var ms []string
			for range rng.IntN(4) {
				ms = append(ms, sp()+pick(strs...)+sp()+":"+sp()+value(depth+1)+sp())
			}
			return "{" + strings.Join(ms, ",") + "}"
		default:
			var es []string
			for range rng.IntN(4) {
				es = append(es, sp()+value(depth+1)+sp())
			}
			return "[" + strings.Join(es, ",") + "]"
		}
	}
	for i := range 20000 {
		raw := value(0)
		if i%5 == 0 {
			raw = pick(" ", "") + raw + pick(" ", "")
		}
		require.True(t, json.Valid([]byte(raw)), raw)
		want, err := json.Marshal(json.RawMessage(raw))
		require.NoError(t, err)
		require.Equal(t, string(want) == raw, marshalForm([]byte(raw)), "%q", raw)
	}
}
