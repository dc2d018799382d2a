package retry_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/retry"
)

// call is an invocation of worker_task_error_retry with payload.
func call(payload string) *plugins.Call {
	return &plugins.Call{
		Trigger: events.WorkerTaskErrorRetry, TaskID: "t1", TaskName: "job", Attempt: 1, Run: 1,
		Payload: json.RawMessage(payload),
	}
}

const pathErrPayload = `{"model":{"id":"t1","task_name":"job","status":"retry","attempt":2,"retry":0},
	"error":"loading: open /nope: file does not exist",
	"errors":[{"type":"*fmt.wrapError","message":"loading: open /nope: file does not exist"},
	          {"type":"*fs.PathError","message":"open /nope: file does not exist"},
	          {"type":"*errors.errorString","message":"file does not exist"}]}`

func TestDecide(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     retry.Config
		payload string
		patch   string // merge patch expected; "" for none
	}{
		{"NoRulesNoBackoff", retry.Config{}, pathErrPayload, ""},
		{
			"BackoffByAttempt",
			retry.Config{Backoff: retry.List{time.Second, 3 * time.Second}},
			pathErrPayload,
			`{"model":{"delay_ms":3000}}`,
		},
		{
			"RetryOnTypeDeepInChain",
			retry.Config{RetryOn: []retry.Match{{Type: "*fs.PathError"}}, Backoff: retry.Fixed(time.Second)},
			pathErrPayload, `{"model":{"delay_ms":1000}}`,
		},
		{
			"RetryOnTypeIsExact",
			retry.Config{RetryOn: []retry.Match{{Type: "fs.PathError"}}},
			pathErrPayload,
			`{"model":{"status":"error"}}`,
		},
		{"RetryOnMessage", retry.Config{RetryOn: []retry.Match{{Message: "does not exist"}}}, pathErrPayload, ""},
		{
			"RetryOnTypeAndMessageOnOneError",
			retry.Config{RetryOn: []retry.Match{{Type: "*errors.errorString", Message: "open"}}},
			pathErrPayload, `{"model":{"status":"error"}}`,
		},
		{
			"RetryOnNothingMatches",
			retry.Config{RetryOn: []retry.Match{{Type: "*net.OpError"}, {Message: "timeout"}}},
			pathErrPayload, `{"model":{"status":"error"}}`,
		},
		{
			"NeverRetryType",
			retry.Config{NeverRetry: []retry.Match{{Type: "*fs.PathError"}}, Backoff: retry.Fixed(time.Second)},
			pathErrPayload, `{"model":{"status":"error"}}`,
		},
		{"NeverRetryWinsOverRetryOn", retry.Config{
			RetryOn:    []retry.Match{{Message: "loading"}},
			NeverRetry: []retry.Match{{Message: "does not exist"}},
		}, pathErrPayload, `{"model":{"status":"error"}}`},
		{
			"NoChainFallsBackToErrorText",
			retry.Config{RetryOn: []retry.Match{{Message: "timeout"}}},
			`{"model":{"status":"retry","attempt":1},"error":"dial: i/o timeout"}`, "",
		},
		{
			"NoChainTypesCannotMatch",
			retry.Config{RetryOn: []retry.Match{{Type: "*net.OpError"}}},
			`{"model":{"status":"retry","attempt":1},"error":"dial: i/o timeout"}`, `{"model":{"status":"error"}}`,
		},
		{
			"AlreadyVetoed",
			retry.Config{Backoff: retry.Fixed(time.Second)},
			`{"model":{"status":"error","attempt":1},"error":"x"}`, "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := retry.New(tt.cfg)
			require.NoError(t, err)
			patch, err := p.Trigger(context.Background(), call(tt.payload))
			require.NoError(t, err)
			if tt.patch == "" {
				require.Nil(t, patch)
				return
			}
			require.NotNil(t, patch)
			require.Equal(t, events.ContentTypeMergePatch, patch.ContentType)
			require.JSONEq(t, tt.patch, string(patch.Body))
			// The patch keeps to what the trigger's contract allows.
			tr, _ := events.Lookup(events.WorkerTaskErrorRetry)
			_, err = events.ApplyPatch(tr, json.RawMessage(tt.payload), patch.ContentType, patch.Body)
			require.NoError(t, err)
		})
	}

	t.Run("VetoReason", func(t *testing.T) {
		t.Parallel()
		p, err := retry.New(retry.Config{NeverRetry: []retry.Match{{Type: "*fs.PathError"}}})
		require.NoError(t, err)
		var pl retry.Payload
		require.NoError(t, json.Unmarshal([]byte(pathErrPayload), &pl))
		d := p.Decide(pl)
		require.False(t, d.Retry)
		require.Equal(t, `error *fs.PathError ("open /nope: file does not exist") matches NeverRetry *fs.PathError`, d.Reason)
	})
}

// A payload the plugin cannot read is an error, which its failure policy
// turns into the task's fate.
func TestOddPayload(t *testing.T) {
	t.Parallel()
	p, err := retry.New(retry.Config{Backoff: retry.Fixed(time.Second)})
	require.NoError(t, err)
	for payload, want := range map[string]string{
		`{"error":"boom"}`:                                     "payload has no model",
		`{"model":null,"error":"boom"}`:                        "payload has no model",
		`{"model":"retry","error":"boom"}`:                     "decoding worker_task_error_retry payload",
		`{"model":{"status":"retry","delay_ms":"soon"}}`:       "decoding worker_task_error_retry payload",
		`{"model":{"status":"retry","attempt":0},"error":"x"}`: "model has attempt 0",
		`[1,2]`: "decoding worker_task_error_retry payload",
		`{"model":{"status":"retry","attempt":1},"errors":{}}`: "decoding worker_task_error_retry payload",
	} {
		patch, err := p.Trigger(context.Background(), call(payload))
		require.Nil(t, patch, payload)
		require.ErrorContains(t, err, want, payload)
	}
}
