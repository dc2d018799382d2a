package projections

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/qtasks/qtasks-go/events"
)

// decodeFact reads a fact's data as json.Unmarshal into events.Fact would
// (keys matched case-insensitively, the last of duplicate keys wins), but
// without copying input and output: they are slices of data. Calls go
// through decodeCalls, and encoding/json when it cannot tell; failed
// through encoding/json. The projection decodes every fact; this is most of
// its JSON work.
func decodeFact(data []byte, f *events.Fact) error {
	var buf [8]member
	ms, valid := validObject(data, buf[:0])
	if !valid || data[skipWS(data, 0)] != '{' {
		// Not an object, or not JSON: let encoding/json say what is wrong
		// (or, for null, that nothing is).
		var v events.Fact
		err := json.Unmarshal(data, &v)
		*f = v
		return err
	}
	return decodeFactMembers(data, ms, f)
}

// decodeStoredFact is decodeFact for the data column of a fact in the
// projection, which the projector validated before it stored it: the
// object's members are split without validating them again (reading a
// task's timeline validated every fact, a fifth of the task page's time).
// What does not start as an object goes through decodeFact.
func decodeStoredFact(data []byte, f *events.Fact) error {
	var buf [8]member
	if i := skipWS(data, 0); i >= len(data) || data[i] != '{' {
		return decodeFact(data, f)
	}
	return decodeFactMembers(data, splitValid(data, buf[:0]), f)
}

// decodeFactMembers is decodeFact for the members ms of object data.
func decodeFactMembers(data []byte, ms []member, f *events.Fact) error {
	for _, m := range ms {
		k, val := data[m.key:m.keyEnd], data[m.val:m.valEnd]
		key := k[1 : len(k)-1]
		name := string(key)
		if bytes.IndexByte(key, '\\') >= 0 {
			var unescaped string
			if err := json.Unmarshal(k, &unescaped); err != nil {
				return err
			}
			name = unescaped
		}
		switch {
		case strings.EqualFold(name, "input"):
			f.Input = rawOrNil(val)
		case strings.EqualFold(name, "output"):
			f.Output = rawOrNil(val)
		// Locals: &f.Calls would move the caller's Prepared to the heap.
		case strings.EqualFold(name, "calls"):
			if calls, ok := decodeCalls(val); ok {
				f.Calls = calls
				continue
			}
			var calls []events.PluginCall
			err := json.Unmarshal(val, &calls)
			f.Calls = calls
			if err != nil {
				return err
			}
		case strings.EqualFold(name, "failed"):
			var failed string
			err := json.Unmarshal(val, &failed)
			f.Failed = failed
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// rawOrNil is what json.RawMessage holds after unmarshalling val (JSON
// null included, as the text null).
func rawOrNil(val []byte) json.RawMessage { return json.RawMessage(val) }

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// decodeCalls decodes a fact's calls (val, valid JSON) as json.Unmarshal
// into a nil slice would, without reflection: with encoding/json, the calls
// were a sixth of Prepare's time over the recorded log. Patches are slices
// of val. It returns false when it cannot be sure to decode
// what encoding/json would (as decodeRecord); the caller then uses
// encoding/json.
func decodeCalls(val []byte) ([]events.PluginCall, bool) {
	var buf [8]member
	switch val[skipWS(val, 0)] {
	case 'n':
		return nil, true
	case '[':
	default:
		return nil, false
	}
	elems := splitValid(val, buf[:0])
	// An empty array is an empty slice, not nil.
	calls := make([]events.PluginCall, 0, len(elems))
	var mbuf [16]member
	for _, el := range elems {
		doc := val[el.val:el.valEnd]
		if doc[0] != '{' {
			return nil, false
		}
		ms := splitValid(doc, mbuf[:0])
		var c events.PluginCall
		var seen uint32
		for _, mb := range ms {
			k, ok := plainKey(doc, mb)
			if !ok {
				return nil, false
			}
			f := callField(k)
			if f < 0 {
				continue
			}
			if seen&(1<<f) != 0 {
				return nil, false
			}
			seen |= 1 << f
			if !setCallField(&c, f, doc[mb.val:mb.valEnd]) {
				return nil, false
			}
		}
		calls = append(calls, c)
	}
	return calls, true
}

// Fields of events.PluginCall that decodeCalls decodes.
const (
	cfPlugin = iota
	cfVersion
	cfInvocation
	cfOutcome
	cfPolicy
	cfReason
	cfContentType
	cfPatch
	cfLatencyUS
	cfPatchOmitted
	cfShadow
	cfInvokeSeq
	cfPatchSeq
	cfCount
)

// callFields are events.PluginCall's JSON names; TestCallFields checks
// them against the struct tags.
var callFields = [cfCount]string{
	cfPlugin: "plugin", cfVersion: "version", cfInvocation: "invocation", cfOutcome: "outcome", cfPolicy: "policy",
	cfReason: "reason", cfContentType: "content_type", cfPatch: "patch", cfLatencyUS: "latency_us",
	cfPatchOmitted: "patch_omitted", cfShadow: "shadow", cfInvokeSeq: "invoke_seq", cfPatchSeq: "patch_seq",
}

// callField returns the field named k (ASCII, any case), or -1.
func callField(k string) int {
	if len(k) >= len(callFieldsByLen) {
		return -1
	}
	fs := callFieldsByLen[len(k)]
	for _, f := range fs { // as the projector writes them
		if callFields[f] == k {
			return f
		}
	}
	for _, f := range fs {
		if strings.EqualFold(callFields[f], k) {
			return f
		}
	}
	return -1
}

// callFieldsByLen lists the fields by the length of their names: the task
// page and the projector look up every member of every call.
var callFieldsByLen = func() (t [16][]int) {
	for f, name := range callFields {
		t[len(name)] = append(t[len(name)], f)
	}
	return t
}()

func setCallField(c *events.PluginCall, f int, val []byte) bool {
	switch f {
	case cfPlugin:
		return setString(&c.Plugin, val)
	case cfVersion:
		return setString(&c.Version, val)
	case cfInvocation:
		return setString(&c.Invocation, val)
	case cfOutcome:
		return setKnown((*string)(&c.Outcome), val, outcomes[:]) || setString((*string)(&c.Outcome), val)
	case cfPolicy:
		return setString(&c.Policy, val)
	case cfReason:
		return setString(&c.Reason, val)
	case cfContentType:
		return setKnown(&c.ContentType, val, contentTypes[:]) || setString(&c.ContentType, val)
	case cfPatch:
		c.Patch = json.RawMessage(val)
	case cfLatencyUS:
		return setInt(&c.LatencyUS, val, 64)
	case cfPatchOmitted:
		return setBool(&c.PatchOmitted, val)
	case cfShadow:
		return setBool(&c.Shadow, val)
	case cfInvokeSeq:
		return setUint(&c.InvokeSeq, val)
	case cfPatchSeq:
		return setUint(&c.PatchSeq, val)
	}
	return true
}

// outcomes and contentTypes are the values of a call's outcome and content
// type, which setKnown sets without allocating a string for each call.
var (
	outcomes = [...]string{
		string(events.OutcomeApplied), string(events.OutcomeNoChange), string(events.OutcomeRejected),
		string(events.OutcomeTimeout), string(events.OutcomeError), string(events.OutcomeShadow),
	}
	contentTypes = [...]string{events.ContentTypeJSONPatch, events.ContentTypeMergePatch, events.ContentTypeJSON}
)

// setKnown sets *p to the one of known that val (a JSON string without
// escapes) spells, and reports whether one did.
func setKnown(p *string, val []byte, known []string) bool {
	if len(val) < 2 || val[0] != '"' {
		return false
	}
	body := val[1 : len(val)-1]
	for _, k := range known {
		if string(body) == k {
			*p = k
			return true
		}
	}
	return false
}

func setBool(p *bool, val []byte) bool {
	switch string(val) {
	case "true":
		*p = true
	case "false":
		*p = false
	case "null":
	default:
		return false
	}
	return true
}

func setUint(p *uint64, val []byte) bool {
	if val[0] == 'n' {
		return true
	}
	n, err := strconv.ParseUint(bytesText(val), 10, 64)
	if err != nil {
		return false
	}
	*p = n
	return true
}
