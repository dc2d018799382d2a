package executor_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// recordingProvider is a tracer provider that samples every span and keeps
// the ended ones in memory.
func recordingProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// spansOf returns the ended spans of trace id, by name.
func spansOf(exp *tracetest.InMemoryExporter, id trace.TraceID) map[string][]tracetest.SpanStub {
	out := map[string][]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == id {
			out[s.Name] = append(out[s.Name], s)
		}
	}
	return out
}

// One task with a plugin in another "process" (its own bus connection and
// its own tracer provider, as a plugin command has): the attempt's span is
// a child of the submission's traceparent, the firing of the trigger with
// the plugin a child of the attempt, the plugin call a child of the firing,
// and the plugin's span, exported by the other provider, a child of the
// call, all in the submission's trace. Firings without plugins have no
// span. Facts keep the submission's traceparent; the invocation carries
// the call's.
func TestTracingAcrossProcesses(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	execTP, execSpans := recordingProvider(t)
	app := newApp(t, b, &executor.Config{TracerProvider: execTP})
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) {
		return in.A + in.B, nil
	}, nil)

	plugTP, plugSpans := recordingProvider(t)
	pb := bustest.Connect(t, b, &bus.Config{Name: "plugin-process"})
	startPlugin(t, pb, plugins.Spec{
		Name: "tenfold", Version: "1", Triggers: []string{events.TaskExecutorRunTask},
		TracerProvider: plugTP,
		Plugin: plugins.Func(func(_ context.Context, _ *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"result": 30})
		}),
	})
	bustest.WaitFor(t, waitLimit, "the registry to show the plugin", func() bool {
		return len(b.Registry().Chain(events.TaskExecutorRunTask)) == 1
	})
	start(t, app)

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sub := submit(t, app, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{TraceParent: tp})
	got := waitTask(t, app, sub.ID)
	require.Equal(t, events.StatusSuccess, got.Status)
	require.JSONEq(t, `30`, string(got.Result))

	traceID, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	require.NoError(t, err)
	var ex map[string][]tracetest.SpanStub
	// The attempt's span ends once its run returns, a moment after the
	// record says success.
	bustest.WaitFor(t, waitLimit, "the attempt's span", func() bool {
		ex = spansOf(execSpans, traceID)
		return len(ex["task add"]) == 1
	})
	attempt := ex["task add"][0]
	require.Equal(t, "00f067aa0ba902b7", attempt.Parent.SpanID().String(), "the attempt's parent is the submission's span")
	require.True(t, attempt.Parent.IsRemote())
	require.Contains(t, attempt.Attributes, attrString("qtasks.status", events.StatusSuccess))
	require.Contains(t, attempt.Attributes, attrString("qtasks.task.id", sub.ID))

	var firings []tracetest.SpanStub
	for name, ss := range ex {
		if strings.HasPrefix(name, "trigger ") {
			firings = append(firings, ss...)
		}
	}
	require.Len(t, firings, 1, "only the firing with a plugin has a span: %v", firings)
	firing := firings[0]
	require.Equal(t, "trigger "+events.TaskExecutorRunTask, firing.Name)
	require.Equal(t, attempt.SpanContext.SpanID(), firing.Parent.SpanID())

	require.Len(t, ex["invoke tenfold"], 1)
	call := ex["invoke tenfold"][0]
	require.Equal(t, firing.SpanContext.SpanID(), call.Parent.SpanID())
	require.Equal(t, trace.SpanKindClient, call.SpanKind)
	require.Contains(t, call.Attributes, attrString("qtasks.outcome", string(events.OutcomeApplied)))

	// The plugin's side, exported by the other process's provider.
	pl := spansOf(plugSpans, traceID)["plugin tenfold"]
	require.Len(t, pl, 1)
	require.Equal(t, call.SpanContext.SpanID(), pl[0].Parent.SpanID(), "the plugin's span is the call's child")
	require.True(t, pl[0].Parent.IsRemote())
	require.Equal(t, trace.SpanKindServer, pl[0].SpanKind)

	// On the wire: the invocation carries the call's context, the fact the
	// submission's.
	invs := bustest.EventsOf(t, b, sub.ID, events.InvokeSubject("tenfold", events.TaskExecutorRunTask))
	require.Len(t, invs, 1)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-"+call.SpanContext.SpanID().String()+"-01", invs[0].Event.TraceParent)
	fs := facts(t, b, events.TaskExecutorRunTask, sub.ID)
	require.Len(t, fs, 1)
	require.Equal(t, tp, fs[0].Event.TraceParent)
}

// With tracing off (the default: the global provider, a no-op) the
// invocation carries the submission's traceparent unchanged.
func TestTracingOffKeepsTraceParent(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) {
		return in.A + in.B, nil
	}, nil)
	startPlugin(t, b, plugins.Spec{
		Name: "same", Version: "1", Triggers: []string{events.TaskExecutorRunTask},
		Plugin: plugins.Func(func(_ context.Context, _ *plugins.Call) (*plugins.Patch, error) { return nil, nil }), //nolint:nilnil // no patch: the Plugin contract's "no change"
	})
	bustest.WaitFor(t, waitLimit, "the registry to show the plugin", func() bool {
		return len(b.Registry().Chain(events.TaskExecutorRunTask)) == 1
	})
	start(t, app)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	sub := submit(t, app, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{TraceParent: tp})
	require.Equal(t, events.StatusSuccess, waitTask(t, app, sub.ID).Status)
	invs := bustest.EventsOf(t, b, sub.ID, events.InvokeSubject("same", events.TaskExecutorRunTask))
	require.Len(t, invs, 1)
	require.Equal(t, tp, invs[0].Event.TraceParent)
}

func attrString(k, v string) attribute.KeyValue { return attribute.String(k, v) }
