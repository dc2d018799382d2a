package projections

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// decodeDiffs decodes what encoding/json decodes, or says it cannot.
func TestDecodeDiffs(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`[[{"op":"replace","path":"/result","old":3,"new":30}]]`,
		`[null,[{"op":"add","path":"/kw/x","new":{"a":[1,2]}},{"op":"remove","path":"/kw/y","old":null}],null]`,
		`[[]]`,
		`[]`,
		` [ null , [ { "op" : "replace" , "path" : "/a~1b" , "old" : "x" , "new" : "y" } ] ] `,
		`[[{"op":"replace","path":"/r\u00e9sult","old":1,"new":2}]]`, // an escape: encoding/json
		`[[{"OP":"replace","path":"/r","old":1,"new":2}]]`,           // another case: encoding/json
		`[[{"op":"replace","path":"/r","old":1,"new":2,"x":3}]]`,     // an unknown key: encoding/json
		`[[{"op":"replace","path":"/r","old":1,"new":2,"new":5}]]`,   // the last of two keys
		`[[null]]`,
		`[1]`,
		`{}`,
		`[[{"op":1}]]`,
		`[[`,
	} {
		var want [][]Change
		wantErr := json.Unmarshal([]byte(in), &want)
		got, ok := decodeDiffs([]byte(in))
		if !ok {
			continue // the caller falls back on encoding/json
		}
		require.NoError(t, wantErr, "decodeDiffs accepted %s", in)
		require.Equal(t, want, got, in)
	}
	// What encodeDiffs writes is decoded without encoding/json.
	changes, err := Diff([]byte(`{"a":1,"b":[1,2],"c":"x"}`), []byte(`{"a":2,"b":[1,3],"d":null}`))
	require.NoError(t, err)
	stored := encodeDiffs([][]Change{nil, changes})
	got, ok := decodeDiffs(stored)
	require.True(t, ok, string(stored))
	require.Equal(t, [][]Change{nil, changes}, got)
}
