package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		on      bool
		errWant string
	}{
		{env: nil, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}, on: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, errWant: "otlp (or none)"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, errWant: "http/protobuf only"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: true},
		// The protocol alone asks for nothing.
		{env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, on: false},
	} {
		on, err := enabled(func(k string) string { return c.env[k] })
		if c.errWant != "" {
			require.ErrorContains(t, err, c.errWant, "%v", c.env)
			continue
		}
		require.NoError(t, err, "%v", c.env)
		require.Equal(t, c.on, on, "%v", c.env)
	}
}

// With an OTLP endpoint set, spans reach it over HTTP (protobuf) by the
// time Shutdown returns; without one, Setup makes a no-op provider.
func TestSetupExportsAndFlushes(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := Setup(ctx, "test")
	require.NoError(t, err)
	require.True(t, tr.Enabled)
	_, span := tr.Provider.Tracer("t").Start(ctx, "one")
	span.End()
	require.NoError(t, tr.Shutdown(ctx))
	require.Equal(t, int32(1), posts.Load())

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	tr, err = Setup(ctx, "test")
	require.NoError(t, err)
	require.False(t, tr.Enabled)
	_, span = tr.Provider.Tracer("t").Start(ctx, "none")
	require.False(t, span.SpanContext().IsValid())
	require.NoError(t, tr.Shutdown(ctx))
}
