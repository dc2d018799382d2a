package e2e_test

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// otlpSpan is a span as an OTLP receiver got it.
type otlpSpan struct{ name, traceID, spanID, parentID string }

// otlpReceiver is an OTLP/HTTP trace receiver on loopback.
func otlpReceiver(t *testing.T) (url string, spans func() []otlpSpan) {
	t.Helper()
	var mu sync.Mutex
	var got []otlpSpan
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					got = append(got, otlpSpan{s.Name, hex.EncodeToString(s.TraceId), hex.EncodeToString(s.SpanId), hex.EncodeToString(s.ParentSpanId)})
				}
			}
		}
		mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []otlpSpan {
		mu.Lock()
		defer mu.Unlock()
		return append([]otlpSpan(nil), got...)
	}
}

// A plugin command in its own OS process, with OTEL_EXPORTER_OTLP_ENDPOINT
// set, exports a span per invocation it answers whose parent is the
// executor's span of that call (recorded here in memory): one trace across
// the two processes, joined through the invocation's ce-traceparent.
func TestTraceAcrossProcesses(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	url, received := otlpReceiver(t)
	schema := filepath.Join(t.TempDir(), "add.json")
	require.NoError(t, os.WriteFile(schema, []byte(`{"type":"object"}`), 0o600))
	cmd := testkit.Command(testkit.Build(t, commands["qtasks-validate"]), "--nats-url", b.ClientURL(), "--schema", "add="+schema)
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT="+url, "OTEL_TRACES_EXPORTER=", "OTEL_SDK_DISABLED=")
	plugin := testkit.StartProcCmd(t, cmd)
	plugin.WaitLine("ready", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bustest.WaitFor(t, 30*time.Second, "the registry to show the plugin", func() bool {
		return len(b.Registry().Chain(events.TaskExecutorArgsReplace)) == 1
	})

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	app, err := executor.New(b, &executor.Config{AckWait: 2 * time.Second, TracerProvider: tp})
	require.NoError(t, err)
	type in struct{ A int }
	executor.MustRegister(app, "add", func(context.Context, in) (int, error) { return 1, nil }, nil)
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.Background()) })
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	sub, err := app.Submit(ctx, "add", in{A: 1}, &executor.SubmitOptions{TraceParent: "00-" + traceID + "-00f067aa0ba902b7-01"})
	require.NoError(t, err)
	final, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, final.Status)

	// Two calls: at submission (qtasks_add_task_before_broker) and in the
	// worker (task_executor_args_replace).
	var calls []string
	bustest.WaitFor(t, 30*time.Second, "the executor's call spans", func() bool {
		calls = calls[:0]
		for _, s := range exp.GetSpans() {
			if s.Name == "invoke validate" && s.SpanContext.TraceID().String() == traceID {
				calls = append(calls, s.SpanContext.SpanID().String())
			}
		}
		return len(calls) == 2
	})

	// SIGTERM: the plugin stops and flushes its spans before it exits.
	plugin.Signal(syscall.SIGTERM)
	require.Equal(t, 0, plugin.Wait(procLimit))
	var parents []string
	for _, s := range received() {
		if s.name == "plugin validate" {
			require.Equal(t, traceID, s.traceID)
			parents = append(parents, s.parentID)
		}
	}
	sort.Strings(calls)
	sort.Strings(parents)
	require.Equal(t, calls, parents, "each plugin span's parent is the executor's span of its call")
}
