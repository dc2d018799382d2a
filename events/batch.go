package events

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ContentTypeBatch is the media type of a message that holds several
// events in the CloudEvents JSON batch format: a JSON array whose every
// element is one complete CloudEvent in the JSON event format (structured
// mode). Issue #15 measured it for packing a phase's facts into one stored
// message (docs/ARCHITECTURE.md, "The exchange").
const ContentTypeBatch = "application/cloudevents-batch+json"

// MaxBatchSize bounds the encoded size of one batch: the bound on one
// event's data, so that a batch message fits wherever a single event does.
// A writer starts a new message before a batch would pass it; an event too
// large to share a message travels alone.
const MaxBatchSize = MaxDataSize

// maxBatchMembers bounds the members of one batch element: about three
// times what Encode writes with data, so that attributes added later fit,
// while a hostile element cannot make the duplicate check quadratic in its
// size.
const maxBatchMembers = 64

// Member names of the JSON event format that are not attributes.
const (
	batchData       = "data"
	batchDataBase64 = "data_base64"
	// batchContentType is datacontenttype's name in the JSON format; in
	// binary mode it is the content-type header.
	batchContentType = "datacontenttype"
)

// AppendBatch appends evs to dst as a CloudEvents JSON batch. Each element
// carries exactly the attributes Encode writes as headers in binary mode,
// each as a JSON string with the same value (so an element decodes to the
// event its binary-mode message decodes to), in a fixed order, and the
// data: as the JSON value itself when the content type is application/json
// and the data is JSON with no surrounding white space, else base64 in
// data_base64, so that every byte comes back. The encoding is
// deterministic.
//
// Every event must be one Decode accepts from its binary-mode message: a
// reader takes a batch whole or not at all, so one bad event would hide the
// others. AppendBatch fails, appending nothing, when evs is empty, an event
// is not valid, an attribute value is not valid UTF-8 (a JSON string could
// not carry it byte for byte: send that event alone) or the batch would
// pass MaxBatchSize.
func AppendBatch(dst []byte, evs []Event) ([]byte, error) {
	if len(evs) == 0 {
		return dst, fmt.Errorf("%w: a batch holds at least one event", ErrInvalidEvent)
	}
	start := len(dst)
	h := make(Headers, maxHeaders)
	keys := make([]string, 0, maxHeaders)
	dst = append(dst, '[')
	for i := range evs {
		ev := &evs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		clear(h)
		ev.Encode(h)
		if _, err := Decode(h, ev.Data); err != nil {
			return dst[:start], fmt.Errorf("batch event %d: %w", i, err)
		}
		keys = keys[:0]
		for k := range h {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for j, k := range keys {
			name, ok := batchName(k)
			if !ok {
				return dst[:start], fmt.Errorf("%w: header %q has no attribute name", ErrInvalidEvent, k)
			}
			v := h[k][0]
			if strings.HasPrefix(k, HeaderPrefix) {
				// Binary mode percent-encodes attribute values (Encode);
				// in structured mode they are JSON strings as they are.
				var err error
				if v, err = DecodeHeaderValue(v); err != nil {
					return dst[:start], fmt.Errorf("%w: attribute %s: %w", ErrInvalidEvent, name, err)
				}
			}
			if !utf8.ValidString(v) {
				// A JSON string is text: the value could not come back byte
				// for byte. Such an event travels alone, in binary mode.
				return dst[:start], fmt.Errorf("%w: attribute %s is not valid UTF-8", ErrInvalidEvent, name)
			}
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, name)
			dst = append(dst, ':')
			dst = appendJSONString(dst, v)
		}
		if d := ev.Data; len(d) > 0 {
			if len(keys) > 0 {
				dst = append(dst, ',')
			}
			if jsonContent(ev.DataContentType) && embeddable(d) {
				dst = append(dst, `"data":`...)
				dst = append(dst, d...)
			} else {
				dst = append(dst, `"data_base64":"`...)
				dst = base64.StdEncoding.AppendEncode(dst, d)
				dst = append(dst, '"')
			}
		}
		dst = append(dst, '}')
		if len(dst)-start > MaxBatchSize {
			return dst[:start], fmt.Errorf("%w: a batch of %d events passes %d bytes", ErrTooLarge, len(evs), MaxBatchSize)
		}
	}
	dst = append(dst, ']')
	if len(dst)-start > MaxBatchSize {
		return dst[:start], fmt.Errorf("%w: a batch of %d events passes %d bytes", ErrTooLarge, len(evs), MaxBatchSize)
	}
	return dst, nil
}

// EncodeBatch is AppendBatch to a new slice.
func EncodeBatch(evs []Event) ([]byte, error) { return AppendBatch(nil, evs) }

// DecodeBatch reads a CloudEvents JSON batch and decodes and validates
// every element as Decode does the same event in binary mode: an element's
// attributes must be JSON strings (the values binary mode carries), its
// member names lower-case letters and digits written without escapes, each
// at most once; data is the JSON value as it stands in the batch (the
// events' Data share data's memory), or data_base64 decoded, not both. It
// fails on the first bad element, returning no events: a batch is read
// whole or not at all.
func DecodeBatch(data []byte) ([]Event, error) {
	if len(data) > MaxBatchSize {
		return nil, fmt.Errorf("%w: batch of %d bytes, at most %d", ErrTooLarge, len(data), MaxBatchSize)
	}
	sc := batchScanner{b: data}
	if !sc.take('[') {
		return nil, fmt.Errorf("%w: a batch is a JSON array", ErrInvalidEvent)
	}
	if sc.take(']') {
		return nil, fmt.Errorf("%w: a batch holds at least one event", ErrInvalidEvent)
	}
	var evs []Event
	h := make(Headers, maxHeaders)
	var seen [maxBatchMembers]string
	for {
		n := len(evs)
		bad := func(format string, args ...any) ([]Event, error) {
			return nil, fmt.Errorf("%w: batch element %d: %s", ErrInvalidEvent, n, fmt.Sprintf(format, args...))
		}
		if !sc.take('{') {
			return bad("not an object")
		}
		clear(h)
		nseen := 0
		var body []byte
		hasData, hasBase64 := false, false
		for first := true; !sc.take('}'); first = false {
			if !first && !sc.take(',') {
				return bad("expected , or } at %s", sc.around())
			}
			name, ok := sc.plainString()
			if !ok || (!attributeName(name) && name != batchDataBase64) {
				return bad("member %s is not an attribute name", sc.around())
			}
			if slices.Contains(seen[:nseen], name) {
				return bad("%q appears twice", name)
			}
			if nseen == len(seen) {
				return bad("more than %d members", len(seen))
			}
			seen[nseen] = name
			nseen++
			if !sc.take(':') {
				return bad("expected : after %q", name)
			}
			switch name {
			case batchData:
				if body, ok = sc.value(); !ok {
					return bad("data is not JSON")
				}
				hasData = true
			case batchDataBase64:
				v, ok := sc.stringValue()
				if !ok {
					return bad("data_base64 is not a string")
				}
				var err error
				if body, err = base64.StdEncoding.DecodeString(v); err != nil {
					return bad("data_base64: %v", err)
				}
				hasBase64 = true
			default:
				v, ok := sc.stringValue()
				if !ok {
					return bad("%s is not a string (attributes are strings, as in binary mode)", name)
				}
				if hn := headerName(name); strings.HasPrefix(hn, HeaderPrefix) {
					h[hn] = []string{EncodeHeaderValue(v)} // Decode takes binary mode's form
				} else {
					h[hn] = []string{v}
				}
			}
		}
		if hasData && hasBase64 {
			return bad("both data and data_base64")
		}
		ev, err := Decode(h, body)
		if err != nil {
			return nil, fmt.Errorf("batch element %d: %w", n, err)
		}
		evs = append(evs, ev)
		if sc.take(']') {
			break
		}
		if !sc.take(',') {
			return nil, fmt.Errorf("%w: batch: expected , or ] after element %d", ErrInvalidEvent, n)
		}
	}
	if sc.skipSpace(); sc.i != len(sc.b) {
		return nil, fmt.Errorf("%w: data after the batch", ErrInvalidEvent)
	}
	return evs, nil
}

// batchScanner reads a batch strictly: the array and its objects by hand,
// strings checked as it goes, a data member's value by json.Valid. What it
// accepts is valid JSON (json.Valid over the whole batch cost about as much
// as the rest of the decoding).
type batchScanner struct {
	b []byte
	i int
}

func (s *batchScanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// take consumes c (after white space) if it is next.
func (s *batchScanner) take(c byte) bool {
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// around is the text at the scanner, for errors.
func (s *batchScanner) around() string {
	return strconv.Quote(string(s.b[s.i:min(len(s.b), s.i+24)]))
}

// stringEnd returns the index after the string starting at s.i (a quote),
// whether it holds an escape, and whether it is a well-formed string as
// far as its bytes go (closed, no control character; escapes are checked
// by their decoder).
func (s *batchScanner) stringEnd() (end int, esc, ok bool) {
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '\\':
			esc = true
			j++
		case c == '"':
			return j + 1, esc, true
		case c < 0x20:
			return j, esc, false
		}
	}
	return len(s.b), esc, false
}

// plainString reads a string without escapes.
func (s *batchScanner) plainString() (string, bool) {
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	end, esc, ok := s.stringEnd()
	if esc || !ok || !utf8.Valid(s.b[s.i:end]) {
		return "", false
	}
	v := string(s.b[s.i+1 : end-1])
	s.i = end
	return v, true
}

// stringValue reads a string value, escapes resolved.
func (s *batchScanner) stringValue() (string, bool) {
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	end, esc, ok := s.stringEnd()
	if !ok || !utf8.Valid(s.b[s.i:end]) {
		return "", false
	}
	raw := s.b[s.i:end]
	s.i = end
	if !esc {
		return string(raw[1 : len(raw)-1]), true
	}
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	return v, true
}

// value reads one JSON value and returns it as it stands, if it is valid
// JSON: its extent is found by following strings and brackets, then
// json.Valid checks it.
func (s *batchScanner) value() ([]byte, bool) {
	s.skipSpace()
	start := s.i
	depth := 0
scan:
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			end, _, ok := s.stringEnd()
			if !ok {
				return nil, false
			}
			s.i = end
			if depth == 0 {
				break scan
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				break scan // the end of a number or literal
			}
			depth--
			if depth == 0 {
				s.i++
				break scan
			}
		case ',', ' ', '\t', '\r', '\n':
			if depth == 0 {
				break scan
			}
		}
		s.i++
	}
	v := s.b[start:s.i]
	return v, len(v) > 0 && json.Valid(v)
}

// batchName is the JSON format's name of header k as Encode writes it.
func batchName(k string) (string, bool) {
	if k == HeaderContentType {
		return batchContentType, true
	}
	name, ok := strings.CutPrefix(k, HeaderPrefix)
	return name, ok && attributeName(name) && name != batchContentType
}

// headerName is the binary-mode header of attribute name.
func headerName(name string) string {
	if name == batchContentType {
		return HeaderContentType
	}
	return HeaderPrefix + name
}

// attributeName reports whether s is a CloudEvents attribute name: lower
// case ASCII letters and digits.
func attributeName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !attributeByte(s[i]) {
			return false
		}
	}
	return true
}

func attributeByte(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// jsonContent reports whether data of content type ct travels as the data
// member itself: media type application/json, what facts, invocations and
// task messages carry. Other types, the patch types included, go in
// data_base64: the CloudEvents SDK for Go reads a data member as JSON only
// for application/json and text/json (and expects a JSON string for any
// other type), so this keeps every element readable by it.
func jsonContent(ct string) bool {
	return strings.EqualFold(mediaType(ct), ContentTypeJSON)
}

// embeddable reports whether d can stand as the data member and come back
// byte for byte: valid JSON, no white space around it.
func embeddable(d []byte) bool {
	switch d[0] {
	case ' ', '\t', '\r', '\n':
		return false
	}
	switch d[len(d)-1] {
	case ' ', '\t', '\r', '\n':
		return false
	}
	return json.Valid(d)
}

// appendJSONString appends s, valid UTF-8, as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			simple = false
			break
		}
	}
	if simple {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) //nolint:errchkjson // a valid UTF-8 string always encodes, and comes back as it was
	return append(dst, b...)
}
