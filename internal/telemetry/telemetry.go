// Package telemetry sets up OpenTelemetry tracing for qtasks' commands from
// the standard OTEL_* environment variables. Libraries (executor, plugins)
// never call it: they take a trace.TracerProvider in their configuration,
// which the commands pass from here.
package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is a command's tracer provider and what flushes it.
type Tracing struct {
	// Provider is what the command passes to executor.Config and
	// plugins.Spec: a no-op provider when tracing is off.
	Provider trace.TracerProvider
	// Enabled reports whether spans are exported.
	Enabled  bool
	shutdown func(context.Context) error
}

// Shutdown flushes the spans not yet exported and stops the exporter.
// Call it once, before the process exits, with a bounded context.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.shutdown == nil {
		return nil
	}
	if err := t.shutdown(ctx); err != nil {
		return fmt.Errorf("flushing traces: %w", err)
	}
	return nil
}

// enabled reports whether the environment asks for traces, and an error
// for a setting this build cannot honour. Tracing is off unless
// OTEL_TRACES_EXPORTER is otlp, or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
// and OTEL_TRACES_EXPORTER is not none; OTEL_SDK_DISABLED=true turns it off.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	switch exp {
	case "none":
		return false, nil
	case "", "otlp":
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: qtasks exports traces with otlp (or none)", exp)
	}
	on := exp == "otlp" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	if !on {
		return false, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := getenv(k); p != "" {
			if p != "http/protobuf" {
				return false, fmt.Errorf("%s=%q: qtasks exports OTLP over http/protobuf only", k, p)
			}
			break
		}
	}
	return true, nil
}

// Setup returns the tracing that the environment asks for: with none set, a
// no-op provider that costs next to nothing. service names the process
// (service.name) unless OTEL_SERVICE_NAME does. The exporter sends OTLP
// over HTTP (protobuf) and reads its endpoint, headers, timeout and TLS
// settings from the OTEL_EXPORTER_OTLP_* variables; the sampler is
// OTEL_TRACES_SAMPLER (default: parentbased_always_on).
func Setup(ctx context.Context, service string) (*Tracing, error) {
	on, err := enabled(os.Getenv)
	if err != nil {
		return nil, err
	}
	if !on {
		return &Tracing{Provider: noop.NewTracerProvider()}, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// The command's name, then the environment's resource attributes
	// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), which win.
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", service)))
	if err == nil {
		res, err = resource.Merge(res, resource.Environment())
	}
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{Provider: tp, Enabled: true, shutdown: tp.Shutdown}, nil
}
