package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func mustLookup(tb testing.TB, name string) Trigger {
	tb.Helper()
	tr, ok := Lookup(name)
	require.True(tb, ok, name)
	return tr
}

const argsDoc = `{"args":[],"kw":{}}`

func TestApplyPatch(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		trigger string
		doc     string
		ct      string
		patch   string
		want    string
	}{
		{
			name: "MergeAddKw", trigger: TaskExecutorArgsReplace, doc: argsDoc, ct: ContentTypeMergePatch,
			patch: `{"kw":{"x":1}}`, want: `{"args":[],"kw":{"x":1}}`,
		},
		{
			name: "JSONPatchAddKw", trigger: TaskExecutorArgsReplace, doc: argsDoc, ct: ContentTypeJSONPatch,
			patch: `[{"op":"add","path":"/kw/x","value":1}]`, want: `{"args":[],"kw":{"x":1}}`,
		},
		{
			name: "MergeReplaceArgs", trigger: TaskExecutorArgsReplace, doc: argsDoc, ct: ContentTypeMergePatch,
			patch: `{"args":[1,"two",{"three":3}]}`, want: `{"args":[1,"two",{"three":3}],"kw":{}}`,
		},
		{
			name: "MergeNullDeletesKw", trigger: TaskExecutorArgsReplace, doc: argsDoc, ct: ContentTypeMergePatch,
			patch: `{"kw":null}`, want: `{"args":[]}`,
		},
		{
			name: "MergeNullDeletesNestedKey", trigger: TaskExecutorArgsReplace, doc: `{"args":[],"kw":{"a":1,"b":2}}`,
			ct: ContentTypeMergePatch, patch: `{"kw":{"a":null}}`, want: `{"args":[],"kw":{"b":2}}`,
		},
		{
			name: "MergeEmptyObjectNoChange", trigger: TaskExecutorArgsReplace, doc: argsDoc, ct: ContentTypeMergePatch,
			patch: `{}`, want: argsDoc,
		},
		{
			name: "MergeKeyWithSlashInsideAllowed", trigger: TaskExecutorArgsReplace, doc: argsDoc, ct: ContentTypeMergePatch,
			patch: `{"kw":{"a/b":1,"c~d":2}}`, want: `{"args":[],"kw":{"a/b":1,"c~d":2}}`,
		},
		{
			name: "MergeWithCharset", trigger: TaskExecutorArgsReplace, doc: argsDoc,
			ct: "application/merge-patch+json; charset=utf-8", patch: `{"kw":{"x":1}}`, want: `{"args":[],"kw":{"x":1}}`,
		},
		{
			name: "ContentTypeCaseAndSpace", trigger: TaskExecutorArgsReplace, doc: argsDoc,
			ct: "  Application/JSON-Patch+JSON ;charset=utf-8", patch: `[{"op":"add","path":"/kw/x","value":1}]`,
			want: `{"args":[],"kw":{"x":1}}`,
		},
		{
			name: "JSONPatchReplaceArgs", trigger: TaskExecutorArgsReplace, doc: `{"args":[1],"kw":{}}`, ct: ContentTypeJSONPatch,
			patch: `[{"op":"replace","path":"/args/0","value":2},{"op":"add","path":"/args/-","value":3}]`,
			want:  `{"args":[2,3],"kw":{}}`,
		},
		{
			name: "JSONPatchRemove", trigger: TaskExecutorArgsReplace, doc: `{"args":[],"kw":{"a":1}}`, ct: ContentTypeJSONPatch,
			patch: `[{"op":"remove","path":"/kw/a"}]`, want: argsDoc,
		},
		{
			name: "JSONPatchMoveWithinAllowed", trigger: TaskExecutorArgsReplace, doc: `{"args":[],"kw":{"a":1}}`,
			ct: ContentTypeJSONPatch, patch: `[{"op":"move","from":"/kw/a","path":"/kw/b"}]`, want: `{"args":[],"kw":{"b":1}}`,
		},
		{
			name: "JSONPatchCopyFromReadOnly", trigger: TaskExecutorArgsReplace, doc: `{"args":[],"kw":{},"task_name":"n"}`,
			ct: ContentTypeJSONPatch, patch: `[{"op":"copy","from":"/task_name","path":"/kw/name"}]`,
			want: `{"args":[],"kw":{"name":"n"},"task_name":"n"}`,
		},
		{
			name: "JSONPatchTestReadOnly", trigger: TaskExecutorArgsReplace, doc: `{"args":[],"kw":{},"task_name":"n"}`,
			ct: ContentTypeJSONPatch, patch: `[{"op":"test","path":"/task_name","value":"n"},{"op":"add","path":"/kw/x","value":1}]`,
			want: `{"args":[],"kw":{"x":1},"task_name":"n"}`,
		},
		{
			name: "JSONPatchTestNull", trigger: TaskExecutorArgsReplace, doc: `{"args":[],"kw":{"a":null}}`,
			ct: ContentTypeJSONPatch, patch: `[{"op":"test","path":"/kw/a","value":null},{"op":"remove","path":"/kw/a"}]`,
			want: argsDoc,
		},
		{
			name: "JSONPatchDuplicatePathKeyLastWins", trigger: TaskExecutorArgsReplace, doc: `{"args":[],"kw":{},"task_name":"n"}`,
			ct: ContentTypeJSONPatch, patch: `[{"op":"replace","path":"/task_name","path":"/kw","value":{"a":1}}]`,
			want: `{"args":[],"kw":{"a":1},"task_name":"n"}`,
		},
		{
			name: "JSONPatchEmptyArray", trigger: TaskExecutorArgsReplace, doc: argsDoc, ct: ContentTypeJSONPatch,
			patch: `[]`, want: argsDoc,
		},
		{
			name: "NestedMerge", trigger: BrokerAddBefore, doc: `{"model":{"id":"t1","priority":0,"kw":{}}}`,
			ct: ContentTypeMergePatch, patch: `{"model":{"priority":5,"kw":{"a":1}}}`,
			want: `{"model":{"id":"t1","priority":5,"kw":{"a":1}}}`,
		},
		{
			name: "NestedJSONPatch", trigger: BrokerAddBefore, doc: `{"model":{"id":"t1","priority":0}}`,
			ct: ContentTypeJSONPatch, patch: `[{"op":"replace","path":"/model/priority","value":9}]`,
			want: `{"model":{"id":"t1","priority":9}}`,
		},
		{
			name: "NestedMergeCreatesAllowedLeaf", trigger: BrokerAddBefore, doc: `{"model":{"id":"t1"}}`,
			ct: ContentTypeMergePatch, patch: `{"model":{"tags":["a"]}}`,
			want: `{"model":{"id":"t1","tags":["a"]}}`,
		},
		{
			name: "DeepPath", trigger: StorageUpdate, doc: `{"kw":{"name":"x","mapping":{"status":"process"}}}`,
			ct: ContentTypeMergePatch, patch: `{"kw":{"mapping":{"extra":{"a":1}}}}`,
			want: `{"kw":{"name":"x","mapping":{"status":"process","extra":{"a":1}}}}`,
		},
		{
			name: "RetryDelay", trigger: WorkerTaskErrorRetry, doc: `{"model":{"status":"retry","delay_ms":0,"id":"t"}}`,
			ct: ContentTypeJSONPatch, patch: `[{"op":"replace","path":"/model/delay_ms","value":250}]`,
			want: `{"model":{"status":"retry","delay_ms":250,"id":"t"}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := []byte(tc.doc)
			orig := bytes.Clone(doc)
			out, err := ApplyPatch(mustLookup(t, tc.trigger), doc, tc.ct, []byte(tc.patch))
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(out))
			require.Equal(t, orig, doc, "the input document must not be modified")
		})
	}
}

func TestApplyPatchEmpty(t *testing.T) {
	t.Parallel()

	tr := mustLookup(t, TaskExecutorArgsReplace)
	for name, p := range map[string][]byte{"Nil": nil, "Empty": {}, "Blank": []byte(" \n\t\r")} {
		for _, ct := range []string{ContentTypeMergePatch, ContentTypeJSONPatch, "", "text/plain"} {
			t.Run(name+"/"+ct, func(t *testing.T) {
				t.Parallel()
				doc := []byte(argsDoc)
				out, err := ApplyPatch(tr, doc, ct, p)
				require.NoError(t, err)
				require.Equal(t, []byte(argsDoc), out) //nolint:testifylint // encoded-compare: the document comes back byte for byte, not as equal JSON
			})
		}
	}
}

// A patch nested deeper than MaxPatchDepth is refused before the library
// sees it (its merge costs the square of the depth); one at the limit
// applies. Brackets inside strings are not nesting.
func TestApplyPatchDepth(t *testing.T) {
	t.Parallel()
	tr := mustLookup(t, TaskExecutorArgsReplace)
	nested := func(depth int) string { // kw.x holds depth-1 nested arrays
		return `{"kw":{"x":` + strings.Repeat("[", depth-2) + strings.Repeat("]", depth-2) + `}}`
	}
	for _, tc := range []struct {
		ct, patch string
		ok        bool
	}{
		{ContentTypeMergePatch, nested(MaxPatchDepth), true},
		{ContentTypeMergePatch, nested(MaxPatchDepth + 1), false},
		{ContentTypeMergePatch, nested(10_000), false},
		{ContentTypeJSONPatch, `[{"op":"add","path":"/kw/x","value":` + strings.Repeat("[", MaxPatchDepth) + strings.Repeat("]", MaxPatchDepth) + `}]`, false},
		{ContentTypeMergePatch, `{"kw":{"x":"` + strings.Repeat("[{", 5000) + `\"]"}}`, true},
	} {
		out, err := ApplyPatch(tr, []byte(argsDoc), tc.ct, []byte(tc.patch))
		if tc.ok {
			require.NoError(t, err, "depth %d", jsonDepth([]byte(tc.patch)))
			require.True(t, json.Valid(out))
			continue
		}
		require.ErrorIs(t, err, ErrBadPatch)
		require.Contains(t, err.Error(), fmt.Sprintf("at most %d", MaxPatchDepth))
	}
	require.Equal(t, 0, jsonDepth([]byte(`"[[[\"{{"`)))
	require.Equal(t, 3, jsonDepth([]byte(`{"a":[{"b":"]]]"}],"c":[]}`)))
}

func TestApplyPatchErrors(t *testing.T) {
	t.Parallel()

	custom := &Trigger{Name: "custom", Returnable: true, Paths: []string{""}}
	lookup := func(name string) *Trigger {
		tr := mustLookup(t, name)
		return &tr
	}
	bigDoc := `{"args":[],"kw":{"big":"` + strings.Repeat("a", MaxDataSize-MaxPatchSize/2) + `"}}`

	tests := []struct {
		name     string
		trigger  *Trigger // nil: task_executor_args_replace
		doc      string
		ct       string
		patch    string
		wantErr  error
		wantPath string
	}{
		// Paths the contract does not allow.
		{
			name: "MergeTaskName", ct: ContentTypeMergePatch, patch: `{"task_name":"other"}`,
			wantErr: ErrPathNotAllowed, wantPath: "/task_name",
		},
		{
			name: "MergeAllowedAndNot", ct: ContentTypeMergePatch, patch: `{"kw":{"x":1},"status":"error"}`,
			wantErr: ErrPathNotAllowed, wantPath: "/status",
		},
		{
			name: "MergeEscapedKey", ct: ContentTypeMergePatch, patch: `{"kw/x":1}`,
			wantErr: ErrPathNotAllowed, wantPath: "/kw~1x",
		},
		{
			name: "MergeKwxKey", ct: ContentTypeMergePatch, patch: `{"kwx":1}`,
			wantErr: ErrPathNotAllowed, wantPath: "/kwx",
		},
		{
			name: "MergeNullOnDisallowed", ct: ContentTypeMergePatch, patch: `{"task_name":null}`,
			doc: `{"args":[],"kw":{},"task_name":"n"}`, wantErr: ErrPathNotAllowed, wantPath: "/task_name",
		},
		{
			name: "MergeCreatesDisallowedObject", ct: ContentTypeMergePatch, patch: `{"other":{}}`,
			wantErr: ErrPathNotAllowed, wantPath: "/other",
		},
		{
			name: "MergeCreatesDisallowedNested", ct: ContentTypeMergePatch, patch: `{"other":{"x":1}}`,
			wantErr: ErrPathNotAllowed, wantPath: "/other",
		},
		{
			name: "MergeObjectOverNull", trigger: lookup(BrokerAddBefore), doc: `{"model":null}`,
			ct: ContentTypeMergePatch, patch: `{"model":{"priority":1}}`, wantErr: ErrPathNotAllowed, wantPath: "/model",
		},
		{
			name: "MergeObjectOverScalar", trigger: lookup(BrokerAddBefore), doc: `{"model":5}`,
			ct: ContentTypeMergePatch, patch: `{"model":{"priority":1}}`, wantErr: ErrPathNotAllowed, wantPath: "/model",
		},
		{
			name: "MergeNestedDisallowed", trigger: lookup(BrokerAddBefore), doc: `{"model":{"id":"t"}}`,
			ct: ContentTypeMergePatch, patch: `{"model":{"id":"u"}}`, wantErr: ErrPathNotAllowed, wantPath: "/model/id",
		},
		{
			name: "MergeReplaceParent", trigger: lookup(BrokerAddBefore), doc: `{"model":{"id":"t"}}`,
			ct: ContentTypeMergePatch, patch: `{"model":[]}`, wantErr: ErrPathNotAllowed, wantPath: "/model",
		},
		{
			name: "JSONPatchReplaceRoot", ct: ContentTypeJSONPatch, patch: `[{"op":"replace","path":"","value":{}}]`,
			wantErr: ErrPathNotAllowed, wantPath: "",
		},
		{
			name: "JSONPatchReplaceSlash", ct: ContentTypeJSONPatch, patch: `[{"op":"replace","path":"/","value":{}}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/",
		},
		{
			name: "JSONPatchReplaceStatus", ct: ContentTypeJSONPatch, patch: `[{"op":"replace","path":"/status","value":"x"}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/status",
		},
		{
			name: "JSONPatchAddKwx", ct: ContentTypeJSONPatch, patch: `[{"op":"add","path":"/kwx","value":1}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/kwx",
		},
		{
			name: "JSONPatchEscapedPointer", ct: ContentTypeJSONPatch, patch: `[{"op":"add","path":"/kw~1x","value":1}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/kw~1x",
		},
		{
			name: "JSONPatchMoveFromDisallowed", doc: `{"args":[],"kw":{},"task_name":"n"}`, ct: ContentTypeJSONPatch,
			patch: `[{"op":"move","from":"/task_name","path":"/kw/x"}]`, wantErr: ErrPathNotAllowed, wantPath: "/task_name",
		},
		{
			name: "JSONPatchCopyToDisallowed", ct: ContentTypeJSONPatch, patch: `[{"op":"copy","from":"/kw","path":"/extra"}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/extra",
		},
		{
			name: "JSONPatchLaterOpDisallowed", ct: ContentTypeJSONPatch,
			patch:   `[{"op":"add","path":"/kw/x","value":1},{"op":"remove","path":"/args"},{"op":"add","path":"/x","value":1}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/x",
		},
		{
			name: "JSONPatchUpperCasePathKey", ct: ContentTypeJSONPatch, doc: `{"args":[],"kw":{},"task_name":"n"}`,
			patch:   `[{"op":"replace","path":"/task_name","Path":"/kw","value":"evil"}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/task_name",
		},
		{
			name: "JSONPatchUpperCaseOpKey", ct: ContentTypeJSONPatch, doc: `{"args":[],"kw":{},"task_name":"n"}`,
			patch:   `[{"op":"replace","OP":"test","path":"/task_name","value":"evil"}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/task_name",
		},
		{
			name: "JSONPatchUpperCaseFromKey", ct: ContentTypeJSONPatch, doc: `{"args":[],"kw":{},"task_name":"n"}`,
			patch:   `[{"op":"move","from":"/task_name","FROM":"/kw/a","path":"/kw/b"}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/task_name",
		},
		{
			name: "JSONPatchDuplicatePathKey", ct: ContentTypeJSONPatch, doc: `{"args":[],"kw":{},"task_name":"n"}`,
			patch:   `[{"op":"replace","path":"/kw","path":"/task_name","value":"evil"}]`,
			wantErr: ErrPathNotAllowed, wantPath: "/task_name",
		},
		{
			name: "ProcessTriggerNotReturnable", trigger: lookup(WorkerStart), ct: ContentTypeMergePatch,
			patch: `{"kw":{}}`, wantErr: ErrNotReturnable,
		},
		{
			name: "OneWayNotReturnable", trigger: lookup(TaskExecutorBeforeExecute), ct: ContentTypeMergePatch,
			patch: `{"kw":{}}`, wantErr: ErrNotReturnable,
		},
		{
			name: "OneWayEmptyPatch", trigger: lookup(BrokerAddAfter), ct: ContentTypeMergePatch,
			patch: ``, wantErr: ErrNotReturnable,
		},
		{name: "ZeroTrigger", trigger: &Trigger{}, ct: ContentTypeMergePatch, patch: `{}`, wantErr: ErrNotReturnable},

		// Patches that do not parse or apply.
		{name: "UnknownContentType", ct: ContentTypeJSON, patch: `{"kw":{}}`, wantErr: ErrBadPatch},
		{name: "NoContentType", ct: "", patch: `{"kw":{}}`, wantErr: ErrBadPatch},
		{name: "MergeMalformed", ct: ContentTypeMergePatch, patch: `{"kw":`, wantErr: ErrBadPatch},
		{name: "JSONPatchMalformed", ct: ContentTypeJSONPatch, patch: `[{"op":"add",`, wantErr: ErrBadPatch},
		{name: "JSONPatchNotArray", ct: ContentTypeJSONPatch, patch: `{"op":"add","path":"/kw/x","value":1}`, wantErr: ErrBadPatch},
		{name: "JSONPatchRemoveMissing", ct: ContentTypeJSONPatch, patch: `[{"op":"remove","path":"/kw/missing"}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchReplaceMissing", ct: ContentTypeJSONPatch, patch: `[{"op":"replace","path":"/kw/missing","value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchAddUnderMissingParent", ct: ContentTypeJSONPatch, patch: `[{"op":"add","path":"/kw/a/b","value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchTestFails", ct: ContentTypeJSONPatch, patch: `[{"op":"test","path":"/kw","value":1},{"op":"add","path":"/kw/x","value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchNoPath", ct: ContentTypeJSONPatch, patch: `[{"op":"add","value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchNullPath", ct: ContentTypeJSONPatch, patch: `[{"op":"add","path":null,"value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchNumericPath", ct: ContentTypeJSONPatch, patch: `[{"op":"add","path":1,"value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchNumericOp", ct: ContentTypeJSONPatch, patch: `[{"op":1,"path":"/kw/x","value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchUnknownOp", ct: ContentTypeJSONPatch, patch: `[{"op":"upsert","path":"/kw/x","value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchNoOp", ct: ContentTypeJSONPatch, patch: `[{"path":"/kw/x","value":1}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchTestRootNoValue", ct: ContentTypeJSONPatch, patch: `[{"op":"test","path":""}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchTestNoValue", ct: ContentTypeJSONPatch, patch: `[{"op":"test","path":"/kw"}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchTestRootNull", ct: ContentTypeJSONPatch, patch: `[{"op":"test","path":"","value":null}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchMoveNoFrom", ct: ContentTypeJSONPatch, patch: `[{"op":"move","path":"/kw/x"}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchCopyNoFrom", ct: ContentTypeJSONPatch, patch: `[{"op":"copy","path":"/kw/x"}]`, wantErr: ErrBadPatch},
		{name: "JSONPatchOpNotObject", ct: ContentTypeJSONPatch, patch: `[1]`, wantErr: ErrBadPatch},
		{name: "MergeArray", ct: ContentTypeMergePatch, patch: `[{"kw":{}}]`, wantErr: ErrBadPatch},
		{name: "MergeString", ct: ContentTypeMergePatch, patch: `"kw"`, wantErr: ErrBadPatch},
		{name: "MergeNumber", ct: ContentTypeMergePatch, patch: `5`, wantErr: ErrBadPatch},
		{name: "MergeNull", ct: ContentTypeMergePatch, patch: `null`, wantErr: ErrBadPatch},
		{name: "MergeTrailingGarbage", ct: ContentTypeMergePatch, patch: `{"kw":{}} x`, wantErr: ErrBadPatch},
		{name: "MergeDocNotObject", doc: `[1,2]`, ct: ContentTypeMergePatch, patch: `{"kw":{}}`, wantErr: ErrBadPatch},
		{name: "MergeDocMalformed", doc: `{"args":`, ct: ContentTypeMergePatch, patch: `{"kw":{}}`, wantErr: ErrBadPatch},
		{name: "JSONPatchDocMalformed", doc: `{"args":`, ct: ContentTypeJSONPatch, patch: `[{"op":"add","path":"/kw","value":1}]`, wantErr: ErrBadPatch},
		{
			name: "OversizedPatch", ct: ContentTypeMergePatch,
			patch: `{"kw":{"x":"` + strings.Repeat("a", MaxPatchSize) + `"}}`, wantErr: ErrBadPatch,
		},
		{
			name: "OversizedResult", doc: bigDoc, ct: ContentTypeMergePatch,
			patch: `{"args":["` + strings.Repeat("b", MaxPatchSize-100) + `"]}`, wantErr: ErrBadPatch,
		},
		{
			name: "CopyAmplification", doc: `{"args":[],"kw":{"x":"` + strings.Repeat("a", 1024) + `"}}`, ct: ContentTypeJSONPatch,
			patch: copyBomb(64), wantErr: ErrBadPatch,
		},
		{
			name: "ResultNotObject", trigger: custom, ct: ContentTypeJSONPatch,
			patch: `[{"op":"replace","path":"","value":[1]}]`, wantErr: ErrBadPatch,
		},
		{
			name: "ResultNull", trigger: custom, ct: ContentTypeJSONPatch,
			patch: `[{"op":"replace","path":"","value":null}]`, wantErr: ErrBadPatch,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := mustLookup(t, TaskExecutorArgsReplace)
			if tc.trigger != nil {
				tr = *tc.trigger
			}
			d := tc.doc
			if d == "" {
				d = argsDoc
			}
			doc := []byte(d)
			orig := bytes.Clone(doc)

			out, err := ApplyPatch(tr, doc, tc.ct, []byte(tc.patch))
			require.Error(t, err)
			require.Nil(t, out)
			require.ErrorIs(t, err, tc.wantErr)
			require.Equal(t, orig, doc, "the input document must not be modified")

			var pe *PatchError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, tr.Name, pe.Trigger)
			require.Equal(t, tc.wantPath, pe.Path)
			require.True(t, strings.HasPrefix(err.Error(), tr.Name+": "), err.Error())
			require.Contains(t, err.Error(), tc.wantErr.Error())
			if tc.wantPath != "" {
				require.Contains(t, err.Error(), fmt.Sprintf("%q", tc.wantPath))
			}
			for _, other := range []error{ErrPathNotAllowed, ErrBadPatch, ErrNotReturnable} {
				if !errors.Is(other, tc.wantErr) {
					require.NotErrorIs(t, err, other)
				}
			}
		})
	}
}

// copyBomb is a JSON Patch of n operations each of which doubles /kw.
func copyBomb(n int) string {
	ops := make([]string, n)
	for i := range ops {
		ops[i] = fmt.Sprintf(`{"op":"copy","from":"/kw","path":"/kw/c%d"}`, i)
	}
	return "[" + strings.Join(ops, ",") + "]"
}

func TestPatchError(t *testing.T) {
	t.Parallel()

	t.Run("Message", func(t *testing.T) {
		t.Parallel()
		err := &PatchError{Trigger: "storage_add", Path: "/a b", Err: ErrPathNotAllowed, Detail: "why"}
		require.Equal(t, `storage_add: patch touches a path the trigger does not allow: "/a b": why`, err.Error())
		require.ErrorIs(t, err, ErrPathNotAllowed)
	})

	t.Run("Wrapped", func(t *testing.T) {
		t.Parallel()
		_, err := ApplyPatch(mustLookup(t, TaskExecutorArgsReplace), []byte(argsDoc), ContentTypeMergePatch, []byte(`{"x":1}`))
		wrapped := fmt.Errorf("plugin p: %w", err)
		var pe *PatchError
		require.ErrorAs(t, wrapped, &pe)
		require.Equal(t, "/x", pe.Path)
		require.ErrorIs(t, wrapped, ErrPathNotAllowed)
	})
}

func TestApplyPatchEveryReturnableTrigger(t *testing.T) {
	t.Parallel()

	// For every returnable trigger, setting each allowed path works with
	// both patch formats, and setting a sibling key beside the allowed
	// paths is rejected.
	for _, tr := range Catalog() {
		if !tr.Returnable {
			continue
		}
		t.Run(tr.Name, func(t *testing.T) {
			t.Parallel()
			for _, p := range tr.Paths {
				doc := docWithPath(t, p)
				// A new value of the path's type.
				val := sampleValues[tr.PathType(p)]
				var want any
				require.NoError(t, json.Unmarshal([]byte(val), &want), p)

				jp := fmt.Sprintf(`[{"op":"replace","path":%q,"value":%s}]`, p, val)
				out, err := ApplyPatch(tr, doc, ContentTypeJSONPatch, []byte(jp))
				require.NoError(t, err, p)
				require.Equal(t, want, pointerGet(t, out, p))

				mp := mergePatchFor(p, val)
				out, err = ApplyPatch(tr, doc, ContentTypeMergePatch, []byte(mp))
				require.NoError(t, err, mp)
				require.Equal(t, want, pointerGet(t, out, p))

				sibling := p[:strings.LastIndexByte(p, '/')] + "/zz_not_allowed"
				jp = fmt.Sprintf(`[{"op":"add","path":%q,"value":1}]`, sibling)
				_, err = ApplyPatch(tr, doc, ContentTypeJSONPatch, []byte(jp))
				require.ErrorIs(t, err, ErrPathNotAllowed, sibling)

				mp = mergePatchFor(sibling, `1`)
				_, err = ApplyPatch(tr, doc, ContentTypeMergePatch, []byte(mp))
				require.ErrorIs(t, err, ErrPathNotAllowed, mp)
			}
		})
	}
}

// sampleValues holds a value of each type of allowed path.
var sampleValues = map[JSONType]string{
	JSONAny: `"new"`, JSONObject: `{"new":1}`, JSONArray: `["new",2]`, JSONStringArray: `["new"]`,
	JSONString: `"new"`, JSONInteger: `-7`, JSONNonNegative: `7`, JSONStatus: `"error"`,
}

// docWithPath builds {"a":{"b":"old"}} for the pointer /a/b.
func docWithPath(t *testing.T, p string) []byte {
	t.Helper()
	toks := strings.Split(p, "/")[1:]
	var v any = "old"
	for _, tok := range slices.Backward(toks) {
		v = map[string]any{tok: v}
	}
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func mergePatchFor(p, value string) string {
	toks := strings.Split(p, "/")[1:]
	s := value
	for _, tok := range slices.Backward(toks) {
		s = fmt.Sprintf(`{%q:%s}`, tok, s)
	}
	return s
}

func pointerGet(t *testing.T, doc []byte, p string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(doc, &v))
	for _, tok := range strings.Split(p, "/")[1:] {
		m, ok := v.(map[string]any)
		require.True(t, ok, "at %q in %s", tok, doc)
		v = m[tok]
	}
	return v
}
