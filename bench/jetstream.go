package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	_ "github.com/qtasks/qtasks-go/bus/embedded" // bus.Open starts an embedded server
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

const (
	// rawStream holds the raw benchmarks' messages, on the same server as
	// the event log and of the same kind: Limits retention, file storage,
	// one replica.
	rawStream = "BENCH_RAW"
	// wait bounds every wait for an answer or an ack.
	wait = 60 * time.Second
)

// openBus starts an embedded JetStream server (file storage in a new
// directory under the harness's temporary directory) and connects a bus.
func (h *Harness) openBus(ctx context.Context, cfg bus.Config) (*bus.Bus, error) {
	dir, err := h.dir("nats-")
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dir
	if cfg.Logger == nil {
		cfg.Logger = h.quiet
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return bus.Open(octx, cfg)
}

// rawConn opens a plain NATS connection (and JetStream context) to b's
// server, the way the bus connects (bus.Dial), and makes sure the raw
// stream exists.
func rawConn(ctx context.Context, b *bus.Bus, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := b.Dial(nats.Name(name))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(bus.DefaultMaxPending))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{"bench.>"}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, Replicas: 1, MaxBytes: -1,
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// rawPublisher is the limit trigger facts are compared with: plain NATS
// messages, 634 bytes of JSON data and three headers, published
// asynchronously to the raw stream.
type rawPublisher struct {
	js   jetstream.JetStream
	data []byte
	n    int
}

func newRawPublisher(js jetstream.JetStream) *rawPublisher {
	data := []byte(`{"input":` + strconv.Quote(strings.Repeat("x", factSize-12)) + `}`)
	return &rawPublisher{js: js, data: data}
}

// pubChunk is how many publishes both publish benches make before waiting
// for their acks: half of bus.DefaultMaxPending, as an executor's runs
// wait for their facts' acks at the end of each run (64 runs of ~27 facts
// in flight at most), so that neither side depends on how long a client
// stalls when too many acks are outstanding.
const pubChunk = bus.DefaultMaxPending / 2

// publish publishes n messages, waiting for the acks of each chunk, and
// returns the rate.
func (r *rawPublisher) publish(n int) (float64, error) {
	t0 := time.Now()
	for done := 0; done < n; done += pubChunk {
		if err := r.chunk(min(pubChunk, n-done)); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

func (r *rawPublisher) chunk(n int) error {
	for range n {
		r.n++
		m := nats.NewMsg("bench.pub." + strconv.Itoa(r.n&1023))
		m.Header.Set("ce-id", strconv.Itoa(r.n))
		m.Header.Set("ce-type", "bench.raw")
		m.Header.Set("content-type", "application/json")
		m.Data = r.data
		if _, err := r.js.PublishMsgAsync(m, jetstream.WithStallWait(wait)); err != nil {
			return fmt.Errorf("raw publish: %w", err)
		}
	}
	select {
	case <-r.js.PublishAsyncComplete():
		return nil
	case <-time.After(wait):
		return fmt.Errorf("raw publish: %d acks missing after %v", r.js.PublishAsyncPending(), wait)
	}
}

// factSource publishes trigger facts doing what the executor does for each
// firing (executor/fire.go: firing.fire and firing.record): encode the
// payload, encode the fact, build the CloudEvent with qtasks' attributes,
// bus.PublishAsync with a deterministic Nats-Msg-Id, track the ack in
// bus.Acks. A new task starts every 16 facts. The fact's data is 634 bytes.
type factSource struct {
	b      *bus.Bus
	task   events.Task
	n      int
	source string
}

func newFactSource(b *bus.Bus) *factSource {
	now := time.Now().UTC()
	fs := &factSource{b: b, source: "qtasks/bench-node-1234-abcd1234", task: events.Task{
		ID: uuid.NewString(), Name: "add", Queue: "default", Status: events.StatusSuccess,
		Args: json.RawMessage(`[]`), Result: json.RawMessage(`42`), Attempt: 1, Retry: 2,
		Worker: "bench-node-1234-abcd1234", Tags: []string{"bench"}, CreatedAt: now, UpdatedAt: now, TimeoutMS: 10000,
		Kw: json.RawMessage(`{"a":1,"b":2,"note":""}`),
	}}
	if size := len(fs.factData()); size < factSize {
		fs.task.Kw = json.RawMessage(`{"a":1,"b":2,"note":"` + strings.Repeat("n", factSize-size) + `"}`)
	}
	return fs
}

func (fs *factSource) factData() []byte {
	input, _ := json.Marshal(map[string]any{"model": fs.task})
	data, _ := json.Marshal(events.Fact{Input: input})
	return data
}

// publish publishes n facts, waiting for the acks of each chunk, and
// returns the rate.
func (fs *factSource) publish(ctx context.Context, n int) (float64, error) {
	t0 := time.Now()
	for done := 0; done < n; done += pubChunk {
		if err := fs.chunk(ctx, min(pubChunk, n-done)); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

func (fs *factSource) chunk(ctx context.Context, n int) error {
	var acks bus.Acks
	trigger := events.WorkerExecuteAfter
	for range n {
		fs.n++
		if fs.n%16 == 0 {
			fs.task.ID = uuid.NewString()
		}
		input, err := json.Marshal(map[string]any{"model": fs.task})
		if err != nil {
			return err
		}
		f := events.Fact{Input: input}
		data, err := f.AppendJSON(nil)
		if err != nil {
			return err
		}
		ev := events.Event{
			ID: events.FactMsgID(fs.task.ID, 1, 1, trigger, fs.n%16), Source: fs.source, Type: events.TypeTriggerPrefix + trigger, Time: time.Now(),
			DataContentType: events.ContentTypeJSON, Data: data, Trigger: trigger, Attempt: 1, Run: 1,
			Subject: fs.task.ID, TaskID: fs.task.ID, TaskName: fs.task.Name,
		}
		// As the executor publishes a fact: under the queue, no Nats-Msg-Id.
		fut, err := fs.b.PublishAsync(events.FactSubject(trigger, fs.task.Queue), "", &ev)
		if err != nil {
			return fmt.Errorf("publishing fact: %w", err)
		}
		acks.Add(fut)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return acks.Wait(wctx)
}

// benchPublish: the raw async publish rate and the trigger fact publish
// rate, on one server, one after the other (the order alternates between
// repetitions).
func benchPublish(ctx context.Context, h *Harness, rep int) error {
	b, err := h.openBus(ctx, bus.Config{})
	if err != nil {
		return err
	}
	defer b.Close()
	nc, js, err := rawConn(ctx, b, "bench-raw-pub")
	if err != nil {
		return err
	}
	defer nc.Close()
	raw := newRawPublisher(js)
	fs := newFactSource(b)
	if d := len(fs.factData()); d != factSize {
		return fmt.Errorf("fact data is %d bytes, want %d", d, factSize)
	}
	if _, err := raw.publish(2000); err != nil {
		return err
	}
	if _, err := fs.publish(ctx, 2000); err != nil {
		return err
	}
	n := h.cfg.Publish
	var rawRate, ourRate float64
	if rep%2 == 0 {
		if rawRate, err = raw.publish(n); err == nil {
			ourRate, err = fs.publish(ctx, n)
		}
	} else {
		if ourRate, err = fs.publish(ctx, n); err == nil {
			rawRate, err = raw.publish(n)
		}
	}
	if err != nil {
		return err
	}
	h.add("limit.publish", rawRate)
	h.add("ours.factpub", ourRate)
	return nil
}

// rawRoundTrip is the limit of a mutator round trip: publish to the raw
// stream; a durable pull consumer on another connection receives it and
// publishes a reply to a subject the stream captures; a core NATS
// subscriber at the origin receives the reply. That is the path of an
// invocation and its patch, without qtasks.
type rawRoundTrip struct {
	nc, rnc *nats.Conn
	js      jetstream.JetStream
	cc      jetstream.ConsumeContext
	sub     *nats.Subscription
	ch      chan *nats.Msg
	n       int
}

func newRawRoundTrip(ctx context.Context, b *bus.Bus) (*rawRoundTrip, error) {
	onc, ojs, err := rawConn(ctx, b, "bench-rt-origin")
	if err != nil {
		return nil, err
	}
	r := &rawRoundTrip{nc: onc, js: ojs, ch: make(chan *nats.Msg, 16)}
	fail := func(err error) (*rawRoundTrip, error) { r.close(); return nil, err }
	if r.rnc, err = nats.Connect(b.ClientURL(), nats.Name("bench-rt-responder")); err != nil {
		return fail(err)
	}
	rjs, err := jetstream.New(r.rnc)
	if err != nil {
		return fail(err)
	}
	if r.sub, err = onc.Subscribe("bench.rt.rep.>", func(m *nats.Msg) { r.ch <- m }); err != nil {
		return fail(err)
	}
	cons, err := rjs.CreateOrUpdateConsumer(ctx, rawStream, jetstream.ConsumerConfig{
		Durable: "bench-rt", FilterSubject: "bench.rt.req.>", AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy, AckWait: 10 * time.Second, MaxAckPending: 64,
	})
	if err != nil {
		return fail(err)
	}
	reply := []byte(`[{"op":"replace","path":"/result","value":30}]`)
	r.cc, err = cons.Consume(func(m jetstream.Msg) {
		subj := m.Subject()
		rep := nats.NewMsg("bench.rt.rep." + subj[strings.LastIndexByte(subj, '.')+1:])
		rep.Header.Set("ce-id", m.Headers().Get("ce-id")+":patch")
		rep.Header.Set("ce-type", "bench.patch")
		rep.Header.Set("content-type", events.ContentTypeJSONPatch)
		rep.Data = reply
		if _, err := rjs.PublishMsg(context.Background(), rep); err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(32))
	if err != nil {
		return fail(err)
	}
	return r, nil
}

func (r *rawRoundTrip) close() {
	if r.cc != nil {
		r.cc.Stop()
	}
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
	if r.rnc != nil {
		r.rnc.Close()
	}
	r.nc.Close()
}

// once makes one round trip with data and returns how long it took.
func (r *rawRoundTrip) once(data []byte) (time.Duration, error) {
	r.n++
	id := strconv.Itoa(r.n)
	m := nats.NewMsg("bench.rt.req." + id)
	m.Header.Set("ce-id", id)
	m.Header.Set("ce-type", "bench.invoke")
	m.Header.Set("content-type", events.ContentTypeJSON)
	m.Data = data
	t0 := time.Now()
	if _, err := r.js.PublishMsgAsync(m); err != nil {
		return 0, fmt.Errorf("raw round trip: %w", err)
	}
	timeout := time.After(wait)
	for {
		select {
		case rep := <-r.ch:
			if !strings.HasSuffix(rep.Subject, "."+id) {
				continue // a late reply to an earlier request
			}
			return time.Since(t0), nil
		case <-timeout:
			return 0, fmt.Errorf("raw round trip: no reply to %s in %v", id, wait)
		}
	}
}

// resultPayload is an invocation payload of size bytes for
// task_executor_run_task: a numeric result and padding.
func resultPayload(size int) []byte {
	pad := max(0, size-len(`{"result":3,"meta":""}`))
	return []byte(`{"result":3,"meta":"` + strings.Repeat("m", pad) + `"}`)
}

// echoPatch is the mutators' work in the round-trip benches (the same in
// process and in bench/internal/echoplugin): read the result, answer with
// a JSON Patch that sets it to the same value.
func echoPatch(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
	var p struct {
		Result json.RawMessage `json:"result"`
	}
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	var n float64
	if json.Unmarshal(p.Result, &n) != nil {
		return nil, nil
	}
	return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: n})
}

// invoker makes bus.Invoke round trips to one plugin.
type invoker struct {
	b    *bus.Bus
	p    events.PluginInfo
	task string
	n    int
	acks bus.Acks
}

func (iv *invoker) once(ctx context.Context, data []byte) (time.Duration, error) {
	iv.n++
	trigger := events.TaskExecutorRunTask
	inv := events.Event{
		ID:     events.InvocationID(iv.task, 1, 1, trigger, iv.n, iv.p.Name),
		Source: "qtasks/bench", Subject: iv.task, DataContentType: events.ContentTypeJSON, Data: data,
		TaskID: iv.task, TaskName: "bench", Trigger: trigger, Attempt: 1, Run: 1,
	}
	t0 := time.Now()
	reply, err := iv.b.Invoke(ctx, iv.p, inv)
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("invoking %s: %w", iv.p.Name, err)
	}
	if len(reply.Patch.Data) == 0 || reply.Patch.PluginError != "" {
		return 0, fmt.Errorf("invoking %s: no patch (%s)", iv.p.Name, reply.Patch.PluginError)
	}
	for _, f := range reply.Pending {
		iv.acks.Add(f)
	}
	return d, nil
}

// benchRoundTrip: the raw round trip beside bus.Invoke of the same mutator
// in process (plugins.Local: invocation and patch still written to the
// log, their acks awaited outside the timing, with the run's other facts as
// the executor does) and in its own OS process (bench/internal/echoplugin),
// one at a time, in blocks of 64 that alternate between the three; at the
// headline payload (634 B) and at each payload of the growth series.
func benchRoundTrip(ctx context.Context, h *Harness, rep int) error {
	bins, err := h.binaries()
	if err != nil {
		return err
	}
	b, err := h.openBus(ctx, bus.Config{})
	if err != nil {
		return err
	}
	defer b.Close()
	raw, err := newRawRoundTrip(ctx, b)
	if err != nil {
		return err
	}
	defer raw.close()
	spec := plugins.Spec{Name: "bench-local", Version: "1", Triggers: []string{events.TaskExecutorRunTask},
		Timeout: 10 * time.Second, Plugin: plugins.Func(echoPatch)}
	lr, err := plugins.Local(ctx, b, spec)
	if err != nil {
		return err
	}
	defer func() { _ = lr.Stop(context.Background()) }()
	stop, err := startEchoPlugin(ctx, bins["echoplugin"], b.ClientURL(), "bench-echo", events.TaskExecutorRunTask, "")
	if err != nil {
		return err
	}
	defer stop()
	var ivs []*invoker
	for _, name := range []string{"bench-local", "bench-echo"} {
		if err := b.Registry().WaitFor(ctx, name, "1"); err != nil {
			return err
		}
		p, _ := b.Registry().Get(name)
		ivs = append(ivs, &invoker{b: b, p: p, task: uuid.NewString()})
	}
	local, proc := ivs[0], ivs[1]
	sizes := append([]int{factSize}, growthPayloads...)
	for _, size := range sizes {
		n := h.cfg.RoundTripsGrowth
		if size == factSize {
			n = h.cfg.RoundTrips
		}
		data := resultPayload(size)
		var lat [3][]time.Duration
		sides := []func() (time.Duration, error){
			func() (time.Duration, error) { return raw.once(data) },
			func() (time.Duration, error) { return local.once(ctx, data) },
			func() (time.Duration, error) { return proc.once(ctx, data) },
		}
		for i := range 3 * min(50, n) { // warm up
			if _, err := sides[i%3](); err != nil {
				return err
			}
		}
		const block = 64
		for done := 0; done < n; done += block {
			k := min(block, n-done)
			for s := range sides {
				// Rotate which side goes first in each block.
				s = (s + done/block + rep) % 3
				for range k {
					d, err := sides[s]()
					if err != nil {
						return err
					}
					lat[s] = append(lat[s], d)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, wait)
			err := local.acks.Wait(wctx)
			cancel()
			if err != nil {
				return err
			}
		}
		for s, name := range []string{"raw", "local", "proc"} {
			p50, p99 := percentiles(lat[s])
			h.add(fmt.Sprintf("rt.%s.%d.p50", name, size), p50)
			h.add(fmt.Sprintf("rt.%s.%d.p99", name, size), p99)
		}
	}
	return nil
}

// percentiles returns the p50 and p99 of ds in microseconds.
func percentiles(ds []time.Duration) (p50, p99 float64) {
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

// startEchoPlugin runs bench/internal/echoplugin as its own OS process
// against the server at url, and waits until it says it is registered. The
// returned function stops it.
func startEchoPlugin(ctx context.Context, bin, url, name, trigger, merge string) (func(), error) {
	args := []string{"--nats-url", url, "--name", name, "--version", "1", "--trigger", trigger}
	if merge != "" {
		args = append(args, "--merge", merge)
	}
	return startPlugin(ctx, bin, args)
}

// startPlugin runs a plugin binary that prints "ready" on stdout once
// registered and stops on SIGTERM; the returned function stops it.
func startPlugin(ctx context.Context, bin string, args []string) (func(), error) {
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
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
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case <-ready:
		return stop, nil
	case <-exited:
		return nil, fmt.Errorf("%s exited before it was ready: %s", filepath.Base(bin), stderr.String())
	case <-time.After(wait):
		stop()
		return nil, fmt.Errorf("%s not ready in time", filepath.Base(bin))
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(l.n, len(p))
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
