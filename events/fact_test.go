package events

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// AppendJSON encodes what json.Marshal does, for the compact payloads the
// executor produces, and decodes back to the same Fact.
func TestFactAppendJSON(t *testing.T) {
	t.Parallel()
	for name, f := range map[string]Fact{
		"OneWay":   {Input: json.RawMessage(`{"model":{"id":"t","args":[1,"<a>"],"kw":{"x":null}}}`)},
		"NoInput":  {},
		"Returned": {Input: json.RawMessage(`{"args":[],"kw":{}}`), Output: json.RawMessage(`{"args":[],"kw":{"x":1}}`)},
		"Calls": {
			Input: json.RawMessage(`{"result":1}`), Output: json.RawMessage(`{"result":1}`),
			Calls: []PluginCall{{
				Plugin: "p", Invocation: "i", Outcome: OutcomeRejected, Reason: "a \"quoted\" <reason>",
				ContentType: ContentTypeJSONPatch, Patch: json.RawMessage(`[ {"op": "remove", "path": "/x"} ]`), LatencyUS: 12,
			}},
			Failed: "plugin p failed: \"x\"\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := f.AppendJSON([]byte("prefix"))
			require.NoError(t, err)
			require.Equal(t, "prefix", string(got[:6]))
			got = got[6:]
			require.True(t, json.Valid(got), string(got))
			want, err := json.Marshal(f)
			require.NoError(t, err)
			require.JSONEq(t, string(want), string(got))
			var back Fact
			require.NoError(t, json.Unmarshal(got, &back))
			var wantBack Fact
			require.NoError(t, json.Unmarshal(want, &wantBack))
			require.Equal(t, wantBack.Calls, back.Calls)
			require.Equal(t, wantBack.Failed, back.Failed)
			require.JSONEq(t, orNull(wantBack.Input), orNull(back.Input))
		})
	}
}

func orNull(b json.RawMessage) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}
