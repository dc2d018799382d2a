package events

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// SpecVersion is the CloudEvents version of every event qtasks writes.
const SpecVersion = "1.0"

// Event types. A fact's type is TypeTriggerPrefix followed by the trigger
// name, an invocation's is TypeInvokePrefix followed by the trigger name.
const (
	TypeTriggerPrefix = "io.qtasks.trigger."
	TypeInvokePrefix  = "io.qtasks.invoke."
	TypePatch         = "io.qtasks.patch"
	TypeTask          = "io.qtasks.task"
	TypeDeadLetter    = "io.qtasks.deadletter"
	// TypeAlert is an executor's record of an attack it detected (a
	// message occupying an id or role the executor relies on). Only
	// executors write it, on AlertSubject, which no plugin may write.
	TypeAlert = "io.qtasks.alert"
)

// Data content types.
const (
	ContentTypeJSON       = "application/json"
	ContentTypeJSONPatch  = "application/json-patch+json"
	ContentTypeMergePatch = "application/merge-patch+json"
)

// NATS header names of the CloudEvents NATS protocol binding, binary mode:
// every attribute is a header prefixed "ce-", except datacontenttype which is
// the content-type header.
const (
	HeaderPrefix      = "ce-"
	HeaderContentType = "content-type"
	// HeaderMsgID is JetStream's deduplication header.
	HeaderMsgID = "Nats-Msg-Id"
)

// Extension attribute names (lower-case alphanumeric, as CloudEvents requires).
const (
	ExtTaskID        = "taskid"
	ExtTaskName      = "taskname"
	ExtTrigger       = "trigger"
	ExtAttempt       = "attempt"
	ExtRun           = "run"
	ExtPlugin        = "plugin"
	ExtPluginVersion = "pluginversion"
	ExtInvocation    = "invocation"
	ExtTimeoutMS     = "timeoutms"
	ExtPluginError   = "pluginerror"
	ExtTraceParent   = "traceparent"
	ExtReplay        = "replay"
)

// MaxPayloadSize bounds a task's arguments and extra (args, kw and extra
// together, checked at submission) and its result, so that a fact, which
// carries a trigger's payload before and after the plugins, stays under
// MaxDataSize.
const MaxPayloadSize = 256 * 1024

// MaxDataSize bounds the data of one event. JetStream's default max payload
// is 1 MiB; the headers need room too.
const MaxDataSize = 900 * 1024

// Errors returned when decoding or validating events.
var (
	// ErrInvalidEvent is wrapped by every validation failure.
	ErrInvalidEvent = errors.New("invalid event")
	// ErrTooLarge is returned for data above MaxDataSize.
	ErrTooLarge = errors.New("event data too large")
)

// Event is a CloudEvent as qtasks writes it: the required attributes, the
// optional ones it uses, and its extensions as typed fields.
type Event struct {
	ID              string
	Source          string
	Type            string
	Subject         string
	Time            time.Time
	DataContentType string
	Data            []byte

	TaskID        string
	TaskName      string
	Trigger       string
	Attempt       int
	Run           int
	Plugin        string
	PluginVersion string
	Invocation    string
	TimeoutMS     int
	PluginError   string
	TraceParent   string
	// Replay marks events written in a replay namespace.
	Replay string
}

// Headers is the subset of nats.Header this package needs; nats.Header
// converts to it without copying.
type Headers = map[string][]string

// Header names of the attributes, as Encode writes them.
const (
	hSpecVersion   = HeaderPrefix + "specversion"
	hID            = HeaderPrefix + "id"
	hSource        = HeaderPrefix + "source"
	hType          = HeaderPrefix + "type"
	hSubject       = HeaderPrefix + "subject"
	hTime          = HeaderPrefix + "time"
	hTaskID        = HeaderPrefix + ExtTaskID
	hTaskName      = HeaderPrefix + ExtTaskName
	hTrigger       = HeaderPrefix + ExtTrigger
	hAttempt       = HeaderPrefix + ExtAttempt
	hRun           = HeaderPrefix + ExtRun
	hPlugin        = HeaderPrefix + ExtPlugin
	hPluginVersion = HeaderPrefix + ExtPluginVersion
	hInvocation    = HeaderPrefix + ExtInvocation
	hTimeoutMS     = HeaderPrefix + ExtTimeoutMS
	hPluginError   = HeaderPrefix + ExtPluginError
	hTraceParent   = HeaderPrefix + ExtTraceParent
	hReplay        = HeaderPrefix + ExtReplay
)

// maxHeaders is how many headers Encode writes at most.
const maxHeaders = 19

// Encode writes the event's attributes as NATS headers (binary content mode)
// into h, which must not be nil. Every value is a one-element slice of its
// own capacity; they share one backing array, and the formatted values (time
// and numbers) share one string, so that encoding costs two allocations
// besides the map's.
func (e *Event) Encode(h Headers) {
	// The formatted values, appended to one buffer: their ends in it.
	var buf [64]byte
	num := buf[:0]
	var tEnd, aEnd, rEnd, toEnd int
	if !e.Time.IsZero() {
		num = e.Time.UTC().AppendFormat(num, time.RFC3339Nano)
	}
	tEnd = len(num)
	if e.Attempt != 0 {
		num = strconv.AppendInt(num, int64(e.Attempt), 10)
	}
	aEnd = len(num)
	if e.Run != 0 {
		num = strconv.AppendInt(num, int64(e.Run), 10)
	}
	rEnd = len(num)
	if e.TimeoutMS != 0 {
		num = strconv.AppendInt(num, int64(e.TimeoutMS), 10)
	}
	toEnd = len(num)
	nums := string(num)

	vals := make([]string, 0, maxHeaders)
	set := func(k, v string) {
		if v != "" {
			vals = append(vals, v)
			n := len(vals)
			h[k] = vals[n-1 : n : n]
		}
	}
	// Strings are percent-encoded; the formatted values need no escape.
	enc := EncodeHeaderValue
	set(hSpecVersion, SpecVersion)
	set(hID, enc(e.ID))
	set(hSource, enc(e.Source))
	set(hType, enc(e.Type))
	set(hSubject, enc(e.Subject))
	set(hTime, nums[:tEnd])
	set(HeaderContentType, e.DataContentType)
	set(hTaskID, enc(e.TaskID))
	set(hTaskName, enc(e.TaskName))
	set(hTrigger, enc(e.Trigger))
	set(hAttempt, nums[tEnd:aEnd])
	set(hRun, nums[aEnd:rEnd])
	set(hPlugin, enc(e.Plugin))
	set(hPluginVersion, enc(e.PluginVersion))
	set(hInvocation, enc(e.Invocation))
	set(hTimeoutMS, nums[rEnd:toEnd])
	set(hPluginError, enc(e.PluginError))
	set(hTraceParent, enc(e.TraceParent))
	set(hReplay, enc(e.Replay))
}

// Header values follow the CloudEvents NATS protocol binding, §3.1.3.2
// ("NATS Header Values"): every ce- value is written percent-encoded, and
// read back with one round of percent-decoding. EncodeHeaderValue and
// DecodeHeaderValue are the one place that does it; Encode and Decode call
// them for every ce- header. content-type is a media type, not a ce- value,
// and is written as is (as the HTTP binding writes Content-Type).

// escapeByte reports whether the binding requires c, one byte of a UTF-8
// string, to be percent-encoded: space, double quote, percent, and
// everything outside printable ASCII (U+0021-U+007E), which covers the
// control characters and every byte of a multi-byte character.
func escapeByte(c byte) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '%' }

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c | 0x20 - 'a' + 10
}

// EncodeHeaderValue percent-encodes v as the CloudEvents NATS binding
// requires of a header value: each byte of space, '"', '%' and of every
// character outside printable ASCII becomes %XY, upper-case hex, from the
// character's UTF-8 bytes ("Euro €" is "Euro%20%E2%82%AC"). A CloudEvents
// string is Unicode: bytes of v that are not UTF-8 are written as U+FFFD.
// A value that needs no escape is returned as is, without allocating.
func EncodeHeaderValue(v string) string {
	n := 0
	for i := 0; i < len(v); i++ {
		if escapeByte(v[i]) {
			n++
		}
	}
	if n == 0 {
		return v
	}
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
		n = 0
		for i := 0; i < len(v); i++ {
			if escapeByte(v[i]) {
				n++
			}
		}
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(v)+2*n)
	for i := 0; i < len(v); i++ {
		if c := v[i]; escapeByte(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// DecodeHeaderValue reads a header value written as the CloudEvents NATS
// binding says: a value that is one RFC 7230 quoted-string (which older
// senders may write) is unquoted first; then %XY escapes, in either case,
// are decoded, once. The result must be UTF-8, or the value is refused with
// ErrInvalidEvent (the binding rejects, for one, the overlong "%C0%A0").
//
// Protocol version 1 wrote values verbatim. So that its logs read as they
// did, a '%' not followed by two hex digits is kept as it is ("100% sure"),
// as are bytes that needed escaping but were written raw (UTF-8 text, a
// space). A version 1 value that happens to hold %XY, or to be exactly one
// quoted-string, reads decoded: the two versions cannot be told apart there.
func DecodeHeaderValue(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' {
		if u, ok := unquote(v); ok {
			v = u
		}
	}
	i := strings.IndexByte(v, '%')
	if i < 0 {
		if !utf8.ValidString(v) {
			return "", fmt.Errorf("%w: header value %q is not UTF-8", ErrInvalidEvent, v)
		}
		return v, nil
	}
	b := make([]byte, i, len(v))
	copy(b, v)
	for ; i < len(v); i++ {
		c := v[i]
		if c == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			c = unhex(v[i+1])<<4 | unhex(v[i+2])
			i += 2
		}
		b = append(b, c)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: header value %q does not decode to UTF-8", ErrInvalidEvent, v)
	}
	return string(b), nil
}

// unquote reads s as one RFC 7230 quoted-string (DQUOTE *(qdtext /
// quoted-pair) DQUOTE) and returns its content; ok is false when s is not
// exactly one.
func unquote(s string) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s)-1 {
				return "", false // the closing quote is escaped
			}
			i++
			c = s[i]
			if c < ' ' && c != '\t' || c == 0x7f {
				return "", false
			}
		case c == '"':
			return "", false
		case c < ' ' && c != '\t' || c == 0x7f:
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// headerGet is case-insensitive: NATS clients in other languages may
// canonicalise header names.
func headerGet(h Headers, k string) string {
	if v, ok := h[k]; ok && len(v) > 0 {
		return v[0]
	}
	// Several spellings of one name: take the least in byte order, so that
	// the same message always decodes the same way (map order is random).
	var best string
	var val string
	for hk, v := range h {
		if len(v) > 0 && strings.EqualFold(hk, k) && (best == "" || hk < best) {
			best, val = hk, v[0]
		}
	}
	return val
}

// HeaderValue returns the value of header k, matching its name without
// regard to case as Decode does (clients in other languages may spell
// header names differently), and percent-decoded as Decode decodes a ce-
// value; a value that does not decode is returned as it is.
func HeaderValue(h Headers, k string) string {
	v := headerGet(h, k)
	if len(k) >= len(HeaderPrefix) && strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
		if d, err := DecodeHeaderValue(v); err == nil {
			return d
		}
	}
	return v
}

// otherSpellings reports whether some header name is one of ours (ce-...
// or content-type) spelled otherwise than in lower case. When none is, an
// exact lookup finds everything headerGet would: the case-insensitive scan,
// which costs more than the rest of Decode, is skipped.
func otherSpellings(h Headers) bool {
	for k := range h {
		ours := len(k) >= 3 && k[0]|0x20 == 'c' && k[1]|0x20 == 'e' && k[2] == '-' ||
			strings.EqualFold(k, HeaderContentType)
		if !ours {
			continue
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; c >= 0x80 || 'A' <= c && c <= 'Z' {
				return true
			}
		}
	}
	return false
}

// HeaderEchoStream is the header JetStream puts first on its answer to a
// direct get (with Nats-Subject, Nats-Sequence and Nats-Time-Stamp). No
// writer of events sets it.
const HeaderEchoStream = "Nats-Stream"

// CheckNotEcho refuses a message that is JetStream's answer to a direct get.
// NATS checks the subject a client publishes on, never its reply subject,
// and the server sends its answer to the reply subject, where any stream
// that holds that subject stores it: a plugin allowed to read its own state
// by direct get has the message it stored there (headers and body of its
// choosing, Nats-Msg-Id included) echoed onto any subject, an executor's
// own among them. The answer always carries HeaderEchoStream, which the
// requester cannot take off. Every reader of events (Decode, and a phase
// message's reader) applies this rule.
func CheckNotEcho(h Headers) error {
	if v, ok := h[HeaderEchoStream]; ok {
		return fmt.Errorf("%w: a %s header (%q): the message is JetStream's answer to a direct get, sent to a reply subject its requester chose, not an event anyone wrote", ErrInvalidEvent, HeaderEchoStream, v)
	}
	return nil
}

// Decode reads an event from NATS headers and data, and validates it.
func Decode(h Headers, data []byte) (Event, error) {
	if err := CheckNotEcho(h); err != nil {
		return Event{}, err
	}
	fold := otherSpellings(h)
	raw := func(h Headers, k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		if fold {
			return headerGet(h, k)
		}
		return ""
	}
	// Every ce- value is percent-decoded (content-type is not a ce- value);
	// the first value that does not decode makes the event invalid.
	var badValue error
	get := func(h Headers, k string) string {
		v := raw(h, k)
		if k == HeaderContentType {
			return v
		}
		d, err := DecodeHeaderValue(v)
		if err != nil {
			if badValue == nil {
				badValue = fmt.Errorf("%s: %w", k, err)
			}
			return v
		}
		return d
	}
	e := Event{
		ID:              get(h, hID),
		Source:          get(h, hSource),
		Type:            get(h, hType),
		Subject:         get(h, hSubject),
		DataContentType: get(h, HeaderContentType),
		Data:            data,
		TaskID:          get(h, hTaskID),
		TaskName:        get(h, hTaskName),
		Trigger:         get(h, hTrigger),
		Plugin:          get(h, hPlugin),
		PluginVersion:   get(h, hPluginVersion),
		Invocation:      get(h, hInvocation),
		PluginError:     get(h, hPluginError),
		TraceParent:     get(h, hTraceParent),
		Replay:          get(h, hReplay),
	}
	if badValue != nil {
		return e, badValue
	}
	if v := get(h, hSpecVersion); v != SpecVersion {
		return e, fmt.Errorf("%w: specversion %q, want %q", ErrInvalidEvent, v, SpecVersion)
	}
	if t := get(h, hTime); t != "" {
		tm, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return e, fmt.Errorf("%w: time %q: %w", ErrInvalidEvent, t, err)
		}
		e.Time = tm
	}
	for _, f := range [...]struct {
		name, header string
		dst          *int
	}{{ExtAttempt, hAttempt, &e.Attempt}, {ExtRun, hRun, &e.Run}, {ExtTimeoutMS, hTimeoutMS, &e.TimeoutMS}} {
		if s := get(h, f.header); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return e, fmt.Errorf("%w: %s %q is not a non-negative integer", ErrInvalidEvent, f.name, s)
			}
			*f.dst = n
		}
	}
	return e, e.Validate()
}

// Validate checks the attributes CloudEvents requires and the ones qtasks
// relies on for the event's type.
func (e *Event) Validate() error {
	var errs []error
	if strings.TrimSpace(e.ID) == "" {
		errs = append(errs, errors.New("id is empty"))
	}
	if strings.TrimSpace(e.Source) == "" {
		errs = append(errs, errors.New("source is empty"))
	} else if !plainSource(e.Source) {
		if _, err := url.Parse(e.Source); err != nil {
			errs = append(errs, fmt.Errorf("source %q is not a URI reference", e.Source))
		}
	}
	if !e.Time.IsZero() {
		// Encode writes the time in UTC; RFC 3339 has four-digit years only.
		if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
			errs = append(errs, fmt.Errorf("time %s is outside the years 0000-9999 in UTC", e.Time.Format(time.RFC3339Nano)))
		}
	}
	if e.Subject != "" && strings.TrimSpace(e.Subject) == "" {
		errs = append(errs, errors.New("subject is blank"))
	}
	if e.DataContentType != "" && !plainContentType(e.DataContentType) {
		if _, _, err := mime.ParseMediaType(e.DataContentType); err != nil {
			errs = append(errs, fmt.Errorf("data content type %q: %w", e.DataContentType, err))
		}
	}
	if e.Type == "" {
		errs = append(errs, errors.New("type is empty"))
	}
	if len(e.Data) > MaxDataSize {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(e.Data), MaxDataSize)
	}
	switch {
	case strings.HasPrefix(e.Type, TypeTriggerPrefix), strings.HasPrefix(e.Type, TypeInvokePrefix):
		name, ok := strings.CutPrefix(e.Type, TypeTriggerPrefix)
		if !ok {
			name = strings.TrimPrefix(e.Type, TypeInvokePrefix)
		}
		if _, ok := Lookup(name); !ok {
			errs = append(errs, fmt.Errorf("unknown trigger %q", name))
		}
		if e.Trigger != name {
			errs = append(errs, fmt.Errorf("trigger attribute %q does not match type %q", e.Trigger, e.Type))
		}
		if strings.HasPrefix(e.Type, TypeInvokePrefix) && e.Plugin == "" {
			errs = append(errs, errors.New("invocation without plugin"))
		}
	case e.Type == TypePatch:
		if e.Invocation == "" {
			errs = append(errs, errors.New("patch without invocation attribute"))
		}
		if e.Plugin == "" {
			errs = append(errs, errors.New("patch without plugin"))
		}
		if ct := mediaType(e.DataContentType); len(e.Data) > 0 && e.PluginError == "" && ct != ContentTypeJSONPatch && ct != ContentTypeMergePatch {
			errs = append(errs, fmt.Errorf("patch content type %q, want %s or %s", e.DataContentType, ContentTypeJSONPatch, ContentTypeMergePatch))
		}
	case e.Type == TypeTask, e.Type == TypeDeadLetter, e.Type == TypeAlert, e.Type == TypeSeal, e.Type == TypeOperator,
		e.Type == TypeDuplicate, e.Type == TypeSchedule, e.Type == TypeState, e.Type == TypeChain, e.Type == TypeLimit:
	default:
		errs = append(errs, fmt.Errorf("type %q is not a qtasks event type", e.Type))
	}
	if e.TaskID != "" && !ValidToken(e.TaskID) {
		errs = append(errs, fmt.Errorf("task id %q is not a valid subject token", e.TaskID))
	}
	if e.Plugin != "" && !ValidToken(e.Plugin) {
		errs = append(errs, fmt.Errorf("plugin name %q is not a valid subject token", e.Plugin))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}

// plainSource reports whether s is made only of letters, digits and
// "-._~/", as the sources qtasks writes are ("qtasks/NODE",
// "qtasks/plugin/NAME"): url.Parse accepts every such string (no scheme,
// query, fragment or escape), so Validate, which runs for every event the
// projection reads, need not call it.
func plainSource(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainSourceByte(s[i]) {
			return false
		}
	}
	return true
}

// plainSourceByte reports whether c may be in a plain source.
func plainSourceByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' ||
		c == '~' || c == '/'
}

// plainContentType reports whether ct is one of the content types qtasks
// writes, which mime.ParseMediaType accepts.
func plainContentType(ct string) bool {
	return ct == ContentTypeJSON || ct == ContentTypeJSONPatch || ct == ContentTypeMergePatch
}
