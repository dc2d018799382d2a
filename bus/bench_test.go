package bus_test

// Benchmarks of the bus beside the raw JetStream limits measured in the same
// run (issue 2). Every figure is a custom metric; see docs/BENCHMARKS.md.
//
//	go test -run=NONE -bench=. -benchtime=1x ./bus            # smoke
//	go test -run=NONE -bench=. -benchtime=3s -count=3 ./bus   # measure

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins"
)

const (
	// benchDataSize is the size of an event's data in these benchmarks: the
	// size of a typical trigger fact (a task record and its envelope).
	benchDataSize = 634
	// benchChunk is how many publishes one side makes before the other
	// takes its turn, when raw and ours alternate in one benchmark.
	benchChunk = 4096
	// benchRTBlock is how many round trips one side makes before the other
	// takes its turn.
	benchRTBlock = 64
	// benchRawStreamName is the stream of the raw benchmarks' messages:
	// Limits retention, file storage, on the same server as the event log.
	benchRawStreamName = "BENCH_RAW"
	// benchWait bounds every wait for an answer.
	benchWait = 30 * time.Second
)

func benchLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openBench starts an embedded JetStream server (file storage in the
// benchmark's temporary directory) and a bus on it.
func openBench(b *testing.B) *bus.Bus {
	b.Helper()
	return bustest.Open(b, &bus.Config{Logger: benchLogger()})
}

func benchCtx(b *testing.B) context.Context {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// benchConnect opens a plain NATS connection to bs's server, the way the
// bus connects (bus.Dial): limit and ours go through the same transport.
func benchConnect(b *testing.B, bs *bus.Bus, name string) (*nats.Conn, jetstream.JetStream) {
	b.Helper()
	nc, err := bs.Dial(nats.Name(name))
	if err != nil {
		b.Fatalf("connecting: %v", err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(bus.DefaultMaxPending))
	if err != nil {
		b.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// benchEnsureRawStream creates the raw stream: the same kind of stream as the
// event log (Limits retention, file storage, one replica).
func benchEnsureRawStream(b *testing.B, js jetstream.JetStream) {
	b.Helper()
	_, err := js.CreateOrUpdateStream(benchCtx(b), jetstream.StreamConfig{
		Name:      benchRawStreamName,
		Subjects:  []string{"bench.>"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  1,
		MaxBytes:  -1,
	})
	if err != nil {
		b.Fatalf("creating raw stream: %v", err)
	}
}

// benchRawPub publishes plain NATS messages with a few headers to the raw
// stream: the limit trigger facts are compared with.
type benchRawPub struct {
	js   jetstream.JetStream
	data []byte
	n    int
}

func newBenchRawPub(b *testing.B, bs *bus.Bus) *benchRawPub {
	b.Helper()
	_, js := benchConnect(b, bs, "bench-raw-pub")
	benchEnsureRawStream(b, js)
	data := []byte(`{"input":` + strconv.Quote(strings.Repeat("x", benchDataSize-12)) + `}`)
	if len(data) != benchDataSize {
		b.Fatalf("raw data is %d bytes, want %d", len(data), benchDataSize)
	}
	return &benchRawPub{js: js, data: data}
}

// publish publishes n messages asynchronously, waits for every ack, and
// returns how long that took.
func (r *benchRawPub) publish(b *testing.B, n int) time.Duration {
	b.Helper() // before the clock starts
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
	r.complete(b)
	return time.Since(t0)
}

// publishMsgs publishes msgs asynchronously, waits for every ack, and
// returns how long that took.
func (r *benchRawPub) publishMsgs(b *testing.B, msgs []*nats.Msg) time.Duration {
	b.Helper() // before the clock starts
	t0 := time.Now()
	for _, m := range msgs {
		if _, err := r.js.PublishMsgAsync(m, jetstream.WithStallWait(benchWait)); err != nil {
			b.Fatalf("publish: %v", err)
		}
	}
	r.complete(b)
	return time.Since(t0)
}

func (r *benchRawPub) complete(b *testing.B) {
	b.Helper()
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(benchWait):
		b.Fatalf("raw publish: %d acks missing after %v", r.js.PublishAsyncPending(), benchWait)
	}
}

// BenchmarkRawPublishAsync is the raw JetStream async publish rate of
// 634-byte messages with three headers to a file-storage Limits stream.
func BenchmarkRawPublishAsync(b *testing.B) {
	bs := openBench(b)
	raw := newBenchRawPub(b, bs)
	raw.publish(b, 1000) // warm up
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	raw.publish(b, b.N)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}

// benchFactSource builds trigger facts as the executor does (executor/fire.go,
// firing.record): the input payload encoded once per firing, the fact
// encoded, a CloudEvent with qtasks' attributes as headers and a
// deterministic Nats-Msg-Id.
type benchFactSource struct {
	task    events.Task
	input   json.RawMessage
	n       int
	source  string
	trigger string
}

func newBenchFactSource(b *testing.B) *benchFactSource {
	b.Helper()
	now := time.Now().UTC()
	fs := &benchFactSource{
		source:  "qtasks/bench-node-1234-abcd1234",
		trigger: events.WorkerExecuteAfter,
		task: events.Task{
			Name: "add", Queue: "default", Status: events.StatusSuccess,
			Args: json.RawMessage(`[]`), Result: json.RawMessage(`42`), Attempt: 1, Retry: 2,
			Worker: "bench-node-1234-abcd1234", Tags: []string{"bench"}, CreatedAt: now, UpdatedAt: now, TimeoutMS: 10000,
		},
	}
	// Pad kw so that the fact's data is benchDataSize bytes.
	fs.task.ID = uuid.NewString()
	fs.task.Kw = json.RawMessage(`{"a":1,"b":2,"note":""}`)
	data, err := json.Marshal(events.Fact{Input: benchJSON(map[string]any{"model": fs.task})})
	if err != nil {
		b.Fatal(err)
	}
	if pad := benchDataSize - len(data); pad > 0 {
		fs.task.Kw = json.RawMessage(`{"a":1,"b":2,"note":"` + strings.Repeat("n", pad) + `"}`)
	}
	fs.next()
	return fs
}

func benchJSON(v any) json.RawMessage {
	d, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return d
}

// next starts the facts of a new task.
func (fs *benchFactSource) next() {
	fs.task.ID = uuid.NewString()
	fs.input = benchJSON(map[string]any{"model": fs.task})
}

// event builds the next fact as the executor does, and returns it with
// its subject. A new task starts every 16 facts. Like the executor's, the
// fact carries no Nats-Msg-Id.
func (fs *benchFactSource) event(b *testing.B) (subject string, ev events.Event) { //nolint:thelper // once per op, timed: Helper's cost would be measured
	fs.n++
	if fs.n%16 == 0 {
		fs.next()
	}
	f := events.Fact{Input: fs.input}
	data, err := f.AppendJSON(nil)
	if err != nil {
		b.Fatal(err)
	}
	ev = events.Event{
		ID: events.FactMsgID(fs.task.ID, 1, 1, fs.trigger, fs.n%16), Source: fs.source, Type: events.TypeTriggerPrefix + fs.trigger, Time: time.Now(),
		DataContentType: events.ContentTypeJSON, Data: data, Trigger: fs.trigger, Attempt: 1, Run: 1,
		Subject: fs.task.ID, TaskID: fs.task.ID, TaskName: fs.task.Name,
	}
	return events.FactSubject(fs.trigger, fs.task.Queue), ev
}

// publish builds the next fact and publishes it through bus.PublishAsync,
// tracking its ack in acks.
func (fs *benchFactSource) publish(b *testing.B, bs *bus.Bus, acks *bus.Acks) { //nolint:thelper // once per op, timed: Helper's cost would be measured
	subject, ev := fs.event(b)
	fut, err := bs.PublishAsync(subject, "", &ev)
	if err != nil {
		b.Fatalf("publishing fact: %v", err)
	}
	acks.Add(fut)
}

// BenchmarkFactPublish is the trigger fact publish rate through the bus
// (facts built as the executor builds them, bus.PublishAsync, acks tracked
// with bus.Acks), beside the raw async publish rate measured in the same
// benchmark. Raw and ours alternate in chunks of benchChunk messages, so
// both see the same server, disk and stream size. ns/op is ours.
//
// A third side splits the difference: "wire" publishes our facts' exact
// messages (all headers, Nats-Msg-Id, same stream), built before its clock
// starts, the way raw publishes its own. wire-x-of-raw is what our message
// format costs JetStream; x-of-raw against wire-x-of-raw is what building
// the messages costs the client.
func BenchmarkFactPublish(b *testing.B) {
	bs := openBench(b)
	ctx := benchCtx(b)
	raw := newBenchRawPub(b, bs)
	fs := newBenchFactSource(b)
	if ev, err := json.Marshal(events.Fact{Input: fs.input}); err != nil || len(ev) != benchDataSize {
		b.Fatalf("fact data is %d bytes, want %d (%v)", len(ev), benchDataSize, err)
	}
	var acks bus.Acks
	// Warm up both paths.
	raw.publish(b, 1000)
	for range 1000 {
		fs.publish(b, bs, &acks)
	}
	if err := acks.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	wire := make([]*nats.Msg, 0, benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	var rawTime, wireTime, ourTime time.Duration
	for done := 0; done < b.N; {
		n := min(benchChunk, b.N-done)
		b.StopTimer()
		rawTime += raw.publish(b, n)
		wire = wire[:0]
		for range n {
			subject, ev := fs.event(b)
			wire = append(wire, bus.Message(subject, "", &ev))
		}
		wireTime += raw.publishMsgs(b, wire)
		b.StartTimer()
		t0 := time.Now()
		for range n {
			fs.publish(b, bs, &acks)
		}
		if err := acks.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		ourTime += time.Since(t0)
		done += n
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(ourTime), "msgs/s")
	b.ReportMetric(rate(rawTime), "raw-msgs/s")
	b.ReportMetric(rate(ourTime)/rate(rawTime), "x-of-raw")
	b.ReportMetric(rate(wireTime), "wire-msgs/s")
	b.ReportMetric(rate(wireTime)/rate(rawTime), "wire-x-of-raw")
}

// benchRawRT is the raw round trip: publish to the stream, a durable pull
// consumer on another connection receives it and publishes a reply on a
// subject the stream captures, and a core NATS subscriber at the origin
// receives the reply. It is the limit of a mutator round trip.
type benchRawRT struct {
	prefix string
	js     jetstream.JetStream
	ch     chan *nats.Msg
	data   []byte
	n      int
}

// benchReply is the raw responder's reply: about the size of a patch.
var benchReply = []byte(`[{"op":"replace","path":"/result","value":30}]`)

// benchRequestData is the data of a raw request and of an invocation in these
// benchmarks: a task_executor_run_task payload of benchDataSize bytes.
var benchRequestData = []byte(`{"result":3,"meta":` + strconv.Quote(strings.Repeat("m", benchDataSize-22)) + `}`)

// newBenchRawRT sets up the origin of a raw round trip on subjects
// bench.<prefix>.req.<n> and bench.<prefix>.rep.<n>.
func newBenchRawRT(b *testing.B, bs *bus.Bus, prefix string) *benchRawRT {
	b.Helper()
	onc, ojs := benchConnect(b, bs, "bench-rt-origin")
	benchEnsureRawStream(b, ojs)
	r := &benchRawRT{prefix: "bench." + prefix, js: ojs, ch: make(chan *nats.Msg, 16), data: benchRequestData}
	sub, err := onc.Subscribe(r.prefix+".rep.>", func(m *nats.Msg) { r.ch <- m })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

// benchRespondRaw runs the raw responder: a durable pull consumer on js that
// answers every request of prefix with a reply publish.
func benchRespondRaw(ctx context.Context, js jetstream.JetStream, prefix string) (jetstream.ConsumeContext, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, benchRawStreamName, jetstream.ConsumerConfig{
		Durable:       "responder-" + prefix,
		FilterSubject: "bench." + prefix + ".req.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckWait:       10 * time.Second,
		MaxAckPending: 64,
	})
	if err != nil {
		return nil, err
	}
	return cons.Consume(func(m jetstream.Msg) {
		subj := m.Subject()
		rep := nats.NewMsg("bench." + prefix + ".rep." + subj[strings.LastIndexByte(subj, '.')+1:])
		rep.Header.Set("ce-id", m.Headers().Get("ce-id")+":patch")
		rep.Header.Set("ce-type", "bench.patch")
		rep.Header.Set("content-type", events.ContentTypeJSONPatch)
		rep.Data = benchReply
		if _, err := js.PublishMsg(context.Background(), rep); err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(32))
}

// newBenchRawRTInProcess is a raw round trip whose responder runs in this
// process, on a connection of its own.
func newBenchRawRTInProcess(b *testing.B, bs *bus.Bus) *benchRawRT {
	b.Helper()
	r := newBenchRawRT(b, bs, "rt")
	_, rjs := benchConnect(b, bs, "bench-rt-responder")
	cc, err := benchRespondRaw(benchCtx(b), rjs, "rt")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	return r
}

// benchResponderEnv, set to a NATS URL, turns the test binary into a raw
// responder in a process of its own (see newBenchRawRTOtherProcess): it answers
// until its standard input closes.
const benchResponderEnv = "QTASKS_BENCH_RAW_RESPONDER_URL"

// benchResponderMain, run first by TestMain, is that responder when
// benchResponderEnv is set; otherwise it returns.
func benchResponderMain() {
	url := os.Getenv(benchResponderEnv)
	if url == "" {
		return
	}
	err := func() error {
		nc, err := nats.Connect(url, nats.Name("bench-rt-responder-process"))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		cc, err := benchRespondRaw(context.Background(), js, "xrt")
		if err != nil {
			return err
		}
		defer cc.Stop()
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		return nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// newBenchRawRTOtherProcess is a raw round trip whose responder is this test
// binary run again as a separate OS process: the limit of a plugin in
// another process.
func newBenchRawRTOtherProcess(b *testing.B, bs *bus.Bus) *benchRawRT {
	b.Helper()
	r := newBenchRawRT(b, bs, "xrt")
	cmd := testkit.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchResponderEnv+"="+bs.ClientURL())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	benchWaitReady(b, cmd, stdin.Close)
	return r
}

// benchWaitReady starts cmd and waits for a "ready" line on its standard
// output; stop ends it when the benchmark is done.
func benchWaitReady(b *testing.B, cmd *exec.Cmd, stop func() error) {
	b.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil { // stderr goes to /dev/null
		b.Fatal(err)
	}
	exited, ready := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	b.Cleanup(func() {
		_ = stop()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case <-ready:
	case <-exited:
		b.Fatalf("%s exited before it was ready", cmd.Path)
	case <-time.After(benchWait):
		b.Fatalf("%s not ready in time", cmd.Path)
	}
}

// once makes one round trip and returns how long it took.
func (r *benchRawRT) once(b *testing.B) time.Duration { //nolint:thelper // once per op, timed: Helper's cost would be measured
	r.n++
	id := strconv.Itoa(r.n)
	m := nats.NewMsg(r.prefix + ".req." + id)
	m.Header.Set("ce-id", id)
	m.Header.Set("ce-type", "bench.invoke")
	m.Header.Set("content-type", events.ContentTypeJSON)
	m.Data = r.data
	t0 := time.Now()
	if _, err := r.js.PublishMsgAsync(m); err != nil {
		b.Fatalf("raw round trip: %v", err)
	}
	for {
		select {
		case rep := <-r.ch:
			if !strings.HasSuffix(rep.Subject, "."+id) {
				continue // a late reply to an earlier request
			}
			return time.Since(t0)
		case <-time.After(benchWait):
			b.Fatalf("raw round trip: no reply to %s in %v", id, benchWait)
		}
	}
}

// benchPercentiles returns the p50 and p99 of ds in microseconds.
func benchPercentiles(ds []time.Duration) (p50, p99 float64) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p int) float64 {
		i := min(len(s)-1, len(s)*p/100)
		return float64(s[i].Nanoseconds()) / 1e3
	}
	return at(50), at(99)
}

// BenchmarkRawRoundTrip is the raw JetStream round trip, one at a time:
// publish → durable pull consumer → reply publish → core subscriber.
func BenchmarkRawRoundTrip(b *testing.B) {
	bs := openBench(b)
	raw := newBenchRawRTInProcess(b, bs)
	for range 200 { // warm up
		raw.once(b)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		lat = append(lat, raw.once(b))
	}
	b.StopTimer()
	p50, p99 := benchPercentiles(lat)
	b.ReportMetric(p50, "p50-us")
	b.ReportMetric(p99, "p99-us")
}

// benchScalePatch is the mutators' work in these benchmarks, the same as
// examples/scaleplugin's: multiply a numeric result by 10.
func benchScalePatch(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
	var p struct {
		Result json.RawMessage `json:"result"`
	}
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	var n float64
	if json.Unmarshal(p.Result, &n) != nil {
		return nil, nil //nolint:nilerr,nilnil // a result that is not a number is left as it is
	}
	return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: n * 10})
}

// benchStartScalePlugin runs examples/scaleplugin as a separate OS process
// against bs's server and waits until it is ready (registered).
func benchStartScalePlugin(b *testing.B, bs *bus.Bus, name string) {
	b.Helper()
	bin := testkit.Build(b, "../examples/scaleplugin")
	cmd := testkit.Command(bin, "--nats-url", bs.ClientURL(), "--name", name, "--version", "1")
	benchWaitReady(b, cmd, func() error { return cmd.Process.Signal(syscall.SIGTERM) })
}

// BenchmarkMutatorRoundTrip is bus.Invoke, one invocation at a time,
// against the same mutator run three ways, beside the raw round trip
// measured in the same benchmark (raw and ours alternate in blocks of
// benchRTBlock round trips). ns/op is ours.
//
//   - local: plugins.Local, called in process; invocation and patch are
//     published asynchronously (their acks are awaited with the run's
//     other facts, so they are not in the latency).
//   - connection: plugins.Start on a second bus connection in this
//     process: a durable consumer, the full JetStream path.
//   - process: examples/scaleplugin in its own OS process.
func BenchmarkMutatorRoundTrip(b *testing.B) {
	bs := openBench(b)
	ctx := benchCtx(b)
	raw := newBenchRawRTInProcess(b, bs)
	xraw := newBenchRawRTOtherProcess(b, bs)
	other := bustest.Connect(b, bs, &bus.Config{Logger: benchLogger(), Name: "bench-plugin"})
	spec := func(name string) plugins.Spec {
		return plugins.Spec{
			Name: name, Version: "1", Triggers: []string{events.TaskExecutorRunTask},
			Timeout: 5 * time.Second, Plugin: plugins.Func(benchScalePatch),
		}
	}
	if _, err := plugins.Local(ctx, bs, spec("scale-local")); err != nil {
		b.Fatal(err)
	}
	r, err := plugins.Start(ctx, other, spec("scale-conn"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Stop(context.Background()) })
	benchStartScalePlugin(b, bs, "scale-proc")
	for _, c := range []struct {
		name, plugin string
		xraw         *benchRawRT
	}{
		{"local", "scale-local", nil},
		{"connection", "scale-conn", nil},
		{"process", "scale-proc", xraw},
	} {
		if err := bs.Registry().WaitFor(ctx, c.plugin, "1"); err != nil {
			b.Fatal(err)
		}
		p, _ := bs.Registry().Get(c.plugin)
		b.Run("plugin="+c.name, func(b *testing.B) { benchInvoke(b, bs, raw, c.xraw, p) })
	}
}

// benchInvoke measures bus.Invoke of p one at a time, alternating in
// blocks with the raw round trip (and, when xraw is not nil, the raw round
// trip with its responder in another process).
func benchInvoke(b *testing.B, bs *bus.Bus, raw, xraw *benchRawRT, p events.PluginInfo) {
	b.Helper()
	ctx := benchCtx(b)
	taskID := uuid.NewString()
	var n int
	var acks bus.Acks
	once := func() time.Duration {
		n++
		inv := events.Event{
			ID:     events.InvocationID(taskID, 1, 1, events.TaskExecutorRunTask, n, p.Name),
			Source: "qtasks/bench", Subject: taskID, DataContentType: events.ContentTypeJSON, Data: benchRequestData,
			TaskID: taskID, TaskName: "bench", Trigger: events.TaskExecutorRunTask, Attempt: 1, Run: 1,
		}
		t0 := time.Now()
		reply, err := bs.Invoke(ctx, p, inv)
		d := time.Since(t0)
		if err != nil {
			b.Fatalf("invoking %s: %v", p.Name, err)
		}
		if len(reply.Patch.Data) == 0 || reply.Patch.PluginError != "" {
			b.Fatalf("invoking %s: no patch (%s)", p.Name, reply.Patch.PluginError)
		}
		for _, f := range reply.Pending {
			acks.Add(f)
		}
		return d
	}
	for range 100 { // warm up
		raw.once(b)
		if xraw != nil {
			xraw.once(b)
		}
		once()
	}
	if err := acks.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	rawLat := make([]time.Duration, 0, b.N)
	xrawLat := make([]time.Duration, 0, b.N)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		k := min(benchRTBlock, b.N-done)
		b.StopTimer()
		for range k {
			rawLat = append(rawLat, raw.once(b))
		}
		if xraw != nil {
			for range k {
				xrawLat = append(xrawLat, xraw.once(b))
			}
		}
		b.StartTimer()
		for range k {
			lat = append(lat, once())
		}
		if err := acks.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		done += k
	}
	b.StopTimer()
	p50, p99 := benchPercentiles(lat)
	r50, r99 := benchPercentiles(rawLat)
	b.ReportMetric(p50, "p50-us")
	b.ReportMetric(p99, "p99-us")
	b.ReportMetric(r50, "raw-p50-us")
	b.ReportMetric(r99, "raw-p99-us")
	b.ReportMetric(p50/r50, "p50-x-of-raw")
	b.ReportMetric(p99/r99, "p99-x-of-raw")
	if xraw != nil {
		x50, x99 := benchPercentiles(xrawLat)
		b.ReportMetric(x50, "xraw-p50-us")
		b.ReportMetric(x99, "xraw-p99-us")
		b.ReportMetric(p50/x50, "p50-x-of-xraw")
		b.ReportMetric(p99/x99, "p99-x-of-xraw")
	}
}
