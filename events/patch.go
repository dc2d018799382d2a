package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// MaxPatchSize bounds a patch body.
const MaxPatchSize = 256 * 1024

// MaxPatchDepth bounds how deeply a patch's arrays and objects nest. The
// merge-patch library's work grows with the square of the depth: a 20 KB
// patch nested 10,000 deep cost 2.7 s of CPU per application, in the
// executor and again in every rebuild of the projection.
const MaxPatchDepth = 128

// jsonDepth is the deepest nesting of arrays and objects in b, which is
// assumed to be JSON (brackets inside strings do not count).
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// Patch errors; a *PatchError wraps one of them.
var (
	// ErrPathNotAllowed: the patch touches a path outside the trigger's contract.
	ErrPathNotAllowed = errors.New("patch touches a path the trigger does not allow")
	// ErrBadPatch: the patch does not parse, or does not apply to the payload.
	ErrBadPatch = errors.New("patch does not apply")
	// ErrNotReturnable: the trigger takes no patches.
	ErrNotReturnable = errors.New("trigger is not returnable")
	// ErrWrongType: the patch leaves a value of another type than the
	// trigger's contract declares at an allowed path (Trigger.PathType).
	ErrWrongType = errors.New("patch leaves a value of the wrong type")
)

// PatchError says why a patch was rejected.
type PatchError struct {
	Trigger string
	Path    string // the offending JSON Pointer, if one is to blame
	Err     error  // ErrPathNotAllowed, ErrBadPatch, ErrWrongType or ErrNotReturnable
	Detail  string
}

func (e *PatchError) Error() string {
	var b strings.Builder
	b.WriteString(e.Trigger)
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Path != "" {
		b.WriteString(": ")
		b.WriteString(strconv.Quote(e.Path))
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

func (e *PatchError) Unwrap() error { return e.Err }

type op struct {
	Op   string
	Path *string
	From *string
}

// decodeOp reads the members of a JSON Patch operation that say what it
// touches. Member names are matched exactly, as the patch library matches
// them: encoding/json's case-insensitive match into a struct would check
// {"path":"/task_name","Path":"/kw"} as /kw while the library applies it to
// /task_name.
func decodeOp(m map[string]json.RawMessage) (op, error) {
	var o op
	for _, f := range []struct {
		name string
		dst  **string
	}{{"path", &o.Path}, {"from", &o.From}} {
		v, ok := m[f.name]
		if !ok || string(v) == "null" {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return o, fmt.Errorf("%s is not a string", f.name)
		}
		*f.dst = &s
	}
	if v, ok := m["op"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &o.Op); err != nil {
			return o, errors.New("op is not a string")
		}
	}
	return o, nil
}

// ApplyPatch applies a JSON Patch (contentType ContentTypeJSONPatch) or a
// merge patch (ContentTypeMergePatch) to doc, a JSON object, under the
// contract of trigger t. It returns the patched document, or a *PatchError
// and leaves doc untouched. An empty patch returns doc unchanged.
func ApplyPatch(t Trigger, doc []byte, contentType string, patch []byte) (out []byte, err error) {
	perr := func(err error, path, detail string) error {
		return &PatchError{Trigger: t.Name, Path: path, Err: err, Detail: detail}
	}
	// The patch comes from a plugin; a patch the library cannot handle
	// must not take the executor down (json-patch v5.9.11 panics on a
	// test of the root without a value).
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, perr(ErrBadPatch, "", fmt.Sprintf("patch could not be applied: %v", r))
		}
	}()
	if !t.Returnable {
		return nil, perr(ErrNotReturnable, "", "")
	}
	if len(bytes.TrimSpace(patch)) == 0 {
		return doc, nil
	}
	if len(patch) > MaxPatchSize {
		return nil, perr(ErrBadPatch, "", fmt.Sprintf("%d bytes, at most %d", len(patch), MaxPatchSize))
	}
	if d := jsonDepth(patch); d > MaxPatchDepth {
		return nil, perr(ErrBadPatch, "", fmt.Sprintf("nested %d deep, at most %d", d, MaxPatchDepth))
	}
	switch mediaType(contentType) {
	case ContentTypeJSONPatch:
		var ops []map[string]json.RawMessage
		if err := json.Unmarshal(patch, &ops); err != nil {
			return nil, perr(ErrBadPatch, "", "not a JSON Patch array: "+err.Error())
		}
		for i, m := range ops {
			o, err := decodeOp(m)
			if err != nil {
				return nil, perr(ErrBadPatch, "", fmt.Sprintf("operation %d: %v", i, err))
			}
			if o.Path == nil {
				return nil, perr(ErrBadPatch, "", fmt.Sprintf("operation %d has no path", i))
			}
			switch o.Op {
			case "test":
				if _, ok := m["value"]; !ok {
					return nil, perr(ErrBadPatch, "", fmt.Sprintf("operation %d (test) has no value", i))
				}
				continue // reads only
			case "copy":
				if o.From == nil {
					return nil, perr(ErrBadPatch, "", fmt.Sprintf("operation %d (copy) has no from", i))
				}
			case "move":
				if o.From == nil {
					return nil, perr(ErrBadPatch, "", fmt.Sprintf("operation %d (move) has no from", i))
				}
				if !t.Allows(*o.From) {
					return nil, perr(ErrPathNotAllowed, *o.From, "")
				}
			case "add", "remove", "replace":
			default:
				return nil, perr(ErrBadPatch, "", fmt.Sprintf("operation %d: unknown op %q", i, o.Op))
			}
			if !t.Allows(*o.Path) {
				return nil, perr(ErrPathNotAllowed, *o.Path, "")
			}
		}
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, perr(ErrBadPatch, "", err.Error())
		}
		opts := jsonpatch.NewApplyOptions()
		opts.EnsurePathExistsOnAdd = false
		// copy is the one operation that can grow the document faster than
		// the patch: bound it before it is built, not after.
		opts.AccumulatedCopySizeLimit = MaxDataSize
		out, err = p.ApplyWithOptions(doc, opts)
		if err != nil {
			return nil, perr(ErrBadPatch, "", err.Error())
		}
	case ContentTypeMergePatch:
		var pm map[string]json.RawMessage
		if err := json.Unmarshal(patch, &pm); err != nil || pm == nil {
			return nil, perr(ErrBadPatch, "", "a merge patch must be a JSON object")
		}
		var dm map[string]json.RawMessage
		if err := json.Unmarshal(doc, &dm); err != nil {
			return nil, perr(ErrBadPatch, "", "payload is not a JSON object")
		}
		if path, ok := mergeTouches(t, "", dm, pm); !ok {
			return nil, perr(ErrPathNotAllowed, path, "")
		}
		var err error
		out, err = jsonpatch.MergePatch(doc, patch)
		if err != nil {
			return nil, perr(ErrBadPatch, "", err.Error())
		}
	default:
		return nil, perr(ErrBadPatch, "", fmt.Sprintf("content type %q, want %s or %s", contentType, ContentTypeJSONPatch, ContentTypeMergePatch))
	}
	if len(out) > MaxDataSize {
		return nil, perr(ErrBadPatch, "", fmt.Sprintf("patched payload is %d bytes, at most %d", len(out), MaxDataSize))
	}
	if !json.Valid(out) || len(out) == 0 || out[0] != '{' {
		return nil, perr(ErrBadPatch, "", "patched payload is not a JSON object")
	}
	if path, detail := checkTypes(t, doc, out); path != "" {
		return nil, perr(ErrWrongType, path, detail)
	}
	return out, nil
}

// jsonTypeCheck tells whether a JSON value is of a type.
var jsonTypeCheck = map[JSONType]func(v json.RawMessage) bool{
	JSONAny:    func(json.RawMessage) bool { return true },
	JSONObject: func(v json.RawMessage) bool { return v[0] == '{' || string(v) == "null" },
	JSONArray:  func(v json.RawMessage) bool { return v[0] == '[' || string(v) == "null" },
	JSONStringArray: func(v json.RawMessage) bool {
		var s []string
		return json.Unmarshal(v, &s) == nil
	},
	JSONString: func(v json.RawMessage) bool { return v[0] == '"' },
	JSONInteger: func(v json.RawMessage) bool {
		_, err := strconv.ParseInt(string(v), 10, 64)
		return err == nil
	},
	JSONNonNegative: func(v json.RawMessage) bool {
		n, err := strconv.ParseInt(string(v), 10, 64)
		return err == nil && n >= 0
	},
	JSONStatus: func(v json.RawMessage) bool {
		var s string
		return json.Unmarshal(v, &s) == nil && ValidStatus(s)
	},
}

// jsonKind names the type of a JSON value for a rejection's reason.
func jsonKind(v json.RawMessage) string {
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "the number " + string(v)
}

// checkTypes finds an allowed path at which out, the patched payload, holds
// a value of another type than the contract declares, and says why; "" when
// there is none. A value the payload already had (doc) is not the patch's
// doing and passes.
func checkTypes(t Trigger, doc, out []byte) (path, detail string) {
	var top map[string]json.RawMessage
	if json.Unmarshal(out, &top) != nil {
		return "", "" // ApplyPatch checked it is an object
	}
	for _, p := range t.Paths {
		typ := t.PathType(p)
		check := jsonTypeCheck[typ]
		if typ == JSONAny || check == nil {
			continue
		}
		v, ok := valueAt(top, p)
		if !ok || check(v) {
			continue
		}
		var dtop map[string]json.RawMessage
		if json.Unmarshal(doc, &dtop) == nil {
			if dv, ok := valueAt(dtop, p); ok && sameJSON(dv, v) {
				continue
			}
		}
		name := p[strings.LastIndexByte(p, '/')+1:]
		return p, fmt.Sprintf("%s must be %s, not %s", name, typeArticle(typ), jsonKind(v))
	}
	return "", ""
}

// typeArticle names a type in a sentence: "an object (or null)".
func typeArticle(t JSONType) string {
	s := "a " + string(t)
	if strings.ContainsRune("aeiou", rune(t[0])) {
		s = "an " + string(t)
	}
	switch t {
	case JSONObject, JSONArray, JSONStringArray:
		return s + " (or null)"
	case JSONStatus:
		return s + " (" + strings.Join(statuses, ", ") + ")"
	default:
		return s
	}
}

// valueAt returns the value at JSON Pointer p (object members only, as
// allowed paths are) below the object top.
func valueAt(top map[string]json.RawMessage, p string) (json.RawMessage, bool) {
	toks := strings.Split(p[1:], "/")
	cur := top
	for i, tok := range toks {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		v, ok := cur[tok]
		if !ok {
			return nil, false
		}
		v = bytes.TrimSpace(v)
		if i == len(toks)-1 {
			return v, len(v) > 0
		}
		cur = nil
		if json.Unmarshal(v, &cur) != nil || cur == nil {
			return nil, false
		}
	}
	return nil, false
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// mergeTouches walks a merge patch and checks every path it would change.
// A nested object in the patch merges into an object in the document, so it
// touches only its own keys; anything else replaces the value at its path.
func mergeTouches(t Trigger, prefix string, doc, patch map[string]json.RawMessage) (string, bool) {
	for k, v := range patch {
		path := prefix + "/" + escapePointer(k)
		if t.Allows(path) {
			continue
		}
		var sub map[string]json.RawMessage
		if json.Unmarshal(v, &sub) != nil || sub == nil {
			return path, false
		}
		// Merging an object into an absent key, null or a non-object
		// creates or replaces the value at path itself.
		var dsub map[string]json.RawMessage
		cur, ok := doc[k]
		if !ok || json.Unmarshal(cur, &dsub) != nil || dsub == nil {
			return path, false
		}
		if p, ok := mergeTouches(t, path, dsub, sub); !ok {
			return p, false
		}
	}
	return "", true
}

func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}
