package events

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"
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

// MaxPayloadSize bounds a task's arguments (args and kw together) and its
// result, so that a fact, which carries a trigger's payload before and after
// the plugins, stays under MaxDataSize.
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
	set(hSpecVersion, SpecVersion)
	set(hID, e.ID)
	set(hSource, e.Source)
	set(hType, e.Type)
	set(hSubject, e.Subject)
	set(hTime, nums[:tEnd])
	set(HeaderContentType, e.DataContentType)
	set(hTaskID, e.TaskID)
	set(hTaskName, e.TaskName)
	set(hTrigger, e.Trigger)
	set(hAttempt, nums[tEnd:aEnd])
	set(hRun, nums[aEnd:rEnd])
	set(hPlugin, e.Plugin)
	set(hPluginVersion, e.PluginVersion)
	set(hInvocation, e.Invocation)
	set(hTimeoutMS, nums[rEnd:toEnd])
	set(hPluginError, e.PluginError)
	set(hTraceParent, e.TraceParent)
	set(hReplay, e.Replay)
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
// regard to case as Decode does: clients in other languages may spell
// header names differently.
func HeaderValue(h Headers, k string) string { return headerGet(h, k) }

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

// Decode reads an event from NATS headers and data, and validates it.
func Decode(h Headers, data []byte) (Event, error) {
	fold := otherSpellings(h)
	get := func(h Headers, k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		if fold {
			return headerGet(h, k)
		}
		return ""
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
	if v := get(h, hSpecVersion); v != SpecVersion {
		return e, fmt.Errorf("%w: specversion %q, want %q", ErrInvalidEvent, v, SpecVersion)
	}
	if t := get(h, hTime); t != "" {
		tm, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return e, fmt.Errorf("%w: time %q: %v", ErrInvalidEvent, t, err)
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
			errs = append(errs, fmt.Errorf("data content type %q: %v", e.DataContentType, err))
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
	case e.Type == TypeTask, e.Type == TypeDeadLetter, e.Type == TypeOperator:
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
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' ||
			c == '~' || c == '/') {
			return false
		}
	}
	return true
}

// plainContentType reports whether ct is one of the content types qtasks
// writes, which mime.ParseMediaType accepts.
func plainContentType(ct string) bool {
	return ct == ContentTypeJSON || ct == ContentTypeJSONPatch || ct == ContentTypeMergePatch
}
