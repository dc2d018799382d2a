//go:build unix

package executor

// Benchmarks of the executor beside the raw JetStream limits measured in
// the same run (issue 2). Every figure is a custom metric; see
// docs/BENCHMARKS.md.
//
//	go test -run=NONE -bench=. -benchtime=1x ./executor            # smoke
//	go test -run=NONE -bench=. -benchtime=3s -count=3 ./executor   # measure

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/spans"
	"github.com/qtasks/qtasks-go/plugins"
)

const (
	// benchDataSize is the size of a raw benchmark message's data: the size
	// of a typical trigger fact.
	benchDataSize = 634
	// benchChunk is how many publishes one side makes before the other
	// takes its turn, when raw and ours alternate in one benchmark.
	benchChunk = 4096
	// benchRawStream holds the raw messages, on the same server as the
	// event log: Limits retention, file storage.
	benchRawStream = "BENCH_RAW"
	// benchSubmitters is how many goroutines submit tasks.
	benchSubmitters = 8
	// benchConcurrency is the worker's concurrency in the throughput runs.
	benchConcurrency = 64
	benchWait        = 60 * time.Second
)

func benchLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func benchCtx(b *testing.B) context.Context {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// benchRaw publishes plain NATS messages (634-byte data, three headers)
// asynchronously to a file-storage Limits stream on the bus's server, from
// a connection of its own: the raw JetStream publish limit.
type benchRaw struct {
	js   jetstream.JetStream
	data []byte
	n    int
}

func newBenchRaw(b *testing.B, bs *bus.Bus) *benchRaw {
	b.Helper()
	nc, err := bs.Dial(nats.Name("bench-raw")) // the transport the bus uses
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(bus.DefaultMaxPending))
	if err != nil {
		b.Fatal(err)
	}
	_, err = js.CreateOrUpdateStream(benchCtx(b), jetstream.StreamConfig{
		Name: benchRawStream, Subjects: []string{"bench.>"}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, Replicas: 1, MaxBytes: -1,
	})
	if err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"input":` + strconv.Quote(strings.Repeat("x", benchDataSize-12)) + `}`)
	return &benchRaw{js: js, data: data}
}

// publish publishes n messages and waits for their acks; it returns how
// long that took.
func (r *benchRaw) publish(b *testing.B, n int) time.Duration {
	b.Helper()
	t0 := time.Now()
	for range n {
		r.n++
		m := nats.NewMsg("bench.pub." + strconv.Itoa(r.n&1023))
		m.Header.Set("ce-id", strconv.Itoa(r.n))
		m.Header.Set("ce-type", "bench.raw")
		m.Header.Set("content-type", "application/json")
		m.Data = r.data
		if _, err := r.js.PublishMsgAsync(m, jetstream.WithStallWait(benchWait)); err != nil {
			b.Fatalf("raw publish: %v", err)
		}
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(benchWait):
		b.Fatalf("raw publish: %d acks missing after %v", r.js.PublishAsyncPending(), benchWait)
	}
	return time.Since(t0)
}

// BenchmarkFire is a trigger firing through the executor's own path
// (firing.fire of a one-way trigger with no plugins: payload and fact
// encoded, CloudEvent built, published asynchronously, ack tracked; a new
// task run every 16 firings), beside the raw async publish rate measured in
// the same benchmark, alternating in chunks. The fact's data is 634 bytes,
// like the raw messages'. ns/op is ours.
func BenchmarkFire(b *testing.B) {
	bs := bustest.Open(b, &bus.Config{Logger: benchLogger()})
	ctx := benchCtx(b)
	app, err := New(bs, &Config{Logger: benchLogger(), NodeID: "bench-node-1234-abcd1234"})
	if err != nil {
		b.Fatal(err)
	}
	raw := newBenchRaw(b, bs)
	now := time.Now().UTC()
	model := events.Task{
		Name: "add", Queue: "default", Status: events.StatusSuccess, Args: json.RawMessage(`[]`),
		Result: json.RawMessage(`42`), Attempt: 1, Retry: 2, Worker: "bench-node-1234-abcd1234",
		Tags: []string{"bench"}, CreatedAt: now, UpdatedAt: now, TimeoutMS: 10000,
	}
	model.ID = uuid.NewString()
	model.Kw = json.RawMessage(`{"a":1,"b":2,"note":""}`)
	size := len(benchJSON(events.Fact{Input: benchJSON(map[string]any{"model": model})}))
	model.Kw = json.RawMessage(`{"a":1,"b":2,"note":"` + strings.Repeat("n", max(0, benchDataSize-size)) + `"}`)

	var firings []*firing
	fire := func(n int) time.Duration {
		t0 := time.Now()
		var f *firing
		for i := range n {
			if i%16 == 0 {
				t := model
				t.ID = uuid.NewString()
				f = app.newFiring(&t, 1)
				firings = append(firings, f)
			}
			if _, err := f.fire(ctx, events.WorkerExecuteAfter, map[string]any{"model": f.task}); err != nil {
				b.Fatal(err)
			}
		}
		for _, f := range firings {
			if err := f.acks.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		firings = firings[:0]
		return time.Since(t0)
	}
	raw.publish(b, 1000) // warm up
	fire(1000)
	b.ReportAllocs()
	b.ResetTimer()
	var rawTime, ourTime time.Duration
	for done := 0; done < b.N; {
		n := min(benchChunk, b.N-done)
		b.StopTimer()
		rawTime += raw.publish(b, n)
		b.StartTimer()
		ourTime += fire(n)
		done += n
	}
	b.StopTimer()
	ours, rawRate := float64(b.N)/ourTime.Seconds(), float64(b.N)/rawTime.Seconds()
	b.ReportMetric(ours, "msgs/s")
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(ours/rawRate, "x-of-raw")
}

// BenchmarkTasks is tasks per second end to end: submit b.N no-op tasks
// from benchSubmitters goroutines and wait until every task record is
// final, with one worker of concurrency benchConcurrency in this process.
// Mutators are in-process plugins (plugins.Local) on
// task_executor_args_replace, each answering with a small merge patch.
//
// Beside it: the raw async publish rate measured on the same server just
// before and just after the run (raw-msgs/s); how many raw publishes fit in
// the time of one task (raw-msgs-per-task, the figure that survives a busy
// machine); the events the log holds per task; and how much of the raw
// publish rate the task's events amount to (events-x-of-raw).
func BenchmarkTasks(b *testing.B) {
	for _, c := range []struct {
		name     string
		record   bus.RecordMode
		mutators int
	}{
		{"record=all/mutators=0", bus.RecordAll, 0},
		{"record=all/mutators=1", bus.RecordAll, 1},
		{"record=all/mutators=3", bus.RecordAll, 3},
		{"record=lifecycle/mutators=0", bus.RecordLifecycle, 0},
	} {
		b.Run(c.name, func(b *testing.B) { benchTasks(b, c.record, c.mutators, nil) })
	}
}

// BenchmarkTracing is BenchmarkTasks (record=all) with tracing off (the
// default provider, a no-op) and on (every span sampled, exported in
// batches to an exporter that drops them): docs/ARCHITECTURE.md, "Tracing".
//
//	go test -run=NONE -bench=Tracing -benchtime=4000x -count=3 ./executor
func BenchmarkTracing(b *testing.B) {
	for _, mutators := range []int{0, 1} {
		for _, on := range []bool{false, true} {
			name := fmt.Sprintf("mutators=%d/tracing=%v", mutators, map[bool]string{false: "off", true: "on"}[on])
			b.Run(name, func(b *testing.B) {
				var tp trace.TracerProvider
				if on {
					p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
					b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
					tp = p
				}
				benchTasks(b, bus.RecordAll, mutators, tp)
			})
		}
	}
}

// BenchmarkTaskSpans is the tracing work of one task with one plugin call:
// the attempt's span, the firing's, the call's (with its traceparent
// written on the invocation) and the plugin runner's, on the default
// provider (tracing off) and on a sampling provider (on). Beside
// BenchmarkTasks' cpu-us/task it is the share of a task's CPU that tracing
// costs, a figure a loaded machine's tasks/s cannot resolve.
func BenchmarkTaskSpans(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "tracing=off", true: "tracing=on"}[on], func(b *testing.B) {
			tp := otel.GetTracerProvider()
			if on {
				p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
				tp = p
			}
			app := &App{tracer: tp.Tracer(spans.Scope)}
			plugTracer := tp.Tracer(spans.Scope)
			task := events.Task{
				ID: uuid.NewString(), Name: "noop", Queue: "default", Attempt: 1,
				Trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			}
			f := &firing{a: app, task: &task}
			p := events.PluginInfo{Name: "bench-mut-0", Version: "1"}
			b.ReportAllocs()
			for b.Loop() {
				ctx, attempt := app.startAttempt(context.Background(), &task, 1)
				fctx, firing := f.startFiring(ctx, events.TaskExecutorArgsReplace, 1)
				inv := events.Event{ID: "x", Trigger: events.TaskExecutorArgsReplace, TaskID: task.ID, TraceParent: task.Trace}
				_, call := f.startCall(fctx, p, &inv, false)
				_, ps := plugTracer.Start(spans.WithTraceParent(context.Background(), inv.TraceParent), "plugin "+p.Name, trace.WithSpanKind(trace.SpanKindServer))
				if ps.IsRecording() {
					ps.SetAttributes(spans.Plugin.String(p.Name), spans.Trigger.String(inv.Trigger), spans.TaskID.String(inv.TaskID), spans.Invocation.String(inv.ID))
				}
				ps.End()
				endCall(call, &events.PluginCall{Outcome: events.OutcomeApplied, Version: "1"})
				endFiring(firing, nil)
				noteFinal(ctx, &events.Task{Status: events.StatusSuccess})
				endAttempt(attempt, nil)
			}
		})
	}
}

// BenchmarkSpan is the cost of one sampled span with two attributes,
// exported in batches to an exporter that drops them: what a span per
// firing without plugins would add, per firing.
func BenchmarkSpan(b *testing.B) {
	p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	tr := p.Tracer("bench")
	ctx, root := tr.Start(context.Background(), "root")
	defer root.End()
	b.ReportAllocs()
	for b.Loop() {
		_, s := tr.Start(ctx, "trigger "+events.StorageGet, trace.WithAttributes(spans.Trigger.String(events.StorageGet), spans.Plugins.Int(0)))
		s.End()
	}
}

type benchArgs struct {
	A, B int
}

func benchTasks(b *testing.B, record bus.RecordMode, mutators int, tp trace.TracerProvider) {
	b.Helper()
	ctx := benchCtx(b)
	bs := bustest.Open(b, &bus.Config{Record: record, Logger: benchLogger()})
	app, err := New(bs, &Config{Concurrency: benchConcurrency, GracePeriod: 10 * time.Second, Logger: benchLogger(), TracerProvider: tp})
	if err != nil {
		b.Fatal(err)
	}
	MustRegister(app, "noop", func(_ context.Context, in benchArgs) (int, error) { return in.A + in.B, nil }, nil)
	for i := range mutators {
		key := "x" + strconv.Itoa(i)
		r, err := plugins.Local(ctx, bs, plugins.Spec{
			Name: "bench-mut-" + strconv.Itoa(i), Version: "1", Triggers: []string{events.TaskExecutorArgsReplace}, TracerProvider: tp,
			Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
				return plugins.MergePatch(map[string]any{"kw": map[string]any{key: i}})
			}),
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = r.Stop(context.Background()) })
	}
	if len(bs.Registry().Chain(events.TaskExecutorArgsReplace)) != mutators {
		b.Fatalf("chain of %s has %d mutators, want %d", events.TaskExecutorArgsReplace, len(bs.Registry().Chain(events.TaskExecutorArgsReplace)), mutators)
	}

	// The limit, on the same server, just before the run and just after it.
	raw := newBenchRaw(b, bs)
	raw.publish(b, 1000)
	rawN := min(max(16*b.N, 4096), 65536)
	cpu0 := benchCPU()
	rawTime := raw.publish(b, rawN)
	rawCPU := benchCPU() - cpu0

	if err := app.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = app.Stop(context.Background()) })

	// Final records, watched on the task bucket's subjects: a KV put is a
	// message that core subscribers see too.
	var mu sync.Mutex
	final := make(map[string]bool, b.N)
	var bad atomic.Value
	allDone := make(chan struct{})
	want := 0
	sub, err := bs.Conn().Subscribe("$KV."+bus.BucketTasks+".>", func(m *nats.Msg) {
		if !mayBeFinal(m.Data) {
			return // new or process: not decoded, the watch's own CPU
		}
		var t struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(m.Data, &t) != nil {
			return
		}
		switch t.Status {
		case events.StatusSuccess:
		case events.StatusError, events.StatusCancel, events.StatusRetry:
			bad.CompareAndSwap(nil, fmt.Sprintf("task %s ended %s: %s", t.ID, t.Status, t.Error))
		default:
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !final[t.ID] {
			final[t.ID] = true
			if len(final) == want {
				close(allDone)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	b.Cleanup(func() { _ = sub.Unsubscribe() })

	// One task first, so that the worker's consumer and the chain are warm.
	warm, err := app.Submit(ctx, "noop", benchArgs{A: 1, B: 2}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if t, err := app.Wait(ctx, warm.ID); err != nil || t.Status != events.StatusSuccess {
		b.Fatalf("warm-up task: %v %s %s", err, t.Status, t.Error)
	}
	// Its last fact (worker_execute_after) follows its final record.
	bustest.WaitFor(b, benchWait, "an idle worker", func() bool { return benchWorkerIdle(app) })
	info, err := bs.EventStream().Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	before := info.State.Msgs
	mu.Lock()
	clear(final)
	want = b.N
	mu.Unlock()

	b.ReportAllocs()
	b.ResetTimer()
	start, cpuStart := time.Now(), benchCPU()
	submitLat := make([][]time.Duration, benchSubmitters)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchSubmitters)
	for g := range benchSubmitters {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > b.N {
					return
				}
				t0 := time.Now()
				if _, err := app.Submit(ctx, "noop", benchArgs{A: i, B: 1}, nil); err != nil {
					errs <- err
					return
				}
				submitLat[g] = append(submitLat[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	select {
	case <-allDone:
	case <-time.After(benchWait):
		mu.Lock()
		n := len(final)
		mu.Unlock()
		b.Fatalf("%d of %d tasks final after %v", n, b.N, benchWait)
	}
	el, cpu := time.Since(start), benchCPU()-cpuStart
	b.StopTimer()
	if v := bad.Load(); v != nil {
		b.Fatal(v)
	}
	bustest.WaitFor(b, benchWait, "an idle worker", func() bool { return benchWorkerIdle(app) })
	info, err = bs.EventStream().Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	perTask := float64(info.State.Msgs-before) / float64(b.N)
	cpu0 = benchCPU()
	rawTime += raw.publish(b, rawN)
	rawCPU += benchCPU() - cpu0
	rawRate := float64(2*rawN) / rawTime.Seconds()
	rawCPUPerMsg := rawCPU.Seconds() * 1e6 / float64(2*rawN)
	cpuPerTask := cpu.Seconds() * 1e6 / float64(b.N)
	tps := float64(b.N) / el.Seconds()
	b.ReportMetric(tps, "tasks/s")
	b.ReportMetric(perTask, "events/task")
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(rawRate/tps, "raw-msgs-per-task")
	b.ReportMetric(tps*perTask/rawRate, "events-x-of-raw")
	b.ReportMetric(cpuPerTask, "cpu-us/task")
	b.ReportMetric(rawCPUPerMsg, "raw-cpu-us/msg")
	b.ReportMetric(cpuPerTask/rawCPUPerMsg, "cpu-raw-msgs-per-task")
	b.ReportMetric(benchMedian(slices.Concat(submitLat...)), "submit-p50-us")
}

// benchWorkerIdle reports whether app's worker holds no task: every fact of
// every run it took is stored. Its fetch loop holds one slot while it waits
// for the next task.
func benchWorkerIdle(app *App) bool {
	app.mu.RLock()
	w := app.worker
	app.mu.RUnlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	// Not len(w.slots): the pull request under way holds every free slot.
	return w.q.Len() == 0 && w.busy == 0
}

func benchJSON(v any) json.RawMessage {
	d, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return d
}

// benchCPU is the CPU time this process (the embedded server included) has
// used so far.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchMedian is the median of ds in microseconds.
func benchMedian(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[len(ds)/2].Nanoseconds()) / 1e3
}

// mayBeFinal reports whether a task record (json.Marshal's bytes: no space
// after a colon) may have a status benchTasks looks for: the records it
// drops (created, claimed) are not decoded, CPU of the bench's watch and
// not of the executor.
func mayBeFinal(rec []byte) bool {
	for _, st := range []string{events.StatusSuccess, events.StatusError, events.StatusCancel, events.StatusRetry} {
		if bytes.Contains(rec, []byte(`"status":"`+st+`"`)) {
			return true
		}
	}
	return false
}
