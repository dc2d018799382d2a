package main

import (
	"context"
	"encoding/json"
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
// for a no-op task that succeeds with no plugins:
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
type floorOps struct {
	name                      string
	clientBefore, clientAfter int // facts
	intake, running, after    int // worker facts besides the final one
	// ce gives each fact qtasks' CloudEvents attributes as NATS headers
	// (events.Event.Encode: about 430 bytes) instead of three short ones:
	// what the wire format itself costs JetStream.
	ce bool
}

var (
	// floorLifecycle: storage_add; storage_update; storage_remove_finished_task.
	floorLifecycle = floorOps{name: "life", clientBefore: 1, intake: 1}
	// floorAll: the 27 facts of a task with every trigger recorded, 5 of
	// them the client's.
	floorAll = floorOps{name: "all", clientBefore: 3, clientAfter: 2, intake: 8, running: 12, after: 1}
	// floorAllCE: floorAll with qtasks' headers on every fact.
	floorAllCE = floorOps{name: "all.ce", clientBefore: 3, clientAfter: 2, intake: 8, running: 12, after: 1, ce: true}
)

func (o floorOps) facts() int {
	return o.clientBefore + o.clientAfter + o.intake + o.running + 1 + o.after
}

// floorTasks is the limit of tasks per second on this JetStream server:
// the operations of floorOps with bare nats.go on a connection made the
// way the bus makes its own (bus.Dial), with messages of qtasks' sizes and
// no encoding, no plugin registry, no trigger logic. The same number of
// tasks, submitting goroutines and worker concurrency as ours; its own
// streams and bucket, configured as qtasks configures its own.
func floorTasks(ops floorOps) func(context.Context, *Harness, int) error {
	return func(ctx context.Context, h *Harness, rep int) error {
		b, err := h.openBus(ctx, bus.Config{})
		if err != nil {
			return err
		}
		defer b.Close()
		f, err := newFloor(ctx, b, ops, h.cfg.Concurrency)
		if err != nil {
			return err
		}
		defer f.close()
		if _, err := f.run(ctx, 20, 4); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		n := h.cfg.Tasks
		cpu0 := selfCPU()
		el, err := f.run(ctx, n, h.cfg.Submitters)
		if err != nil {
			return err
		}
		cpu := selfCPU() - cpu0
		key := "limit.floor." + ops.name
		h.add(key, float64(n)/el.Seconds())
		h.add(key+".cpu", cpuPerTask(cpu, n))
		return nil
	}
}

type floor struct {
	ops    floorOps
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	it     jetstream.MessagesContext
	record []byte // a task record of qtasks' size
	fact   []byte // a fact's data of the size the publish limit uses
	n      atomic.Int64
	done   atomic.Int64
	target atomic.Int64
	all    chan struct{}
	errs   chan error
	wg     sync.WaitGroup
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
	now := time.Now().UTC()
	rec, _ := json.Marshal(events.Task{ID: uuid.NewString(), Name: "noop", Queue: "default", Status: events.StatusNew,
		Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":1,"b":1}`), Attempt: 1, Worker: "bench-node-1234-abcd1234",
		CreatedAt: now, UpdatedAt: now})
	f.record = rec
	f.fact = []byte(`{"input":"` + strings.Repeat("x", factSize-12) + `"}`)

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

func (f *floor) close() {
	if f.it != nil {
		f.it.Stop()
	}
	f.wg.Wait()
	if f.nc != nil {
		f.nc.Close()
	}
}

// run submits n tasks from the given number of goroutines and waits until
// the worker has finished them all.
func (f *floor) run(ctx context.Context, n, submitters int) (time.Duration, error) {
	f.done.Store(0)
	f.all = make(chan struct{})
	f.target.Store(int64(n))
	t0 := time.Now()
	if _, err := submitAll(ctx, n, submitters, f.submit); err != nil {
		return 0, err
	}
	select {
	case <-f.all:
		return time.Since(t0), nil
	case err := <-f.errs:
		return 0, err
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("%d of %d floor tasks done after 5m", f.done.Load(), n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// facts publishes k facts asynchronously and adds their acks to pending.
func (f *floor) facts(id string, k int, pending *[]jetstream.PubAckFuture) error {
	for range k {
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
		fut, err := f.js.PublishMsgAsync(m, jetstream.WithStallWait(wait))
		if err != nil {
			return err
		}
		*pending = append(*pending, fut)
	}
	return nil
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
	if err := f.facts(id, f.ops.clientBefore, &pending); err != nil {
		return err
	}
	if _, err := f.kv.Create(ctx, id, f.record); err != nil {
		return err
	}
	if err := f.publishOnce(ctx, "floor.run.default", id, id+":1", f.record); err != nil {
		return err
	}
	if err := f.facts(id, f.ops.clientAfter, &pending); err != nil {
		return err
	}
	return acks(ctx, &pending)
}

// publishOnce publishes data with a Nats-Msg-Id and waits for the ack, as
// qtasks publishes a task message and a final fact.
func (f *floor) publishOnce(ctx context.Context, subject, id, msgID string, data []byte) error {
	m := nats.NewMsg(subject)
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Header.Set("ce-id", id)
	m.Data = data
	_, err := f.js.PublishMsg(ctx, m)
	return err
}

func (f *floor) work(ctx context.Context, m jetstream.Msg) error {
	id := m.Headers().Get("ce-id")
	var pending []jetstream.PubAckFuture
	e, err := f.kv.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := f.facts(id, f.ops.intake, &pending); err != nil {
		return err
	}
	rev, err := f.kv.Update(ctx, id, f.record, e.Revision())
	if err != nil {
		return err
	}
	if err := f.facts(id, f.ops.running, &pending); err != nil {
		return err
	}
	if err := acks(ctx, &pending); err != nil {
		return err
	}
	if err := f.publishOnce(ctx, "floor.ev.final", id, id+":final", f.fact); err != nil {
		return err
	}
	if _, err := f.kv.Update(ctx, id, f.record, rev); err != nil {
		return err
	}
	if err := f.facts(id, f.ops.after, &pending); err != nil {
		return err
	}
	if err := acks(ctx, &pending); err != nil {
		return err
	}
	return m.Ack()
}
