package executor

// The executor's spans (docs/ARCHITECTURE.md, "Tracing"): one per run of a
// task attempt, a child per firing that invokes plugins, and a child of
// that per plugin call, whose context the invocation carries as
// ce-traceparent so that the plugin's span is the call's child.

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/spans"
)

// startAttempt starts the span of one run of a task attempt, a child of
// the submission's traceparent (a new trace without one).
func (a *App) startAttempt(ctx context.Context, t *events.Task, run int) (context.Context, trace.Span) {
	ctx, span := a.tracer.Start(spans.WithTraceParent(ctx, t.Trace), "task "+t.Name, trace.WithSpanKind(trace.SpanKindConsumer))
	// Attributes are set only on a span that records them: with tracing
	// off, building them is most of what a span costs.
	if span.IsRecording() {
		span.SetAttributes(spans.TaskID.String(t.ID), spans.TaskName.String(t.Name),
			spans.Attempt.Int(t.Attempt), spans.Run.Int(run), spans.Queue.String(t.Queue))
	}
	return ctx, span
}

// endAttempt ends the span of a run that returned err (nil once the
// attempt is decided).
func endAttempt(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, "run interrupted: "+err.Error())
	}
	span.End()
}

// noteFinal records the attempt's final status on its span.
func noteFinal(ctx context.Context, final *events.Task) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(spans.Status.String(final.Status))
	if final.Status == events.StatusError {
		span.SetStatus(codes.Error, final.Error)
	}
}

// startFiring starts the span of a firing of trigger that invokes plugins.
// Submission-time firings (no attempt span in ctx) are children of the
// submission's traceparent.
func (f *firing) startFiring(ctx context.Context, trigger string, plugins int) (context.Context, trace.Span) {
	ctx, span := f.a.tracer.Start(spans.WithTraceParent(ctx, f.task.Trace), "trigger "+trigger)
	if span.IsRecording() {
		span.SetAttributes(spans.Trigger.String(trigger), spans.Plugins.Int(plugins))
	}
	return ctx, span
}

// endFiring ends the span of a firing whose chain returned failure.
func endFiring(span trace.Span, failure error) {
	if failure != nil {
		span.SetStatus(codes.Error, failure.Error())
	}
	span.End()
}

// startCall starts the span of one plugin call and sets the invocation's
// traceparent to it, so that the plugin's span is its child: the trace is
// the task's (same trace id), the parent is the call. With tracing off (no
// span of its own) the invocation keeps the submission's traceparent.
func (f *firing) startCall(ctx context.Context, p events.PluginInfo, inv *events.Event, shadow bool) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(ctx)
	ctx, span := f.a.tracer.Start(ctx, "invoke "+p.Name, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(spans.Plugin.String(p.Name), spans.Trigger.String(inv.Trigger),
			spans.Invocation.String(inv.ID), spans.Shadow.Bool(shadow))
	}
	if sc := span.SpanContext(); sc.IsValid() && sc.SpanID() != parent.SpanID() {
		inv.TraceParent = spans.TraceParent(span)
	}
	return ctx, span
}

// endCall records the call's outcome on its span and ends it.
func endCall(span trace.Span, call *events.PluginCall) {
	if span.IsRecording() {
		span.SetAttributes(spans.Outcome.String(string(call.Outcome)), spans.Version.String(call.Version))
		if call.Failed() {
			span.SetStatus(codes.Error, call.Reason)
		}
	}
	span.End()
}
