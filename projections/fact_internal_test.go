package projections

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

// decodeFact must read a fact exactly as json.Unmarshal into events.Fact.
func checkDecodeFact(t *testing.T, data []byte) {
	t.Helper()
	var want, got events.Fact
	werr := json.Unmarshal(data, &want)
	gerr := decodeFact(data, &got)
	if json.Valid(data) { // as the projection stores them
		var stored events.Fact
		serr := decodeStoredFact(data, &stored)
		require.Equal(t, gerr == nil, serr == nil, "%q: %v, decodeFact %v", data, serr, gerr)
		require.Equal(t, got, stored, "%q", data)
	}
	if werr != nil {
		require.Error(t, gerr, "%q", data)
		return
	}
	require.NoError(t, gerr, "%q", data)
	require.Equal(t, want, got, "%q", data)
}

func TestDecodeFact(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`{"input":{"a":1}}`,
		`{"input":{"a":"}"},"output":[1,{"b":"\"]"}],"failed":"x\ny"}`,
		` { "INPUT" : null , "Output":true, "calls":[{"plugin":"p","outcome":"applied","patch":{"a":[1,2]}}] } `,
		`{"input":1,"input":2}`,
		`{"calls":null,"failed":null}`,
		`{"\u0069nput":"escaped key"}`,
		`{"input":1,"calls":"not calls"}`,
		`{"failed":5}`,
		`[1,2]`, `null`, `"x"`, `{`, `{"input":}`, ``, `{"a":1}x`,
	} {
		checkDecodeFact(t, []byte(s))
	}
	f, err := os.Open("testdata/replay/scenario/events.jsonl")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var m struct {
			Data string `json:"data"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		checkDecodeFact(t, []byte(m.Data))
	}
	require.NoError(t, sc.Err())
}

func FuzzDecodeFact(f *testing.F) {
	f.Add([]byte(`{"input":{"a":1},"output":{"a":2},"calls":[{"plugin":"p"}],"failed":""}`))
	f.Add([]byte(`{"InPuT":[1,"]"],"x":{"y":"}"}}`))
	f.Fuzz(func(t *testing.T, data []byte) { checkDecodeFact(t, data) })
}
