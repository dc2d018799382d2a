package events

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Types are part of the patch contract: a patch that leaves a value of the
// wrong type at an allowed path is rejected, naming the path, instead of
// being applied and failing the task later with "bad task arguments".
func TestApplyPatchChecksTypes(t *testing.T) {
	t.Parallel()
	argsDoc := `{"args":[1],"kw":{"a":1}}`
	for _, c := range []struct {
		name, trigger, doc, ct, patch string
		path                          string // "" when the patch applies
	}{
		{"KwString", TaskExecutorArgsReplace, argsDoc, ContentTypeMergePatch, `{"kw":"oops"}`, "/kw"},
		{"ArgsObject", TaskExecutorArgsReplace, argsDoc, ContentTypeMergePatch, `{"args":{"a":1}}`, "/args"},
		{"ArgsObjectJSONPatch", TaskExecutorArgsReplace, argsDoc, ContentTypeJSONPatch, `[{"op":"replace","path":"/args","value":{}}]`, "/args"},
		{"KwNumber", WorkerAdd, `{"priority":0,"args":[],"kw":{}}`, ContentTypeMergePatch, `{"kw":3}`, "/kw"},
		{"PriorityFloat", WorkerAdd, `{"priority":0,"args":[],"kw":{}}`, ContentTypeMergePatch, `{"priority":1.5}`, "/priority"},
		{"PriorityString", BrokerAddBefore, `{"model":{"priority":0}}`, ContentTypeMergePatch, `{"model":{"priority":"high"}}`, "/model/priority"},
		{"PriorityHuge", WorkerAdd, `{"priority":0}`, ContentTypeMergePatch, `{"priority":1e30}`, "/priority"},
		{"TagsNotStrings", BrokerAddBefore, `{"model":{"tags":[]}}`, ContentTypeMergePatch, `{"model":{"tags":[1]}}`, "/model/tags"},
		{"ExtraArray", StorageAdd, `{"task_status":{"extra":{}}}`, ContentTypeMergePatch, `{"task_status":{"extra":[1]}}`, "/task_status/extra"},
		{"NestedExtra", StorageUpdate, `{"kw":{"mapping":{"extra":{}}}}`, ContentTypeMergePatch, `{"kw":{"mapping":{"extra":"x"}}}`, "/kw/mapping/extra"},
		{"DelayString", WorkerTaskErrorRetry, `{"model":{"status":"retry","delay_ms":0}}`, ContentTypeMergePatch, `{"model":{"delay_ms":"5s"}}`, "/model/delay_ms"},
		{"DelayNegative", WorkerTaskErrorRetry, `{"model":{"status":"retry","delay_ms":0}}`, ContentTypeMergePatch, `{"model":{"delay_ms":-1}}`, "/model/delay_ms"},
		{"StatusUnknown", WorkerTaskErrorRetry, `{"model":{"status":"retry"}}`, ContentTypeMergePatch, `{"model":{"status":"nope"}}`, "/model/status"},
		{"StatusNumber", WorkerTaskErrorRetry, `{"model":{"status":"retry"}}`, ContentTypeMergePatch, `{"model":{"status":1}}`, "/model/status"},
		{"TaskNameNumber", QTasksAddTaskBeforeBroker, `{"task_name":"t","args":[],"kw":{}}`, ContentTypeMergePatch, `{"task_name":7}`, "/task_name"},
		{"ResultsObject", TaskExecutorRunTaskGen, `{"results":[]}`, ContentTypeMergePatch, `{"results":{}}`, "/results"},
		{"ArgsString", TaskExecutorArgsReplace, argsDoc, ContentTypeJSONPatch, `[{"op":"replace","path":"/args","value":"x"}]`, "/args"},

		// Right types apply; below a typed path anything goes.
		{"KwObject", TaskExecutorArgsReplace, argsDoc, ContentTypeMergePatch, `{"kw":{"b":"x"},"args":[2,"y"]}`, ""},
		{"KwMember", TaskExecutorArgsReplace, argsDoc, ContentTypeJSONPatch, `[{"op":"add","path":"/kw/b","value":"s"}]`, ""},
		{"ArgsElement", TaskExecutorArgsReplace, argsDoc, ContentTypeJSONPatch, `[{"op":"replace","path":"/args/0","value":{}}]`, ""},
		{"Priority", WorkerAdd, `{"priority":0}`, ContentTypeMergePatch, `{"priority":-3}`, ""},
		{"PriorityExponent", WorkerAdd, `{"priority":0}`, ContentTypeMergePatch, `{"priority":2e2}`, "/priority"}, // Go's int refuses it
		{"Tags", BrokerAddBefore, `{"model":{"tags":null}}`, ContentTypeMergePatch, `{"model":{"tags":["a","b"]}}`, ""},
		{"Status", WorkerTaskErrorRetry, `{"model":{"status":"retry"}}`, ContentTypeMergePatch, `{"model":{"status":"error","delay_ms":250}}`, ""},
		{"Result", TaskExecutorRunTask, `{"result":1}`, ContentTypeMergePatch, `{"result":"anything"}`, ""},
		// null is read as empty for objects and arrays; deleting leaves the key out.
		{"ExtraNull", QTasksAddTaskBeforeBroker, `{"task_name":"t","extra":{"a":1}}`, ContentTypeJSONPatch, `[{"op":"replace","path":"/extra","value":null}]`, ""},
		{"KwRemoved", TaskExecutorArgsReplace, argsDoc, ContentTypeJSONPatch, `[{"op":"remove","path":"/kw"}]`, ""},
		// A wrong type the payload already had is not the patch's doing.
		{"Untouched", BrokerAddBefore, `{"model":{"priority":"x","extra":{}}}`, ContentTypeMergePatch, `{"model":{"extra":{"a":1}}}`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tr, ok := Lookup(c.trigger)
			require.True(t, ok)
			_, err := ApplyPatch(tr, []byte(c.doc), c.ct, []byte(c.patch))
			if c.path == "" {
				require.NoError(t, err)
				return
			}
			var pe *PatchError
			require.ErrorAs(t, err, &pe)
			require.ErrorIs(t, err, ErrWrongType)
			require.Equal(t, c.path, pe.Path, err.Error())
		})
	}
}

// Every allowed path has a declared type, and every declared type is one
// the checker knows.
func TestCatalogPathTypes(t *testing.T) {
	t.Parallel()
	for _, tr := range Catalog() {
		for _, p := range tr.Paths {
			typ := tr.PathType(p)
			require.NotEmpty(t, typ, "%s %s", tr.Name, p)
			_, known := jsonTypeCheck[typ]
			require.True(t, known, "%s %s: %s", tr.Name, p, typ)
		}
	}
}
