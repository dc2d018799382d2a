package bus

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// parsePubAck reads every answer as nats.go's encoding/json reading does,
// the shapes its hand parser takes and those it hands on.
func TestParsePubAck(t *testing.T) {
	t.Parallel()
	reference := func(data []byte) (*jetstream.PubAck, error) {
		var resp struct {
			Error *jetstream.APIError `json:"error"`
			*jetstream.PubAck
		}
		if err := json.Unmarshal(data, &resp); err != nil {
			return nil, jetstream.ErrInvalidJSAck
		}
		if resp.Error != nil {
			return nil, resp.Error
		}
		if resp.PubAck == nil || resp.Stream == "" {
			return nil, jetstream.ErrInvalidJSAck
		}
		return resp.PubAck, nil
	}
	for _, data := range []string{
		`{"stream":"EVENTS","seq":1}`,
		`{"stream":"EVENTS","seq":18446744073709551615}`,
		`{"stream":"EVENTS","seq":18446744073709551616}`,
		`{"stream":"KV_tasks","seq":42,"duplicate":true}`,
		`{"stream":"S","domain":"hub","seq":7,"duplicate":false}`,
		`{"seq":7,"stream":"S"}`,
		`{"stream":"S","seq":07}`,
		`{"stream":"S","seq":-1}`,
		`{"stream":"S","seq":1.5}`,
		`{"stream":"S"}`,
		`{"stream":"","seq":3}`,
		`{"seq":3}`,
		`{"stream":"S\u0041","seq":3}`,
		`{ "stream": "S", "seq": 3 }`,
		`{"Stream":"S","seq":3}`,
		`{"stream":"S","seq":3,"batch":"b","count":2}`,
		`{"error":{"code":503,"err_code":10039,"description":"jetstream not enabled"}}`,
		`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"S","seq":0}`,
		`{"stream":"S","seq":3,"duplicate":tru}`,
		`{"stream":"S","seq":3,}`,
		`{"stream":"S",,"seq":3}`,
		`{"stream":"S""seq":3}`,
		`{}`, `{`, `}`, ``, `null`, `[]`, `nonsense`,
	} {
		want, werr := reference([]byte(data))
		got, gerr := parsePubAck([]byte(data))
		require.Equal(t, want, got, data)
		if wantAPI, ok := errors.AsType[*jetstream.APIError](werr); ok {
			var gotAPI *jetstream.APIError
			require.ErrorAs(t, gerr, &gotAPI, data)
			require.Equal(t, *wantAPI, *gotAPI, data)
			continue
		}
		require.Equal(t, werr, gerr, data)
	}
}

// The hand parser takes the server's common answers without encoding/json.
func TestScanPubAckTakesTheCommonAnswers(t *testing.T) {
	t.Parallel()
	for _, data := range []string{`{"stream":"EVENTS","seq":1}`, `{"stream":"KV_tasks","seq":42,"duplicate":true}`, `{"stream":"S","domain":"hub","seq":7}`} {
		_, ok := scanPubAck([]byte(data))
		require.True(t, ok, data)
	}
}

func FuzzParsePubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"EVENTS","seq":1}`))
	f.Add([]byte(`{"stream":"S","domain":"hub","seq":7,"duplicate":true}`))
	f.Add([]byte(`{"error":{"code":503,"err_code":10039,"description":"x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ack, ok := scanPubAck(data)
		if !ok {
			return
		}
		var want jetstream.PubAck
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("scanPubAck took %q, which is not JSON: %v", data, err)
		}
		if want != *ack {
			t.Fatalf("scanPubAck(%q) = %+v, encoding/json reads %+v", data, *ack, want)
		}
		if json.Unmarshal(data, &struct {
			Error *jetstream.APIError `json:"error"`
		}{}) != nil {
			t.Fatalf("%q", data)
		}
	})
}

// BenchmarkParsePubAck: the common PubAck read by hand against
// encoding/json (nats.go's reading).
func BenchmarkParsePubAck(b *testing.B) {
	data := []byte(`{"stream":"EVENTS","seq":123456,"duplicate":true}`)
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parsePubAck(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var resp struct {
				Error *jetstream.APIError `json:"error"`
				*jetstream.PubAck
			}
			if err := json.Unmarshal(data, &resp); err != nil {
				b.Fatal(err)
			}
		}
	})
}
