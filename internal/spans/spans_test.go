package spans

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
)

func TestTraceParentRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := WithTraceParent(context.Background(), tp)
	sc := trace.SpanContextFromContext(ctx)
	require.True(t, sc.IsValid())
	require.True(t, sc.IsRemote())
	require.Equal(t, tp, TraceParent(trace.SpanFromContext(ctx)))

	// A span in ctx wins; an invalid or empty traceparent adds nothing.
	require.Equal(t, sc, trace.SpanContextFromContext(WithTraceParent(ctx, "00-11111111111111111111111111111111-2222222222222222-01")))
	require.False(t, trace.SpanContextFromContext(WithTraceParent(context.Background(), "bad")).IsValid())
	require.False(t, trace.SpanContextFromContext(WithTraceParent(context.Background(), "")).IsValid())
	require.Empty(t, TraceParent(trace.SpanFromContext(context.Background())))
}
