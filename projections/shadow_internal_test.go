package projections

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/verdict"
)

// compareCalls says identical without applying the patches only where
// verdict.Compare of the two calls' effects says so too: answers with the
// same patch, applied, rejected, empty, of either content type, on either
// outcome that answers.
func TestCompareCallsSamePatch(t *testing.T) {
	t.Parallel()
	tr, ok := events.Lookup(events.TaskExecutorRunTask)
	require.True(t, ok)
	doc := []byte(`{"result":3,"kw":{"a":1}}`)
	patches := []struct {
		ct    string
		patch string
	}{
		{events.ContentTypeJSONPatch, `[{"op":"replace","path":"/result","value":30}]`},
		{events.ContentTypeJSONPatch, `[{"op":"remove","path":"/nosuch"}]`}, // does not apply
		{events.ContentTypeJSONPatch, `[{"op":"test","path":"/result","value":4}]`},
		{events.ContentTypeMergePatch, `{"result":null}`},
		{events.ContentTypeMergePatch, `{"kw":{"b":2}}`},
		{"", ""},
	}
	outcomes := []events.Outcome{events.OutcomeApplied, events.OutcomeNoChange, events.OutcomeShadow}
	for _, p := range patches {
		for _, ro := range outcomes {
			for _, co := range outcomes {
				rec := events.PluginCall{Plugin: "live", Outcome: ro, ContentType: p.ct, Patch: json.RawMessage(p.patch)}
				cand := events.PluginCall{Plugin: "cand", Outcome: co, ContentType: p.ct, Patch: json.RawMessage(p.patch), Shadow: true}
				if p.patch == "" {
					rec.Patch, cand.Patch = nil, nil
				}
				require.Equal(t, verdict.Identical, compareCalls(tr, doc, rec, cand))
				v, _, _, err := verdict.Compare(verdict.CallEffect(tr, doc, rec), verdict.CallEffect(tr, doc, cand))
				require.NoError(t, err)
				require.Equal(t, verdict.Identical, v, "%s %s/%s", p.patch, ro, co)
			}
		}
	}
	// Different patches, or a failure, still go through Compare.
	rec := events.PluginCall{
		Outcome: events.OutcomeApplied, ContentType: events.ContentTypeJSONPatch,
		Patch: json.RawMessage(`[{"op":"replace","path":"/result","value":30}]`),
	}
	cand := rec
	cand.Patch = json.RawMessage(`[{"op":"replace","path":"/result","value":36}]`)
	require.Equal(t, verdict.Different, compareCalls(tr, doc, rec, cand))
	cand = rec
	cand.Outcome = events.OutcomeTimeout
	require.Equal(t, verdict.CandidateTimeout, compareCalls(tr, doc, rec, cand))
	cand = rec
	cand.Patch = json.RawMessage(`[ {"op":"replace","path":"/result","value":30} ]`) // the same effect
	require.Equal(t, verdict.Identical, compareCalls(tr, doc, rec, cand))
}
