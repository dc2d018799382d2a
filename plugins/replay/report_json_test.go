package replay_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/plugins/replay"
)

// A recorded patch nested thousands deep (the log may hold one from before
// patches had a depth limit) makes a report of about its own size, not the
// square of its depth: the indentation stops at jsonout.IndentDepth.
func TestReportJSONBounded(t *testing.T) {
	t.Parallel()
	const depth = 5000
	patch := json.RawMessage(`{"kw":{"x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}}`)
	rep := &replay.Report{Plugin: "p", Results: []replay.Result{{Recorded: replay.Answer{Outcome: "applied", Patch: patch}}}}
	var b bytes.Buffer
	require.NoError(t, rep.WriteJSON(&b))
	require.Less(t, b.Len(), 4*len(patch)+4096, "report of %d bytes for a %d-byte patch", b.Len(), len(patch))
	var back replay.Report
	require.NoError(t, json.Unmarshal(b.Bytes(), &back))
	require.JSONEq(t, string(patch), string(back.Results[0].Recorded.Patch))

	var rb bytes.Buffer
	red := &replay.RedriveReport{Runs: []replay.RunReport{}}
	require.NoError(t, red.WriteJSON(&rb))
	require.True(t, json.Valid(rb.Bytes()))
}
