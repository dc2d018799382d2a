package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// floorOps is the JetStream work of one task as qtasks does it, in the
// order it does it, counted from executor/submit.go and executor/run.go
// for a no-op task that succeeds with no plugins, and the candidate
// exchanges of issue #15 beside it (see floorCandidates):
//
//   - client: the facts before the broker (async), the task record (a KV
//     create, waited for), the task message (a publish with a
//     Nats-Msg-Id, waited for), the facts after the broker (async), then
//     every ack;
//   - worker: the message from a durable pull consumer, the record (a
//     direct get), the facts of intake (async), the record in process (a
//     KV update at its revision, waited for), the facts of the run
//     (async), every ack, the final fact (a publish with a Nats-Msg-Id,
//     waited for), the final record (a KV update, waited for), the fact
//     after (async), every ack, and the message's ack.
//
// Each phase's facts are a list of messages: an entry of 1 is a fact alone
// in binary mode, as today; an entry of k > 1 is k facts in one message in
// the CloudEvents JSON batch format (application/cloudevents-batch+json),
// each a complete structured CloudEvent.
type floorOps struct {
	name                      string
	clientBefore, clientAfter []int
	// intake, prepare (before the task function) and finish (after it,
	// before the final fact) are the worker's phases; after is what follows
	// the final record.
	intake, prepare, finish, after []int
	// ce gives each fact qtasks' CloudEvents attributes as NATS headers
	// (events.Event.Encode: about 430 bytes) instead of three short ones:
	// what the wire format itself costs JetStream. Batched facts always
	// carry their attributes.
	ce bool
	// noProcessRecord leaves out the worker's KV update to status process
	// at intake: the record is written at submission and at the end only,
	// status process is read from the log (candidate d).
	noProcessRecord bool
	// claim writes the record once at intake, right after its read and
	// before the intake's facts, waiting for the ack: the run's claim of
	// our built (f) (a compare-and-set of the record to process with the
	// run's number, issue #12), which candidate (f) leaves out. With
	// noProcessRecord, the floor of (f) + claim.
	claim bool
	// pipelined submits with one wait: the KV create (a publish with
	// Nats-Expected-Last-Subject-Sequence 0 to the bucket's subject), the
	// task message and the facts all published asynchronously, then every
	// ack awaited at once (candidate e): one round trip, as Asynq's
	// Enqueue.
	pipelined bool
	// clientConn submits on a connection of its own, as a client process
	// has, instead of the worker's.
	clientConn bool
	// serverProc runs the JetStream server in a process of its own (a
	// qtasksd with no worker and no projector) instead of in this one; CPU
	// per task then adds that process's.
	serverProc bool
}

// alone is n facts each in a message of its own.
func alone(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

var (
	// floorLifecycle: storage_add; storage_update; storage_remove_finished_task.
	floorLifecycle = floorOps{name: "life", clientBefore: alone(1), intake: alone(1)}
	// floorAll: the 27 facts of a task with every trigger recorded, 5 of
	// them the client's.
	floorAll = floorOps{name: "all", clientBefore: alone(3), clientAfter: alone(2), intake: alone(8),
		prepare: alone(4), finish: alone(8), after: alone(1)}
	// floorAllCE: floorAll with qtasks' headers on every fact.
	floorAllCE = withCE(floorAll, "all.ce")
	// floorLifeCE: floorLifecycle with qtasks' headers on every fact.
	floorLifeCE = withCE(floorLifecycle, "life.ce")
)

func withCE(o floorOps, name string) floorOps { o.ce, o.name = true, name; return o }

// The candidate exchanges of issue #15, every fact with its CloudEvents
// attributes (headers alone, JSON in a batch), so that they compare with
// each other and with floorAllCE / floorLifeCE, candidate (a):
//
//	(b) every phase's facts in one message;
//	(c) the lifecycle facts (and the triggers some plugin is named for;
//	    none in these runs) alone, the rest of each phase in one message,
//	    flushed before a fact that travels alone so that stream order is
//	    firing order;
//	(d) (a) without the record's update to process at intake;
//	(e) (a) with a pipelined submission;
//	(f) (c) + (d) + (e).
//
// Phases of a plain successful task (docs/PROTOCOL.md §6): before the
// broker 1–3 (storage_add third); after it 4, 5; intake 6, 8–14
// (storage_update last); prepare 15–18; finish 19, 21, 22, 16, 23, 24, 26,
// 27; the final fact 28 alone (deduplicated); after 29.
var (
	floorB = floorOps{name: "b.all", ce: true, clientBefore: []int{3}, clientAfter: []int{2}, intake: []int{8},
		prepare: []int{4}, finish: []int{8}, after: []int{1}}
	floorC = floorOps{name: "c.all", ce: true, clientBefore: []int{2, 1}, clientAfter: []int{2}, intake: []int{7, 1},
		prepare: []int{4}, finish: []int{8}, after: []int{1}}
	floorDAll  = noProcess(floorAllCE, "d.all")
	floorDLife = noProcess(floorLifeCE, "d.life")
	floorEAll  = pipelined(floorAllCE, "e.all")
	floorELife = pipelined(floorLifeCE, "e.life")
	floorFAll  = pipelined(noProcess(floorC, ""), "f.all")
	floorFLife = pipelined(noProcess(floorLifeCE, ""), "f.life")
	// floorFConn is (f) with the submissions on a connection of their own.
	floorFConn = ownConn(floorFAll, "f.all.conn")
	// floorFSrv and floorFLifeSrv are (f) with the server in a process of
	// its own: how much of the submission's wait is sharing a process
	// with the server.
	floorFSrv     = ownServer(floorFAll, "f.all.srv")
	floorFLifeSrv = ownServer(floorFLife, "f.life.srv")
	// floorBDE is (b) + (d) + (e): the most packing there is, for scale.
	floorBDE = pipelined(noProcess(floorB, ""), "bde.all")
	// floorFClaimAll and floorFClaimLife are (f) with the run's claim
	// (floorOps.claim): the design as built, whose claim (f) has not.
	floorFClaimAll  = withClaim(floorFAll, "f.claim.all")
	floorFClaimLife = withClaim(floorFLife, "f.claim.life")
)

func withClaim(o floorOps, name string) floorOps { o.claim, o.name = true, name; return o }

func noProcess(o floorOps, name string) floorOps { o.noProcessRecord, o.name = true, name; return o }
func pipelined(o floorOps, name string) floorOps { o.pipelined, o.name = true, name; return o }

// floorCandidates are the candidate exchanges, in the order they run.
var floorCandidates = []floorOps{floorLifeCE, floorB, floorC, floorDLife, floorDAll, floorELife, floorEAll,
	floorFLife, floorFAll, floorFConn, floorFLifeSrv, floorFSrv, floorBDE, floorFClaimLife, floorFClaimAll}

func ownConn(o floorOps, name string) floorOps   { o.clientConn, o.name = true, name; return o }
func ownServer(o floorOps, name string) floorOps { o.serverProc, o.name = true, name; return o }

func (o floorOps) facts() int {
	n := 1 // the final fact
	for _, ph := range [][]int{o.clientBefore, o.clientAfter, o.intake, o.prepare, o.finish, o.after} {
		for _, k := range ph {
			n += k
		}
	}
	return n
}

// messages is how many messages the event log gains per task.
func (o floorOps) messages() int {
	return 1 + len(o.clientBefore) + len(o.clientAfter) + len(o.intake) + len(o.prepare) + len(o.finish) + len(o.after)
}

// floorTasks is the limit of tasks per second on this JetStream server:
// the operations of floorOps with bare nats.go on a connection made the
// way the bus makes its own (bus.Dial), with messages of qtasks' sizes and
// no encoding, no plugin registry, no trigger logic. The same number of
// tasks, submitting goroutines and worker concurrency as ours; its own
// streams and bucket, configured as qtasks configures its own. Besides
// tasks/s: CPU per task (this process, which holds the server), submission
// latency p50/p99 and the event log's messages per task.
func floorTasks(ops floorOps) func(context.Context, *Harness, int) error {
	return func(ctx context.Context, h *Harness, rep int) error {
		var b *bus.Bus
		var err error
		srvPID := 0
		if ops.serverProc {
			qd, qerr := h.startQtasksd("--no-worker", "--no-projection")
			if qerr != nil {
				return qerr
			}
			defer qd.stop()
			srvPID = qd.pid
			b, err = bus.Open(ctx, bus.Config{URL: qd.url, Name: "bench-floor", Logger: h.quiet})
		} else {
			b, err = h.openBus(ctx, bus.Config{})
		}
		if err != nil {
			return err
		}
		defer b.Close()
		cpuNow := func() time.Duration {
			if srvPID != 0 {
				return selfCPU() + pidCPU(srvPID)
			}
			return selfCPU()
		}
		f, err := newFloor(ctx, b, ops, h.cfg.Concurrency)
		if err != nil {
			return err
		}
		defer f.close()
		if _, _, err := f.run(ctx, 20, 4); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		n := h.cfg.Tasks
		before, err := f.logMsgs(ctx)
		if err != nil {
			return err
		}
		var tap *wiretap
		if h.cfg.Count {
			if tap, err = startWiretap(b); err != nil {
				return err
			}
		}
		cpu0 := cpuNow()
		el, lat, err := f.run(ctx, n, h.cfg.Submitters)
		if err != nil {
			return err
		}
		cpu := cpuNow() - cpu0
		if tap != nil {
			tap.report(h, "floor/"+ops.name, n)
		}
		if h.cfg.MemProfile != "" {
			if err := writeHeapProfile(h.cfg.MemProfile); err != nil {
				return err
			}
		}
		after, err := f.logMsgs(ctx)
		if err != nil {
			return err
		}
		key := "limit.floor." + ops.name
		h.add(key, float64(n)/el.Seconds())
		h.add(key+".cpu", cpuPerTask(cpu, n))
		addLatency(h, key+".submit", lat)
		h.add(key+".msgs", float64(after-before)/float64(n))
		if ops.pipelined {
			h.add(key+".races", float64(f.races.Load()))
		}
		return nil
	}
}

type floor struct {
	ops floorOps
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	// cnc, cjs and ckv are the submissions' connection: nc's unless
	// ops.clientConn.
	cnc    *nats.Conn
	cjs    jetstream.JetStream
	ckv    jetstream.KeyValue
	it     jetstream.MessagesContext
	record []byte // a task record of qtasks' size
	fact   []byte // a fact's data of the size the publish limit uses
	// element is one fact as an element of a batch: a structured-mode
	// CloudEvent with qtasks' attributes and the fact as its data.
	element []byte
	n       atomic.Int64
	races   atomic.Int64 // tasks that reached the worker before their record
	done    atomic.Int64
	target  atomic.Int64
	all     chan struct{}
	errs    chan error
	wg      sync.WaitGroup
}

const (
	floorEvents = "floor_events"
	floorTasksS = "floor_tasks"
	floorBucket = "floor_tasks_kv"
)

func newFloor(ctx context.Context, b *bus.Bus, ops floorOps, conc int) (*floor, error) {
	nc, err := b.Dial(nats.Name("bench-floor"))
	if err != nil {
		return nil, err
	}
	f := &floor{ops: ops, nc: nc, errs: make(chan error, conc+1)}
	fail := func(err error) (*floor, error) { f.close(); return nil, err }
	if f.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(bus.DefaultMaxPending)); err != nil {
		return fail(err)
	}
	// As bus/provision.go makes the event log, the task queue and the
	// task bucket.
	if _, err := f.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: floorEvents, Subjects: []string{"floor.ev.>"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: 1, MaxBytes: -1}); err != nil {
		return fail(err)
	}
	if _, err := f.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: floorTasksS, Subjects: []string{"floor.run.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: 1, MaxBytes: -1}); err != nil {
		return fail(err)
	}
	if f.kv, err = f.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: floorBucket, History: 1,
		Storage: jetstream.FileStorage, Replicas: 1}); err != nil {
		return fail(err)
	}
	cons, err := f.js.CreateOrUpdateConsumer(ctx, floorTasksS, jetstream.ConsumerConfig{Durable: "floor-worker",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxAckPending: -1})
	if err != nil {
		return fail(err)
	}
	if f.it, err = cons.Messages(jetstream.PullMaxMessages(2 * conc)); err != nil {
		return fail(err)
	}
	f.cjs, f.ckv = f.js, f.kv
	if ops.clientConn {
		if f.cnc, err = b.Dial(nats.Name("bench-floor-client")); err != nil {
			return fail(err)
		}
		if f.cjs, err = jetstream.New(f.cnc, jetstream.WithPublishAsyncMaxPending(bus.DefaultMaxPending)); err != nil {
			return fail(err)
		}
		if f.ckv, err = f.cjs.KeyValue(ctx, floorBucket); err != nil {
			return fail(err)
		}
	}
	now := time.Now().UTC()
	rec, _ := json.Marshal(events.Task{ID: uuid.NewString(), Name: "noop", Queue: "default", Status: events.StatusNew,
		Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":1,"b":1}`), Attempt: 1, Worker: "bench-node-1234-abcd1234",
		CreatedAt: now, UpdatedAt: now})
	f.record = rec
	f.fact = []byte(`{"input":"` + strings.Repeat("x", factSize-12) + `"}`)
	f.element = batchElement(uuid.NewString(), f.fact)

	// The worker: one goroutine pulls (as the executor's fetch loop does),
	// conc goroutines run tasks.
	msgs := make(chan jetstream.Msg, conc)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer close(msgs)
		for {
			m, err := f.it.Next()
			if err != nil {
				return // the iterator was stopped
			}
			msgs <- m
		}
	}()
	for range conc {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for m := range msgs {
				if err := f.work(ctx, m); err != nil {
					select {
					case f.errs <- err:
					default:
					}
					continue
				}
				if f.done.Add(1) == f.target.Load() {
					close(f.all)
				}
			}
		}()
	}
	return f, nil
}

// batchElement is one fact as a structured-mode CloudEvent (JSON event
// format), its attributes those the fact has in binary mode, as an element
// of a batch carries it.
func batchElement(id string, data []byte) []byte {
	attrs := map[string]string{
		"specversion": events.SpecVersion, "id": id + ":1:1:storage_update:0", "source": "qtasks/bench-node-1234-abcd1234",
		"type": events.TypeTriggerPrefix + events.StorageUpdate, "subject": id, "time": time.Now().UTC().Format(time.RFC3339Nano),
		"datacontenttype": events.ContentTypeJSON, "taskid": id, "taskname": "noop", "trigger": events.StorageUpdate,
		"attempt": "1", "run": "1",
	}
	el, _ := json.Marshal(attrs)
	return append(append(el[:len(el)-1], `,"data":`...), append(data, '}')...)
}

func (f *floor) close() {
	if f.it != nil {
		f.it.Stop()
	}
	f.wg.Wait()
	if f.nc != nil {
		f.nc.Close()
	}
	if f.cnc != nil {
		f.cnc.Close()
	}
}

// logMsgs is how many messages the floor's event log holds.
func (f *floor) logMsgs(ctx context.Context) (uint64, error) {
	s, err := f.js.Stream(ctx, floorEvents)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// run submits n tasks from the given number of goroutines and waits until
// the worker has finished them all; it returns the time taken and each
// submission's latency.
func (f *floor) run(ctx context.Context, n, submitters int) (time.Duration, []time.Duration, error) {
	f.done.Store(0)
	f.all = make(chan struct{})
	f.target.Store(int64(n))
	t0 := time.Now()
	lat, err := submitAll(ctx, n, submitters, f.submit)
	if err != nil {
		return 0, nil, err
	}
	select {
	case <-f.all:
		return time.Since(t0), lat, nil
	case err := <-f.errs:
		return 0, nil, err
	case <-time.After(5 * time.Minute):
		return 0, nil, fmt.Errorf("%d of %d floor tasks done after 5m", f.done.Load(), n)
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// facts publishes a phase's facts asynchronously, one message per entry of
// phase, and adds their acks to pending.
func (f *floor) facts(js jetstream.JetStream, id string, phase []int, pending *[]jetstream.PubAckFuture) error {
	for _, k := range phase {
		var m *nats.Msg
		if k == 1 {
			m = f.single(id)
		} else {
			m = f.batch(id, k)
		}
		fut, err := js.PublishMsgAsync(m, jetstream.WithStallWait(wait))
		if err != nil {
			return err
		}
		*pending = append(*pending, fut)
	}
	return nil
}

// single is a fact alone in binary mode on its trigger's subject.
func (f *floor) single(id string) *nats.Msg {
	m := nats.NewMsg("floor.ev." + id[len(id)-1:])
	if f.ops.ce {
		ev := events.Event{
			ID: id + ":1:1:storage_update", Source: "qtasks/bench-node-1234-abcd1234", Type: events.TypeTriggerPrefix + events.StorageUpdate,
			Subject: id, Time: time.Now(), DataContentType: events.ContentTypeJSON,
			TaskID: id, TaskName: "noop", Trigger: events.StorageUpdate, Attempt: 1, Run: 1,
		}
		ev.Encode(events.Headers(m.Header))
	} else {
		m.Header.Set("ce-id", strconv.FormatInt(f.n.Add(1), 10))
		m.Header.Set("ce-type", "bench.floor")
		m.Header.Set("content-type", "application/json")
	}
	m.Data = f.fact
	return m
}

// batch is k facts in one message in the CloudEvents JSON batch format, on
// a subject naming the phase and the queue, with the task id and the
// number of facts as headers so that a reader can skip it unread.
func (f *floor) batch(id string, k int) *nats.Msg {
	m := nats.NewMsg("floor.ev.phase." + id[len(id)-1:])
	m.Header["content-type"] = []string{"application/cloudevents-batch+json"}
	m.Header["ce-taskid"] = []string{id}
	m.Header["qtasks-facts"] = []string{strconv.Itoa(k)}
	data := make([]byte, 0, 2+k*(len(f.element)+1))
	data = append(data, '[')
	for i := range k {
		if i > 0 {
			data = append(data, ',')
		}
		data = append(data, f.element...)
	}
	m.Data = append(data, ']')
	return m
}

// acks waits for the acks of pending, as a task of ours waits for its own
// facts' (bus.Acks), and empties it.
func acks(ctx context.Context, pending *[]jetstream.PubAckFuture) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	for _, fut := range *pending {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return err
		case <-t.C:
			return fmt.Errorf("floor: acks missing after %v", wait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	*pending = (*pending)[:0]
	return nil
}

func (f *floor) submit(ctx context.Context, _ int) error {
	id := uuid.NewString()
	var pending []jetstream.PubAckFuture
	if err := f.facts(f.cjs, id, f.ops.clientBefore, &pending); err != nil {
		return err
	}
	if f.ops.pipelined {
		// The KV create as the KV API makes it (a publish expecting the
		// key's subject to be empty), and the task message, not waited for.
		rm := nats.NewMsg("$KV." + floorBucket + "." + id)
		rm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		rm.Data = f.record
		fut, err := f.cjs.PublishMsgAsync(rm, jetstream.WithStallWait(wait))
		if err != nil {
			return err
		}
		pending = append(pending, fut)
		tm := f.taskMsg("floor.run.default", id, id+":1", f.record)
		if fut, err = f.cjs.PublishMsgAsync(tm, jetstream.WithStallWait(wait)); err != nil {
			return err
		}
		pending = append(pending, fut)
	} else {
		if _, err := f.ckv.Create(ctx, id, f.record); err != nil {
			return err
		}
		if _, err := f.cjs.PublishMsg(ctx, f.taskMsg("floor.run.default", id, id+":1", f.record)); err != nil {
			return err
		}
	}
	if err := f.facts(f.cjs, id, f.ops.clientAfter, &pending); err != nil {
		return err
	}
	return acks(ctx, &pending)
}

// taskMsg is data with a Nats-Msg-Id, as qtasks publishes a task message
// and a final fact.
func (f *floor) taskMsg(subject, id, msgID string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Header.Set("ce-id", id)
	m.Data = data
	return m
}

func (f *floor) work(ctx context.Context, m jetstream.Msg) error {
	id := m.Headers().Get("ce-id")
	var pending []jetstream.PubAckFuture
	e, err := f.kv.Get(ctx, id)
	for try := 0; errors.Is(err, jetstream.ErrKeyNotFound) && f.ops.pipelined && try < 1000; try++ {
		// A pipelined submission's record and task message go to two
		// streams, which store them independently: the task may come
		// first. The record is in flight; wait for it.
		f.races.Add(1)
		time.Sleep(time.Millisecond)
		e, err = f.kv.Get(ctx, id)
	}
	if err != nil {
		return err
	}
	rev := e.Revision()
	if f.ops.claim {
		if rev, err = f.kv.Update(ctx, id, f.record, rev); err != nil {
			return err
		}
	}
	if err := f.facts(f.js, id, f.ops.intake, &pending); err != nil {
		return err
	}
	if !f.ops.noProcessRecord {
		if rev, err = f.kv.Update(ctx, id, f.record, rev); err != nil {
			return err
		}
	}
	if err := f.facts(f.js, id, f.ops.prepare, &pending); err != nil {
		return err
	}
	if err := f.facts(f.js, id, f.ops.finish, &pending); err != nil {
		return err
	}
	if err := acks(ctx, &pending); err != nil {
		return err
	}
	if _, err := f.js.PublishMsg(ctx, f.taskMsg("floor.ev.final", id, id+":final", f.fact)); err != nil {
		return err
	}
	if _, err := f.kv.Update(ctx, id, f.record, rev); err != nil {
		return err
	}
	if err := f.facts(f.js, id, f.ops.after, &pending); err != nil {
		return err
	}
	if err := acks(ctx, &pending); err != nil {
		return err
	}
	return m.Ack()
}
