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
// them and encoding them again was two fifths of the task page's time
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
	sf := &tr.stored
	if !sf.parse(fr.data) {
		return fail()
	}
	// The stored changes, one element per call.
	var dbuf [8]member
	var diffs []member
	plainDiffs := false
	if len(fr.stored) > 0 {
		if diffs, plainDiffs = splitDiffs(fr.stored, dbuf[:0]); diffs == nil || len(diffs) != len(sf.callFields) {
			return fail()
		}
	}

	e := &fr.e
	dst = e.appendHead(dst, &fr.at, &tr.strings)
	dst = appendScannedRaw(dst, `,"input":`, sf.input, sf.plain&(1<<sfInput) != 0)
	dst = appendScannedRaw(dst, `,"output":`, sf.output, sf.plain&(1<<sfOutput) != 0)
	if sf.failed != nil {
		var ok bool
		if dst, ok = appendStringValue(dst, `,"failed":`, sf.failed, true, sf.plain&(1<<sfFailed) != 0); !ok {
			return fail()
		}
	}
	dst = appendStringField(dst, `,"replay":`, e.Replay)
	if len(sf.callFields) == 0 {
		return append(dst, '}'), true
	}
	dst = append(dst, `,"calls":[`...)
	for j := range sf.callFields {
		if j > 0 {
			dst = append(dst, ',')
		}
		var changes []byte
		if diffs != nil {
			changes = fr.stored[diffs[j].val:diffs[j].valEnd]
		}
		var ok bool
		if dst, ok = tr.appendStoredCall(dst, e, j, &sf.callFields[j], changes, plainDiffs, shadowOf); !ok {
			return fail()
		}
	}
	return append(dst, "]}"...), true
}

// storedFact holds the spans of a stored fact's data that its entry
// shows, and the members of each of its calls, by field (cfPlugin...).
// plain has a bit (sfInput...) for each of the first that scanValue found
// plain.
type storedFact struct {
	input, output, calls, failed []byte
	plain                        uint8
	callFields                   []storedCall
}

// Bits of storedFact.plain.
const (
	sfInput = iota
	sfOutput
	sfFailed
)

// storedCall holds the members of a stored call by field (cfPlugin...),
// and a bit for each that scanValue found plain.
type storedCall struct {
	f     [cfCount][]byte
	plain uint32
}

// parse finds the members of data, a fact's data column, and those of its
// calls, in one pass over the bytes (splitting the data, then its calls,
// then each call went over a call three times: a seventh of the task
// page's time). It returns false for what appendStoredEntry does not write
// (see there); on data that is not valid JSON after all it stops without
// panicking.
func (sf *storedFact) parse(b []byte) bool {
	*sf = storedFact{callFields: sf.callFields[:0]}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	for i = skipWS(b, i+1); i < len(b) && b[i] != '}'; {
		k, v, ok := memberKey(b, i)
		if !ok {
			return false
		}
		var p *[]byte
		bit := -1
		switch k { // as the projector writes them; any case (encoding/json's rule) below
		case "input":
			p, bit = &sf.input, sfInput
		case "output":
			p, bit = &sf.output, sfOutput
		case "calls":
			p = &sf.calls
		case "failed":
			p, bit = &sf.failed, sfFailed
		default:
			switch {
			case strings.EqualFold(k, "input"):
				p, bit = &sf.input, sfInput
			case strings.EqualFold(k, "output"):
				p, bit = &sf.output, sfOutput
			case strings.EqualFold(k, "calls"):
				p = &sf.calls
			case strings.EqualFold(k, "failed"):
				p, bit = &sf.failed, sfFailed
			}
		}
		if p != nil && *p != nil {
			return false
		}
		if p == &sf.calls && b[v] != '[' && b[v] != 'n' {
			return false
		}
		if p == &sf.calls && b[v] == '[' {
			i, ok = sf.parseCalls(b, v)
		} else {
			var plain bool
			i, plain = scanValue(b, v)
			ok = i > v && i <= len(b)
			if plain && bit >= 0 {
				sf.plain |= 1 << bit
			}
		}
		if !ok {
			return false
		}
		if p != nil {
			*p = b[v:i]
		}
		if i = skipWS(b, i); i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return i < len(b)
}

// parseCalls appends to sf.callFields the members of each call of the
// array of calls at b[i] and returns the array's end.
func (sf *storedFact) parseCalls(b []byte, i int) (int, bool) {
	for i = skipWS(b, i+1); i < len(b) && b[i] != ']'; {
		if b[i] != '{' {
			return i, false
		}
		var sc storedCall
		f := &sc.f
		next := 0 // the field after the last found in the projector's order
		for i = skipWS(b, i+1); i < len(b) && b[i] != '}'; {
			c, v := nextCallKey(b, i, next)
			if c >= 0 {
				next = c + 1
			} else {
				k, kv, ok := memberKey(b, i)
				if !ok {
					return i, false
				}
				c, v = callField(k), kv
			}
			var plain bool
			if i, plain = scanValue(b, v); i <= v || i > len(b) {
				return i, false
			}
			if c >= 0 {
				if f[c] != nil {
					return i, false
				}
				f[c] = b[v:i]
				if plain {
					sc.plain |= 1 << c
				}
			}
			if i = skipWS(b, i); i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
			}
		}
		if i >= len(b) {
			return i, false
		}
		sf.callFields = append(sf.callFields, sc)
		if i = skipWS(b, i+1); i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	if i >= len(b) {
		return i, false
	}
	return i + 1, true
}

// nextCallKey looks at b[i] for the name of a call's field as the
// projector writes it (json.Marshal of events.PluginCall: the fields in
// callFields' order, some omitted, "name": without spaces): the first of
// the fields from next on whose name and colon b[i:] begins with. It
// returns the field and where its value starts, or -1 for memberKey to
// read the name (callField) as it is.
func nextCallKey(b []byte, i, next int) (int, int) {
	if i+1 >= len(b) {
		return -1, i
	}
	for f := next; f < cfCount; f++ {
		// The name's first letter first: most misses are fields omitted.
		if k := quotedCallFields[f]; b[i+1] == k[1] && hasPrefixAt(b, i, k) {
			return f, skipWS(b, i+len(k))
		}
	}
	return -1, i
}

// quotedCallFields are callFields as member names: "plugin": and so on.
var quotedCallFields = func() (q [cfCount]string) {
	for f, name := range callFields {
		q[f] = `"` + name + `":`
	}
	return q
}()

// memberKey reads the name of the object member at b[i] (its opening
// quote), which must be plain (plainKey), and returns it and where its
// value starts.
func memberKey(b []byte, i int) (string, int, bool) {
	if b[i] != '"' {
		return "", i, false
	}
	end, plain := scanString(b, i)
	if end-i < 2 || b[end-1] != '"' {
		return "", i, false
	}
	k := bytesText(b[i+1 : end-1])
	if !plain { // else plainKey's answer: ASCII without escapes
		var ok bool
		if k, ok = plainKey(b, member{key: i, keyEnd: end}); !ok {
			return "", i, false
		}
	}
	if end = skipWS(b, end); end >= len(b) || b[end] != ':' {
		return "", i, false
	}
	if end = skipWS(b, end+1); end >= len(b) {
		return "", i, false
	}
	return k, end, true
}

// appendStoredCall appends call j of entry e, whose stored members are sc
// and stored changes changes (nil when the fact has none; plainChanges
// when scanValue found them plain), for appendStoredEntry.
func (tr *timelineReader) appendStoredCall(dst []byte, e *Entry, j int, sc *storedCall, changes []byte, plainChanges bool, shadowOf func(string) string) ([]byte, bool) {
	f := &sc.f
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
	if tr.idField == nil {
		tr.idField = appendStringField(nil, `,"task_id":`, tr.id)
	}
	dst = append(dst, tr.idField...)
	dst = append(dst, `,"trigger":`...)
	dst = tr.strings.append(dst, scTrigger, e.Trigger)
	dst = append(dst, `,"attempt":`...)
	dst = strconv.AppendInt(dst, int64(e.Attempt), 10)
	for _, s := range &callStringFields {
		var ok bool
		if dst, ok = appendStringValue(dst, s.name, f[s.f], s.omitEmpty, sc.plain&(1<<s.f) != 0); !ok {
			return dst, false
		}
	}
	dst = appendScannedRaw(dst, `,"patch":`, f[cfPatch], sc.plain&(1<<cfPatch) != 0)
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
		some, ok := storedChanges(changes, plainChanges)
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

// callStringFields are the string members of a call that appendStoredCall
// writes, in Call's order: a package-level table, not a literal built on
// every call.
var callStringFields = [...]struct {
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
// of plain ASCII (plainString; plain says scanValue found it so) is copied
// as it is. It returns false when val is neither.
func appendStringValue(dst []byte, name string, val []byte, omitEmpty, plain bool) ([]byte, bool) {
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
	if plain || plainString(val) {
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
	if len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
		return false
	}
	for _, c := range val[1 : len(val)-1] {
		if !plainByte[c] {
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
// json.Marshal escapes (one pass checks, unless scannedPlain says
// scanValue found them plain; a second reads the members, in the compact form only). some
// reports whether there is a change.
func storedChanges(val []byte, scannedPlain bool) (some, ok bool) {
	switch val[0] {
	case 'n':
		return false, string(val) == "null"
	case '[':
	default:
		return false, false
	}
	if !scannedPlain && !marshalForm(val) {
		return false, false
	}
	i := 1
	if i < len(val) && val[i] == ']' {
		return false, i+1 == len(val)
	}
	// plain reads the member name at val[i], then a plain string.
	plain := func(name string) bool {
		if !hasPrefixAt(val, i, name) {
			return false
		}
		j := skipString(val, i+len(name))
		if !plainString(val[i+len(name) : j]) {
			return false
		}
		i = j
		return true
	}
	// value reads the member name at val[i], if it is there, then a value.
	value := func(name string) bool {
		if !hasPrefixAt(val, i, name) {
			return true
		}
		j := skipValue(val, i+len(name))
		if j <= i+len(name) || j > len(val) {
			return false
		}
		i = j
		return true
	}
	for {
		if !plain(`{"op":`) || !plain(`,"path":`) || !value(`,"old":`) || !value(`,"new":`) ||
			i >= len(val) || val[i] != '}' {
			return false, false
		}
		if i++; i < len(val) && val[i] == ',' {
			i++
			continue
		}
		return true, i+1 == len(val) && val[i] == ']'
	}
}

// hasPrefixAt reports whether b[i:] begins with prefix.
func hasPrefixAt(b []byte, i int, prefix string) bool {
	return len(b)-i >= len(prefix) && string(b[i:i+len(prefix)]) == prefix
}

// appendScannedRaw is appendRawField for a value scanValue read: a plain
// one is in json.Marshal's form already (marshalForm), and is copied.
func appendScannedRaw(dst []byte, name string, val []byte, plain bool) []byte {
	if plain && len(val) > 0 {
		return append(append(dst, name...), val...)
	}
	return appendRawField(dst, name, val)
}

// scanValue is skipValue, and also reports whether the value is plain: no
// whitespace, and strings of plain ASCII (plainByte) without escapes. A
// plain value is as json.Marshal writes a json.RawMessage (marshalForm),
// and a plain string as it writes the string it decodes to (plainString):
// appendStoredEntry reads each byte of a fact once for where its members
// end and for how to write them, where skipping them and checking them
// went over the same bytes twice (BenchmarkConsole).
func scanValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		plain, depth := true, 0
		for i < len(b) {
			for i < len(b) && !stopPlainNested[b[i]] {
				i++
			}
			if i >= len(b) {
				break
			}
			switch b[i] {
			case '"':
				var p bool
				i, p = scanString(b, i)
				plain = plain && p
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, plain
				}
			default: // whitespace
				plain = false
			}
			i++
		}
		return len(b), false
	}
	return skipValue(b, i), true // a number, true, false or null
}

// scanString is skipString, and also reports whether the string is plain
// (scanValue).
func scanString(b []byte, i int) (int, bool) {
	plain := true
	for i++; i < len(b); i++ {
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		if b[i] == '"' {
			return i + 1, plain
		}
		if b[i] == '\\' {
			i++ // the escaped byte
		}
		plain = false
	}
	return len(b), false
}

// stopPlainNested are the bytes scanValue's loop over an object or an
// array looks at: those of skipValue's, and whitespace.
var stopPlainNested = func() (t [256]bool) {
	for _, c := range []byte("\"{[]} \t\r\n") {
		t[c] = true
	}
	return t
}()

// splitDiffs appends the elements of a diffs column b, an array, as
// splitValid does, and reports whether they are all plain (scanValue). It
// returns nil for b that is not an array, or not valid after all.
func splitDiffs(b []byte, ms []member) ([]member, bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	plain := true
	for i = skipWS(b, i+1); i < len(b) && b[i] != ']'; {
		m := member{val: i}
		var p bool
		i, p = scanValue(b, i)
		if m.valEnd = i; m.valEnd <= m.val || m.valEnd > len(b) {
			return nil, false
		}
		plain = plain && p
		ms = append(ms, m)
		if i = skipWS(b, i); i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	if i >= len(b) {
		return nil, false
	}
	return ms, plain
}
