// Package spans is what the executor's and the plugin runner's
// OpenTelemetry spans share: attribute names and the passage of a span
// context through ce-traceparent. It depends on the OpenTelemetry API
// only, never on an SDK or exporter (internal/telemetry sets those up).
package spans

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of qtasks' spans.
const Scope = "github.com/qtasks/qtasks-go"

// Attribute keys of qtasks' spans.
const (
	TaskID     = attribute.Key("qtasks.task.id")
	TaskName   = attribute.Key("qtasks.task.name")
	Attempt    = attribute.Key("qtasks.attempt")
	Run        = attribute.Key("qtasks.run")
	Queue      = attribute.Key("qtasks.queue")
	Status     = attribute.Key("qtasks.status")
	Trigger    = attribute.Key("qtasks.trigger")
	Plugins    = attribute.Key("qtasks.plugins")
	Plugin     = attribute.Key("qtasks.plugin")
	Version    = attribute.Key("qtasks.plugin.version")
	Invocation = attribute.Key("qtasks.invocation")
	Outcome    = attribute.Key("qtasks.outcome")
	Shadow     = attribute.Key("qtasks.shadow")
)

// WithTraceParent returns ctx with traceparent (a W3C traceparent, as
// ce-traceparent carries it) as its remote parent span, unless ctx has a
// span already or traceparent is empty or invalid.
func WithTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, carrier(traceparent))
}

// carrier carries one traceparent, with no map to allocate.
type carrier string

func (c carrier) Get(key string) string {
	if key == "traceparent" {
		return string(c)
	}
	return ""
}

func (carrier) Set(string, string) {}
func (carrier) Keys() []string     { return []string{"traceparent"} }

// TraceParent is the W3C traceparent of span, or "" when span has no
// valid context.
func TraceParent(span trace.Span) string {
	sc := span.SpanContext()
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
	return c["traceparent"]
}
