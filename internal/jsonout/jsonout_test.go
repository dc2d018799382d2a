package jsonout

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Down to IndentDepth, WriteJSON writes what json.MarshalIndent does.
func TestWriteJSONShallow(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		`{}`, `[]`, `1`, `"x"`, `null`,
		`{"a":1,"b":[1,2,{}],"c":{"d":[],"e":"q\"u:o,t{e[d"},"f":"\\"}`,
		`[[[[[[[[[[[[[[[[1,2]]]]]]]]]]]]]]]]`,
		`{"kw":{"a":"<&>","b":[true,false,null,-1.5e3]}}`,
	} {
		var v any
		require.NoError(t, json.Unmarshal([]byte(doc), &v), doc)
		compact, err := json.Marshal(v)
		require.NoError(t, err)
		want, err := json.MarshalIndent(v, "", "  ")
		require.NoError(t, err)
		var got bytes.Buffer
		require.NoError(t, Write(&got, compact))
		require.Equal(t, string(want)+"\n", got.String(), doc)
	}
}

// Deeper, the output stays a small multiple of the input, and is the same
// JSON.
func TestWriteJSONDeep(t *testing.T) {
	t.Parallel()
	doc := `{"x":` + strings.Repeat("[", 9000) + `1` + strings.Repeat("]", 9000) + `,"y":[{"z":{}}]}`
	var got bytes.Buffer
	require.NoError(t, Write(&got, []byte(doc)))
	require.Less(t, got.Len(), 2*len(doc), "json.Indent would write some 160 MB")
	require.JSONEq(t, doc, got.String())
}
