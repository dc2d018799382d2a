package events

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	ce "github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"
)

// fullEvent has every field set.
func fullEvent() Event {
	return Event{
		ID:              "evt-1",
		Source:          "qtasks/node-1",
		Type:            TypeInvokePrefix + TaskExecutorArgsReplace,
		Subject:         "task-1",
		Time:            time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC),
		DataContentType: ContentTypeJSON,
		Data:            []byte(`{"args":[1,2],"kw":{"a":"b"}}`),
		TaskID:          "task-1",
		TaskName:        "app.add",
		Trigger:         TaskExecutorArgsReplace,
		Attempt:         2,
		Run:             3,
		Plugin:          "pydantic",
		PluginVersion:   "1.2.3",
		Invocation:      "task-1:2:3:task_executor_args_replace:0:pydantic",
		TimeoutMS:       1500,
		PluginError:     "boom",
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Replay:          "r1",
	}
}

func factEvent() Event {
	return Event{
		ID:              "fact-1",
		Source:          "qtasks/node-1",
		Type:            TypeTriggerPrefix + StorageAdd,
		DataContentType: ContentTypeJSON,
		Data:            []byte(`{"input":{}}`),
		TaskID:          "task-1",
		Trigger:         StorageAdd,
		Attempt:         1,
	}
}

func patchEvent() Event {
	return Event{
		ID:              "patch-1",
		Source:          "plugin/pydantic",
		Type:            TypePatch,
		DataContentType: ContentTypeMergePatch,
		Data:            []byte(`{"kw":{"x":1}}`),
		TaskID:          "task-1",
		Trigger:         TaskExecutorArgsReplace,
		Plugin:          "pydantic",
		Invocation:      "task-1:1:0:task_executor_args_replace:0:pydantic",
	}
}

func encode(e Event) Headers {
	h := Headers{}
	e.Encode(h)
	return h
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()

	for name, e := range map[string]Event{
		"Full":       fullEvent(),
		"Fact":       factEvent(),
		"Patch":      patchEvent(),
		"Task":       {ID: "t", Source: "s", Type: TypeTask},
		"DeadLetter": {ID: "d", Source: "s", Type: TypeDeadLetter, Plugin: "p", Data: []byte(`{}`)},
		"NoData":     {ID: "p", Source: "s", Type: TypePatch, Plugin: "p", Invocation: "i"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, e.Validate())
			h := encode(e)
			got, err := Decode(h, e.Data)
			require.NoError(t, err)
			require.Equal(t, e, got)
		})
	}

	t.Run("Headers", func(t *testing.T) {
		t.Parallel()
		h := encode(fullEvent())
		require.Equal(t, Headers{
			"ce-specversion":   {"1.0"},
			"ce-id":            {"evt-1"},
			"ce-source":        {"qtasks/node-1"},
			"ce-type":          {"io.qtasks.invoke.task_executor_args_replace"},
			"ce-subject":       {"task-1"},
			"ce-time":          {"2025-03-04T05:06:07.891011121Z"},
			"content-type":     {"application/json"},
			"ce-taskid":        {"task-1"},
			"ce-taskname":      {"app.add"},
			"ce-trigger":       {"task_executor_args_replace"},
			"ce-attempt":       {"2"},
			"ce-run":           {"3"},
			"ce-plugin":        {"pydantic"},
			"ce-pluginversion": {"1.2.3"},
			"ce-invocation":    {"task-1:2:3:task_executor_args_replace:0:pydantic"},
			"ce-timeoutms":     {"1500"},
			"ce-pluginerror":   {"boom"},
			"ce-traceparent":   {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			"ce-replay":        {"r1"},
		}, h)
	})

	t.Run("ZeroFieldsOmitted", func(t *testing.T) {
		t.Parallel()
		h := encode(Event{ID: "t", Source: "s", Type: TypeTask})
		require.Equal(t, Headers{
			"ce-specversion": {"1.0"},
			"ce-id":          {"t"},
			"ce-source":      {"s"},
			"ce-type":        {TypeTask},
		}, h)
	})

	t.Run("TimeIsWrittenInUTC", func(t *testing.T) {
		t.Parallel()
		e := factEvent()
		e.Time = time.Date(2025, 1, 1, 12, 0, 0, 0, time.FixedZone("X", 2*3600))
		h := encode(e)
		require.Equal(t, []string{"2025-01-01T10:00:00Z"}, h["ce-time"])
		got, err := Decode(h, e.Data)
		require.NoError(t, err)
		require.True(t, e.Time.Equal(got.Time))
	})

	t.Run("ValuesDoNotShareCapacity", func(t *testing.T) {
		t.Parallel()
		// The values share one backing array: adding a value to one header
		// (nats.Header.Add appends) must not overwrite the next one's.
		h := encode(fullEvent())
		h["ce-id"] = append(h["ce-id"], "extra")
		h["ce-time"] = append(h["ce-time"], "extra")
		want := encode(fullEvent())
		want["ce-id"] = []string{"evt-1", "extra"}
		want["ce-time"] = []string{"2025-03-04T05:06:07.891011121Z", "extra"}
		require.Equal(t, want, h)
	})

	t.Run("EncodeKeepsOtherHeaders", func(t *testing.T) {
		t.Parallel()
		h := Headers{HeaderMsgID: {"m1"}}
		e := factEvent()
		e.Encode(h)
		require.Equal(t, []string{"m1"}, h[HeaderMsgID])
		got, err := Decode(h, e.Data)
		require.NoError(t, err)
		require.Equal(t, e, got)
	})
}

// plainSource lets through exactly the bytes it documents, and every string
// of them is one url.Parse accepts. Since it judges byte by byte, the sweep
// of all 256 bytes and the walk of every string up to four bytes over one
// of each kind of allowed byte decide this completely; a fuzz target
// (removed) checked only the second half, and only on its seeds unless run
// with -fuzz.
func TestPlainSource(t *testing.T) {
	t.Parallel()
	for b := range 256 {
		c := byte(b)
		want := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0
		require.Equal(t, want, plainSource("a"+string([]byte{c})), "byte %#x", c)
	}
	const alphabet = "aZ09-._~/"
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		if prefix != "" {
			require.True(t, plainSource(prefix), prefix)
			_, err := url.Parse(prefix)
			require.NoError(t, err, prefix)
		}
		if depth == 0 {
			return
		}
		for i := range len(alphabet) {
			walk(prefix+alphabet[i:i+1], depth-1)
		}
	}
	walk("", 4)
	for _, s := range []string{"qtasks/node-1", "qtasks/plugin/scale", "plugin/pydantic", "//host/x", "/a/b", "a~b.c_d", ""} {
		require.True(t, plainSource(s), s)
	}
	for _, s := range []string{"1:x", "a:b", "http://x", "a b", "a%zz", "a?b", "é", "a\x00b", "a\x7f"} {
		require.False(t, plainSource(s), s)
	}
}

func TestEncodeAllocations(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process's allocations.
	e := fullEvent()
	h := make(Headers, maxHeaders)
	allocs := testing.AllocsPerRun(100, func() {
		clear(h)
		e.Encode(h)
	})
	// The values' backing array and the formatted values' string.
	require.LessOrEqual(t, allocs, 2.0)
}

func TestDecodeHeaderCase(t *testing.T) {
	t.Parallel()

	want := fullEvent()
	variants := map[string]func(string) string{
		"Upper":     strings.ToUpper,
		"Canonical": canonicalMIMEHeaderKey,
		"Mixed": func(k string) string {
			b := []byte(k)
			for i := 0; i < len(b); i += 2 {
				if b[i] >= 'a' && b[i] <= 'z' {
					b[i] -= 'a' - 'A'
				}
			}
			return string(b)
		},
	}
	for name, f := range variants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := Headers{}
			for k, v := range encode(want) {
				h[f(k)] = v
			}
			got, err := Decode(h, want.Data)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}

	t.Run("ExactNameWins", func(t *testing.T) {
		t.Parallel()
		h := encode(factEvent())
		h["CE-ID"] = []string{"other"}
		got, err := Decode(h, factEvent().Data)
		require.NoError(t, err)
		require.Equal(t, "fact-1", got.ID)
	})

	t.Run("SeveralSpellingsDeterministic", func(t *testing.T) {
		t.Parallel()
		h := encode(factEvent())
		delete(h, "ce-id")
		h["CE-ID"] = []string{"upper"}
		h["Ce-Id"] = []string{"canonical"}
		h["cE-iD"] = []string{"odd"}
		for range 50 {
			got, err := Decode(h, factEvent().Data)
			require.NoError(t, err)
			require.Equal(t, "upper", got.ID) // "CE-ID" < "Ce-Id" < "cE-iD"
		}
	})

	t.Run("EmptyValueListIgnored", func(t *testing.T) {
		t.Parallel()
		h := encode(factEvent())
		h["ce-id"] = []string{}
		h["Ce-Id"] = []string{"fallback"}
		got, err := Decode(h, factEvent().Data)
		require.NoError(t, err)
		require.Equal(t, "fallback", got.ID)
	})

	t.Run("FirstValueUsed", func(t *testing.T) {
		t.Parallel()
		h := encode(factEvent())
		h["ce-id"] = []string{"first", "second"}
		got, err := Decode(h, factEvent().Data)
		require.NoError(t, err)
		require.Equal(t, "first", got.ID)
	})
}

// canonicalMIMEHeaderKey mimics textproto.CanonicalMIMEHeaderKey, which
// some NATS clients apply to header names.
func canonicalMIMEHeaderKey(k string) string {
	parts := strings.Split(k, "-")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		base    func() Event
		mutate  func(h Headers)
		data    []byte // nil: the base event's data
		wantErr error
		wantMsg string
	}{
		{
			name: "MissingSpecVersion", base: factEvent, mutate: func(h Headers) { delete(h, "ce-specversion") },
			wantErr: ErrInvalidEvent, wantMsg: "specversion",
		},
		{
			name: "SpecVersion03", base: factEvent, mutate: func(h Headers) { h["ce-specversion"] = []string{"0.3"} },
			wantErr: ErrInvalidEvent, wantMsg: "specversion",
		},
		{
			name: "SpecVersion1", base: factEvent, mutate: func(h Headers) { h["ce-specversion"] = []string{"1"} },
			wantErr: ErrInvalidEvent, wantMsg: "specversion",
		},
		{
			name: "BadTime", base: factEvent, mutate: func(h Headers) { h["ce-time"] = []string{"yesterday"} },
			wantErr: ErrInvalidEvent, wantMsg: "time",
		},
		{
			name: "TimeWithoutZone", base: factEvent, mutate: func(h Headers) { h["ce-time"] = []string{"2025-01-01T00:00:00"} },
			wantErr: ErrInvalidEvent, wantMsg: "time",
		},
		{
			name: "TimeBeforeYear0InUTC", base: factEvent, mutate: func(h Headers) { h["ce-time"] = []string{"0000-01-01T00:00:00+00:01"} },
			wantErr: ErrInvalidEvent, wantMsg: "time",
		},
		{
			name: "TimeAfterYear9999InUTC", base: factEvent, mutate: func(h Headers) { h["ce-time"] = []string{"9999-12-31T23:59:59-00:01"} },
			wantErr: ErrInvalidEvent, wantMsg: "time",
		},
		{
			name: "NegativeAttempt", base: factEvent, mutate: func(h Headers) { h["ce-attempt"] = []string{"-1"} },
			wantErr: ErrInvalidEvent, wantMsg: "attempt",
		},
		{
			name: "NonNumericAttempt", base: factEvent, mutate: func(h Headers) { h["ce-attempt"] = []string{"one"} },
			wantErr: ErrInvalidEvent, wantMsg: "attempt",
		},
		{
			name: "NegativeRun", base: factEvent, mutate: func(h Headers) { h["ce-run"] = []string{"-3"} },
			wantErr: ErrInvalidEvent, wantMsg: "run",
		},
		{
			name: "OverflowTimeout", base: factEvent, mutate: func(h Headers) { h["ce-timeoutms"] = []string{"99999999999999999999999"} },
			wantErr: ErrInvalidEvent, wantMsg: "timeoutms",
		},
		{
			name: "MissingID", base: factEvent, mutate: func(h Headers) { delete(h, "ce-id") },
			wantErr: ErrInvalidEvent, wantMsg: "id is empty",
		},
		{
			name: "MissingSource", base: factEvent, mutate: func(h Headers) { delete(h, "ce-source") },
			wantErr: ErrInvalidEvent, wantMsg: "source is empty",
		},
		{
			name: "MissingType", base: factEvent, mutate: func(h Headers) { delete(h, "ce-type") },
			wantErr: ErrInvalidEvent, wantMsg: "type is empty",
		},
		{
			name: "ForeignType", base: factEvent, mutate: func(h Headers) { h["ce-type"] = []string{"com.example.thing"} },
			wantErr: ErrInvalidEvent, wantMsg: "not a qtasks event type",
		},
		{name: "UnknownTrigger", base: factEvent, mutate: func(h Headers) {
			h["ce-type"] = []string{TypeTriggerPrefix + "no_such_trigger"}
			h["ce-trigger"] = []string{"no_such_trigger"}
		}, wantErr: ErrInvalidEvent, wantMsg: "unknown trigger"},
		{
			name: "TriggerMismatch", base: factEvent, mutate: func(h Headers) { h["ce-trigger"] = []string{StorageGet} },
			wantErr: ErrInvalidEvent, wantMsg: "does not match type",
		},
		{
			name: "TriggerMissing", base: factEvent, mutate: func(h Headers) { delete(h, "ce-trigger") },
			wantErr: ErrInvalidEvent, wantMsg: "does not match type",
		},
		{
			name: "InvokeWithoutPlugin", base: fullEvent, mutate: func(h Headers) { delete(h, "ce-plugin") },
			wantErr: ErrInvalidEvent, wantMsg: "invocation without plugin",
		},
		{
			name: "PatchWithoutInvocation", base: patchEvent, mutate: func(h Headers) { delete(h, "ce-invocation") },
			wantErr: ErrInvalidEvent, wantMsg: "patch without invocation",
		},
		{
			name: "PatchWithoutPlugin", base: patchEvent, mutate: func(h Headers) { delete(h, "ce-plugin") },
			wantErr: ErrInvalidEvent, wantMsg: "patch without plugin",
		},
		{
			name: "PatchWrongContentType", base: patchEvent, mutate: func(h Headers) { h["content-type"] = []string{ContentTypeJSON} },
			wantErr: ErrInvalidEvent, wantMsg: "patch content type",
		},
		{
			name: "PatchNoContentType", base: patchEvent, mutate: func(h Headers) { delete(h, "content-type") },
			wantErr: ErrInvalidEvent, wantMsg: "patch content type",
		},
		{
			name: "OversizedData", base: factEvent, data: bytes.Repeat([]byte{'x'}, MaxDataSize+1),
			wantErr: ErrTooLarge,
		},
		{
			name: "TaskIDWithDot", base: factEvent, mutate: func(h Headers) { h["ce-taskid"] = []string{"a.b"} },
			wantErr: ErrInvalidEvent, wantMsg: "task id",
		},
		{
			name: "TaskIDWildcard", base: factEvent, mutate: func(h Headers) { h["ce-taskid"] = []string{"*"} },
			wantErr: ErrInvalidEvent, wantMsg: "task id",
		},
		{
			name: "TaskIDSpace", base: factEvent, mutate: func(h Headers) { h["ce-taskid"] = []string{"a b"} },
			wantErr: ErrInvalidEvent, wantMsg: "task id",
		},
		{
			name: "TaskIDTooLong", base: factEvent, mutate: func(h Headers) { h["ce-taskid"] = []string{strings.Repeat("a", 129)} },
			wantErr: ErrInvalidEvent, wantMsg: "task id",
		},
		{
			name: "PluginWithGreaterThan", base: patchEvent, mutate: func(h Headers) { h["ce-plugin"] = []string{"a>"} },
			wantErr: ErrInvalidEvent, wantMsg: "plugin name",
		},
		{name: "TypeWithExtraToken", base: factEvent, mutate: func(h Headers) {
			h["ce-type"] = []string{TypeTriggerPrefix + "x." + StorageAdd}
		}, wantErr: ErrInvalidEvent, wantMsg: "unknown trigger"},
		{name: "TypeWithBothPrefixes", base: factEvent, mutate: func(h Headers) {
			h["ce-type"] = []string{TypeTriggerPrefix + TypeInvokePrefix + StorageAdd}
		}, wantErr: ErrInvalidEvent, wantMsg: "unknown trigger"},
		{
			name: "BlankID", base: factEvent, mutate: func(h Headers) { h["ce-id"] = []string{"  "} },
			wantErr: ErrInvalidEvent, wantMsg: "id",
		},
		{
			name: "SourceNotURIReference", base: factEvent, mutate: func(h Headers) { h["ce-source"] = []string{"%zz"} },
			wantErr: ErrInvalidEvent, wantMsg: "source",
		},
		{
			name: "BadContentType", base: factEvent, mutate: func(h Headers) { h["content-type"] = []string{"text/plain; charset"} },
			wantErr: ErrInvalidEvent, wantMsg: "content type",
		},
		{
			name: "BlankSubject", base: factEvent, mutate: func(h Headers) { h["ce-subject"] = []string{" "} },
			wantErr: ErrInvalidEvent, wantMsg: "subject",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := tc.base()
			require.NoError(t, e.Validate(), "the base event must be valid")
			h := encode(e)
			if tc.mutate != nil {
				tc.mutate(h)
			}
			data := e.Data
			if tc.data != nil {
				data = tc.data
			}
			_, err := Decode(h, data)
			require.Error(t, err)
			require.ErrorIs(t, err, tc.wantErr)
			if tc.wantMsg != "" {
				require.Contains(t, err.Error(), tc.wantMsg)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()

	t.Run("JoinsAllProblems", func(t *testing.T) {
		t.Parallel()
		e := Event{Type: TypePatch}
		err := e.Validate()
		require.ErrorIs(t, err, ErrInvalidEvent)
		for _, s := range []string{"id is empty", "source is empty", "invocation", "plugin"} {
			require.Contains(t, err.Error(), s)
		}
	})

	t.Run("PatchWithPluginErrorMayCarryAnyData", func(t *testing.T) {
		t.Parallel()
		e := patchEvent()
		e.DataContentType = "text/plain"
		e.Data = []byte("it broke")
		require.ErrorIs(t, e.Validate(), ErrInvalidEvent)
		e.PluginError = "it broke"
		require.NoError(t, e.Validate())
	})

	t.Run("EmptyPatchNeedsNoContentType", func(t *testing.T) {
		t.Parallel()
		e := patchEvent()
		e.DataContentType = ""
		e.Data = nil
		require.NoError(t, e.Validate())
	})

	t.Run("PatchContentTypes", func(t *testing.T) {
		t.Parallel()
		for _, ct := range []string{
			ContentTypeJSONPatch, ContentTypeMergePatch,
			ContentTypeMergePatch + "; charset=utf-8", "Application/JSON-Patch+JSON",
		} {
			e := patchEvent()
			e.DataContentType = ct
			require.NoError(t, e.Validate(), ct)
		}
	})

	t.Run("EveryCatalogTriggerMakesAValidFact", func(t *testing.T) {
		t.Parallel()
		for _, tr := range Catalog() {
			e := Event{ID: "i", Source: "s", Type: TypeTriggerPrefix + tr.Name, Trigger: tr.Name}
			require.NoError(t, e.Validate(), tr.Name)
		}
	})

	t.Run("TimeRange", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			tm time.Time
			ok bool
		}{
			{time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), true},
			{time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), true},
			{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), false},
			{time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC), false},
			{time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("E", 60)), false},
		} {
			e := factEvent()
			e.Time = tc.tm
			err := e.Validate()
			if !tc.ok {
				require.ErrorIs(t, err, ErrInvalidEvent, tc.tm.String())
				continue
			}
			require.NoError(t, err, tc.tm.String())
			got, err := Decode(encode(e), e.Data)
			require.NoError(t, err)
			require.True(t, tc.tm.Equal(got.Time))
		}
	})

	t.Run("TooLargeIsNotInvalid", func(t *testing.T) {
		t.Parallel()
		e := factEvent()
		e.Data = make([]byte, MaxDataSize+1)
		err := e.Validate()
		require.ErrorIs(t, err, ErrTooLarge)
		e.Data = make([]byte, MaxDataSize)
		require.NoError(t, e.Validate())
	})
}

// sdkEventFromHeaders builds a CloudEvents SDK event from NATS headers in
// binary content mode, as the CloudEvents NATS protocol binding describes:
// every ce-* header is an attribute or an extension, its value
// percent-decoded; content-type is datacontenttype.
func sdkEventFromHeaders(t *testing.T, h Headers, data []byte) ce.Event {
	t.Helper()
	ev := ce.New()
	for k, vs := range h {
		require.Len(t, vs, 1, k)
		v := vs[0]
		lk := strings.ToLower(k)
		if lk == HeaderContentType {
			ev.SetDataContentType(v)
			continue
		}
		if !strings.HasPrefix(lk, HeaderPrefix) {
			continue
		}
		v, err := DecodeHeaderValue(v)
		require.NoError(t, err, k)
		switch name := strings.TrimPrefix(lk, HeaderPrefix); name {
		case "specversion":
			ev.SetSpecVersion(v)
		case "id":
			ev.SetID(v)
		case "source":
			ev.SetSource(v)
		case "type":
			ev.SetType(v)
		case "subject":
			ev.SetSubject(v)
		case "time":
			tm, err := time.Parse(time.RFC3339Nano, v)
			require.NoError(t, err)
			ev.SetTime(tm)
		default:
			require.NoError(t, ev.Context.SetExtension(name, v), "extension %q", name)
		}
	}
	if data != nil {
		ev.DataEncoded = data
	}
	return ev
}

// headersFromSDKEvent is the reverse mapping.
func headersFromSDKEvent(t *testing.T, ev ce.Event) Headers {
	t.Helper()
	h := Headers{}
	set := func(k, v string) {
		if v != "" {
			if k != HeaderContentType {
				v = EncodeHeaderValue(v)
			}
			h[k] = []string{v}
		}
	}
	set(HeaderPrefix+"specversion", ev.SpecVersion())
	set(HeaderPrefix+"id", ev.ID())
	set(HeaderPrefix+"source", ev.Source())
	set(HeaderPrefix+"type", ev.Type())
	set(HeaderPrefix+"subject", ev.Subject())
	if !ev.Time().IsZero() {
		set(HeaderPrefix+"time", ev.Time().UTC().Format(time.RFC3339Nano))
	}
	set(HeaderContentType, ev.DataContentType())
	for k, v := range ev.Extensions() {
		s, ok := v.(string)
		require.True(t, ok, "extension %q is %T", k, v)
		set(HeaderPrefix+k, s)
	}
	return h
}

func TestCloudEventsConformance(t *testing.T) {
	t.Parallel()

	t.Run("ExtensionNames", func(t *testing.T) {
		t.Parallel()
		for _, name := range []string{
			ExtTaskID, ExtTaskName, ExtTrigger, ExtAttempt, ExtRun, ExtPlugin,
			ExtPluginVersion, ExtInvocation, ExtTimeoutMS, ExtPluginError,
			ExtTraceParent, ExtReplay,
		} {
			require.True(t, ce.IsExtensionNameValid(name), name)
			require.Equal(t, strings.ToLower(name), name, "names are written lower case")
			// The CloudEvents spec says names SHOULD NOT exceed 20 characters.
			require.LessOrEqual(t, len(name), 20, name)
			ev := ce.New()
			require.NoError(t, ev.Context.SetExtension(name, "v"), name)
			ev.SetExtension(name, "v")
			ev.SetID("i")
			ev.SetSource("s")
			ev.SetType("t")
			require.NoError(t, ev.Validate(), name)
		}
	})

	t.Run("SpecVersion", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, ce.CloudEventsVersionV1, SpecVersion)
	})

	for name, e := range map[string]Event{
		"Full":  fullEvent(),
		"Fact":  factEvent(),
		"Patch": patchEvent(),
		"Task":  {ID: "t", Source: "qtasks/n1", Type: TypeTask, DataContentType: ContentTypeJSON, Data: []byte(`{"id":"t"}`)},
	} {
		t.Run("Binary/"+name, func(t *testing.T) {
			t.Parallel()
			h := encode(e)
			ev := sdkEventFromHeaders(t, h, e.Data)
			require.NoError(t, ev.Validate())
			require.Equal(t, e.ID, ev.ID())
			require.Equal(t, e.Source, ev.Source())
			require.Equal(t, e.Type, ev.Type())
			require.Equal(t, e.Subject, ev.Subject())
			require.Equal(t, e.DataContentType, ev.DataContentType())
			require.True(t, e.Time.Equal(ev.Time()))
			require.Equal(t, e.TaskID, extString(ev, ExtTaskID))
			require.Equal(t, e.Trigger, extString(ev, ExtTrigger))
			require.Equal(t, e.Plugin, extString(ev, ExtPlugin))
			require.Equal(t, e.Invocation, extString(ev, ExtInvocation))
		})

		t.Run("Structured/"+name, func(t *testing.T) {
			t.Parallel()
			ev := sdkEventFromHeaders(t, encode(e), e.Data)
			require.NoError(t, ev.Validate())

			js, err := json.Marshal(ev)
			require.NoError(t, err)
			var back ce.Event
			require.NoError(t, json.Unmarshal(js, &back), string(js))
			require.NoError(t, back.Validate())

			// The attributes survive, and the data compares equal as JSON.
			got, err := Decode(headersFromSDKEvent(t, back), back.Data())
			require.NoError(t, err, string(js))
			if len(e.Data) == 0 {
				require.Empty(t, got.Data)
			} else {
				require.JSONEq(t, string(e.Data), string(got.Data))
			}
			want := e // e is shared with the parallel Binary subtest
			got.Data, want.Data = nil, nil
			require.Equal(t, want, got)
		})
	}

	t.Run("StructuredFromSDK", func(t *testing.T) {
		t.Parallel()
		// An event written by the SDK in structured mode decodes here once
		// its attributes are carried as headers.
		js := `{
			"specversion": "1.0",
			"id": "abc",
			"source": "qtasks/n2",
			"type": "io.qtasks.trigger.worker_add",
			"time": "2024-05-06T07:08:09.123Z",
			"datacontenttype": "application/json",
			"taskid": "t-9",
			"trigger": "worker_add",
			"attempt": "1",
			"data": {"priority": 3}
		}`
		var ev ce.Event
		require.NoError(t, json.Unmarshal([]byte(js), &ev))
		require.NoError(t, ev.Validate())
		got, err := Decode(headersFromSDKEvent(t, ev), ev.Data())
		require.NoError(t, err)
		require.Equal(t, "abc", got.ID)
		require.Equal(t, WorkerAdd, got.Trigger)
		require.Equal(t, "t-9", got.TaskID)
		require.Equal(t, 1, got.Attempt)
		require.Equal(t, time.Date(2024, 5, 6, 7, 8, 9, 123000000, time.UTC), got.Time)
		require.JSONEq(t, `{"priority":3}`, string(got.Data))
	})
}

func extString(ev ce.Event, name string) string {
	v, ok := ev.Extensions()[name]
	if !ok {
		return ""
	}
	s, _ := v.(string)
	return s
}

func TestErrorsAreDistinct(t *testing.T) {
	t.Parallel()
	require.NotErrorIs(t, ErrTooLarge, ErrInvalidEvent)
	require.NotErrorIs(t, ErrInvalidEvent, ErrTooLarge)
}

// BenchmarkEncode is encoding a fact's attributes into a fresh header map,
// as bus.Message does for every event (nats.NewMsg makes it unsized).
func BenchmarkEncode(b *testing.B) {
	e := factEvent()
	e.Subject, e.Time, e.TaskName, e.Run = "task-1", time.Now(), "app.add", 1
	b.ReportAllocs()
	for b.Loop() {
		h := make(Headers)
		e.Encode(h)
	}
}

// BenchmarkDecode is decoding and validating a fact as a consumer receives
// it.
func BenchmarkDecode(b *testing.B) {
	e := factEvent()
	e.Subject, e.Time, e.TaskName, e.Run, e.Source = "task-1", time.Now(), "app.add", 1, "qtasks/node-1"
	h := encode(e)
	h[HeaderMsgID] = []string{"m1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(h, e.Data); err != nil {
			b.Fatal(err)
		}
	}
}
