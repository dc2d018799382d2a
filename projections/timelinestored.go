package projections

import (
	"strconv"
	"strings"
)

// appendStoredEntry appends fact fr's entry as (*Entry).appendJSON writes
// it once decode, factDiffs and call have built it, but from the spans of
// the stored JSON, without decoding the calls and the diffs into strings
// and slices: strings that need no escaping, raw values already in
// json.Marshal's form and each call's stored changes are copied. Decoding
// them was a third of the task page's time, above the SQLite query it runs
// (BenchmarkConsole; docs/ARCHITECTURE.md, "The operator console").
//
// It returns false, having appended nothing, for a fact it cannot be sure
// to write exactly so: data that is not an object, a key it would have to
// unescape, a member twice, a value that is not of its member's type, a
// shadow call when shadowOf is set (factDiffs may diff it again), diffs
// not as encodeDiffs writes them. The caller then decodes the fact.
// TestAppendStoredEntry holds it to that path on random facts.
func (tr *timelineReader) appendStoredEntry(dst []byte, fr *factRow, shadowOf func(string) string) ([]byte, bool) {
	start := len(dst)
	fail := func() ([]byte, bool) { return dst[:start], false }
	data := fr.data
	if i := skipWS(data, 0); i >= len(data) || data[i] != '{' {
		return fail()
	}
	var mbuf [8]member
	var input, output, calls, failed []byte
	for _, m := range splitValid(data, mbuf[:0]) {
		k, ok := plainKey(data, m)
		if !ok {
			return fail()
		}
		var p *[]byte
		switch {
		case strings.EqualFold(k, "input"):
			p = &input
		case strings.EqualFold(k, "output"):
			p = &output
		case strings.EqualFold(k, "calls"):
			p = &calls
		case strings.EqualFold(k, "failed"):
			p = &failed
		default:
			continue
		}
		if *p != nil {
			return fail()
		}
		*p = data[m.val:m.valEnd]
	}
	// The calls, and their stored changes, whose number must be theirs.
	var ebuf, dbuf [8]member
	var elems, diffs []member
	if calls != nil {
		switch calls[0] {
		case '[':
			elems = splitValid(calls, ebuf[:0])
		case 'n':
		default:
			return fail()
		}
	}
	if len(fr.stored) > 0 {
		if i := skipWS(fr.stored, 0); i >= len(fr.stored) || fr.stored[i] != '[' {
			return fail()
		}
		if diffs = splitValid(fr.stored, dbuf[:0]); len(diffs) != len(elems) {
			return fail()
		}
	}

	e := &fr.e
	dst = e.appendHead(dst)
	dst = appendRawField(dst, `,"input":`, input)
	dst = appendRawField(dst, `,"output":`, output)
	if failed != nil {
		var ok bool
		if dst, ok = appendStringValue(dst, `,"failed":`, failed, true); !ok {
			return fail()
		}
	}
	dst = appendStringField(dst, `,"replay":`, e.Replay)
	if len(elems) == 0 {
		return append(dst, '}'), true
	}
	dst = append(dst, `,"calls":[`...)
	for j, el := range elems {
		if j > 0 {
			dst = append(dst, ',')
		}
		var changes []byte
		if diffs != nil {
			changes = fr.stored[diffs[j].val:diffs[j].valEnd]
		}
		var ok bool
		if dst, ok = tr.appendStoredCall(dst, e, j, calls[el.val:el.valEnd], changes, shadowOf); !ok {
			return fail()
		}
	}
	return append(dst, "]}"...), true
}

// appendStoredCall appends call j of entry e, whose stored JSON is doc and
// stored changes changes (nil when the fact has none), for
// appendStoredEntry.
func (tr *timelineReader) appendStoredCall(dst []byte, e *Entry, j int, doc, changes []byte, shadowOf func(string) string) ([]byte, bool) {
	if doc[0] != '{' {
		return dst, false
	}
	var mbuf [16]member
	var f [cfCount][]byte
	for _, mb := range splitValid(doc, mbuf[:0]) {
		k, ok := plainKey(doc, mb)
		if !ok {
			return dst, false
		}
		i := callField(k)
		if i < 0 {
			continue
		}
		if f[i] != nil {
			return dst, false
		}
		f[i] = doc[mb.val:mb.valEnd]
	}
	var latency int64
	var shadow, omitted bool
	var invokeSeq, patchSeq uint64
	if (f[cfLatencyUS] != nil && !setInt(&latency, f[cfLatencyUS], 64)) ||
		(f[cfShadow] != nil && !setBool(&shadow, f[cfShadow])) ||
		(f[cfPatchOmitted] != nil && !setBool(&omitted, f[cfPatchOmitted])) ||
		(f[cfInvokeSeq] != nil && !setUint(&invokeSeq, f[cfInvokeSeq])) ||
		(f[cfPatchSeq] != nil && !setUint(&patchSeq, f[cfPatchSeq])) {
		return dst, false
	}
	if shadow && shadowOf != nil {
		return dst, false
	}
	dst = append(dst, `{"fact_seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	if e.Index != 0 {
		dst = append(dst, `,"fact_idx":`...)
		dst = strconv.AppendInt(dst, int64(e.Index), 10)
	}
	dst = append(dst, `,"idx":`...)
	dst = strconv.AppendInt(dst, int64(j), 10)
	dst = appendStringField(dst, `,"task_id":`, tr.id)
	dst = append(dst, `,"trigger":`...)
	dst = appendJSONString(dst, e.Trigger)
	dst = append(dst, `,"attempt":`...)
	dst = strconv.AppendInt(dst, int64(e.Attempt), 10)
	for _, s := range [...]struct {
		name      string
		f         int
		omitEmpty bool
	}{
		{`,"plugin":`, cfPlugin, false},
		{`,"version":`, cfVersion, true},
		{`,"invocation":`, cfInvocation, false},
		{`,"outcome":`, cfOutcome, false},
		{`,"policy":`, cfPolicy, true},
		{`,"reason":`, cfReason, true},
		{`,"content_type":`, cfContentType, true},
	} {
		var ok bool
		if dst, ok = appendStringValue(dst, s.name, f[s.f], s.omitEmpty); !ok {
			return dst, false
		}
	}
	dst = appendRawField(dst, `,"patch":`, f[cfPatch])
	dst = append(dst, `,"latency_us":`...)
	dst = strconv.AppendInt(dst, latency, 10)
	if shadow {
		dst = append(dst, `,"shadow":true`...)
	}
	if (invokeSeq == 0 || patchSeq == 0) && len(tr.seqs) > 0 {
		inv, ok := decodedString(f[cfInvocation])
		if !ok {
			return dst, false
		}
		if invokeSeq == 0 {
			invokeSeq = tr.seqs["invoke\x00"+inv]
		}
		if patchSeq == 0 {
			patchSeq = tr.seqs["patch\x00"+inv]
		}
	}
	if invokeSeq != 0 {
		dst = append(dst, `,"invoke_seq":`...)
		dst = strconv.AppendUint(dst, invokeSeq, 10)
	}
	if patchSeq != 0 {
		dst = append(dst, `,"patch_seq":`...)
		dst = strconv.AppendUint(dst, patchSeq, 10)
	}
	if changes != nil {
		some, ok := storedChanges(changes)
		if !ok {
			return dst, false
		}
		if some {
			dst = append(dst, `,"changes":`...)
			dst = append(dst, changes...)
		}
	}
	return append(dst, '}'), true
}

// decodedString is the string that the JSON value val (nil when absent)
// decodes to.
func decodedString(val []byte) (string, bool) {
	var s string
	if val != nil && !setString(&s, val) {
		return "", false
	}
	return s, true
}

// appendStringValue appends name and the string that JSON value val
// decodes to (a string or null, which is ""; nil when absent, also ""), as
// appendJSONString writes it; nothing when it is "" and omitEmpty. A string
// of plain ASCII is copied as it is. It returns false when val is neither.
func appendStringValue(dst []byte, name string, val []byte, omitEmpty bool) ([]byte, bool) {
	if len(val) == 0 || val[0] == 'n' {
		if val != nil && string(val) != "null" {
			return dst, false
		}
		if !omitEmpty {
			dst = append(dst, name...)
			dst = append(dst, `""`...)
		}
		return dst, true
	}
	if val[0] != '"' {
		return dst, false
	}
	if plainString(val) {
		if omitEmpty && len(val) == 2 {
			return dst, true
		}
		dst = append(dst, name...)
		return append(dst, val...), true
	}
	var s string
	if !setString(&s, val) {
		return dst, false
	}
	if omitEmpty {
		return appendStringField(dst, name, s), true
	}
	return appendJSONString(append(dst, name...), s), true
}

// plainString reports whether the JSON string val (quotes included) is
// plain ASCII without escapes nor characters json.Marshal escapes: what it
// decodes to is its body, and json.Marshal writes that as val.
func plainString(val []byte) bool {
	if len(val) < 2 || val[len(val)-1] != '"' {
		return false
	}
	for _, c := range val[1 : len(val)-1] {
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// storedChanges reports whether the stored changes of a call (an element
// of a diffs column) are what json.Marshal writes for the []Change they
// decode to, as encodeDiffs wrote them, so that they can be copied: null,
// or an array of objects with the members op and path (plain strings),
// then old and new if present, in that order, compact and escaped as
// json.Marshal escapes. some reports whether there is a change.
func storedChanges(val []byte) (some, ok bool) {
	switch val[0] {
	case 'n':
		return false, string(val) == "null"
	case '[':
	default:
		return false, false
	}
	if !marshalForm(val) {
		return false, false
	}
	var cbuf [16]member
	chs := splitValid(val, cbuf[:0])
	for _, ce := range chs {
		doc := val[ce.val:ce.valEnd]
		if doc[0] != '{' {
			return false, false
		}
		var mbuf [4]member
		ms := splitValid(doc, mbuf[:0])
		if len(ms) < 2 || len(ms) > 4 {
			return false, false
		}
		names := [...]string{`"op"`, `"path"`, `"old"`, `"new"`}
		next := 0
		for i, m := range ms {
			k := bytesText(doc[m.key:m.keyEnd])
			for next < len(names) && names[next] != k {
				if next < 2 {
					return false, false // op and path come first
				}
				next++
			}
			if next == len(names) {
				return false, false
			}
			if i < 2 && !plainString(doc[m.val:m.valEnd]) {
				return false, false
			}
			next++
		}
	}
	return len(chs) > 0, true
}
