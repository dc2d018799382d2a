package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// writeLimit is the deadline of each write TestWritesRideOutALeaderKill
// makes right after a kill: well above an election on a loaded machine
// (4-20 s), and above bus.DefaultPublishTimeout, so that a write that
// waits for the answer of the dead leader fails, and one that asks the
// new leader again succeeds.
const writeLimit = 40 * time.Second

// A write sent to a stream leader that was just killed is never answered:
// the followers drop it until one of them is elected. Submissions used to
// wait for that answer until their deadline (20 s after every leader kill
// in the soak, while JetStream had a new leader after 0.1-5 s). Each
// synchronous write of the task path is made right after the kill of the
// leader of the stream it writes, from a connection to a surviving node,
// and must succeed within writeLimit, stored once.
func TestWritesRideOutALeaderKill(t *testing.T) {
	c := startCluster(t, 3)
	first := c.nodes[0]
	b := openBus(t, first.url(), 3)
	c.waitHealthy(2 * time.Minute)

	// kill kills the leader of stream, which must not be the node the bus
	// is connected to (that would test a reconnect instead), and returns a
	// function restarting it.
	kill := func(stream string) (restart func()) {
		t.Helper()
		waitFor(t, 2*time.Minute, "a leader of "+stream+" other than "+first.name, func() bool {
			if c.leader(stream) != first {
				return true
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = c.nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
			return false
		})
		c.waitHealthy(2 * time.Minute)
		n := c.leader(stream)
		n.kill()
		return func() {
			n.start()
			c.waitHealthy(3 * time.Minute)
		}
	}
	timed := func(what string, write func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), writeLimit)
		defer cancel()
		start := time.Now()
		err := write(ctx)
		t.Logf("%s right after its leader's kill: %v (%v)", what, time.Since(start).Round(time.Millisecond), err)
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}

	// A batch (SubmitMany) and a Submit beside the write, in the same
	// election: the batch's writes must ride it out as Submit's do.
	app := newClient(t, b)
	batch := func(queue string) (wait func()) {
		t.Helper()
		return submitInElection(t, app, c, queue)
	}

	task := events.Task{
		ID: uuid.NewString(), Name: "add", Queue: "default", Status: events.StatusNew, Attempt: 1,
		Args: json.RawMessage("[]"), Kw: json.RawMessage("{}"), CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(),
	}

	// The task bucket: a record created, updated, read.
	restart := kill("KV_" + bus.BucketTasks)
	batchDone := batch("batchkv")
	var rev uint64
	timed("creating a task record", func(ctx context.Context) error {
		rec, created, err := b.CreateTask(ctx, task)
		if err == nil && !created {
			err = errors.New("the record was created by another submission, says CreateTask")
		}
		rev = rec.Revision
		return err
	})
	batchDone()
	restart()
	restart = kill("KV_" + bus.BucketTasks)
	task.Status = events.StatusProcess
	timed("updating a task record", func(ctx context.Context) error {
		var err error
		rev, err = b.UpdateTask(ctx, task, rev)
		return err
	})
	restart()
	restart = kill("KV_" + bus.BucketTasks)
	timed("reading a task record from the leader", func(ctx context.Context) error {
		rec, err := b.GetTaskLatest(ctx, task.ID)
		if err == nil && rec.Revision != rev {
			err = errors.New("read another revision than the one written")
		}
		return err
	})
	restart()

	// The task queue: a task message.
	restart = kill(bus.StreamTasks)
	batchDone = batch("batchq")
	timed("enqueueing a task", func(ctx context.Context) error { return b.Enqueue(ctx, task, "qtasks/faults") })
	batchDone()
	restart()
	s, err := b.JetStream().Stream(context.Background(), bus.StreamTasks)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(events.RunSubject(task.Queue)))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[events.RunSubject(task.Queue)]; n != 1 {
		t.Fatalf("%d task messages stored, want 1", n)
	}

	// A delayed task: its message is scheduled on its delay subject, a
	// write of its own (it once went out once, and failed in an election).
	if !b.SchedulesDelays() {
		t.Fatal("the cluster's task stream takes no scheduled messages: the delayed write is not tested")
	}
	delayed := task
	delayed.ID, delayed.NotBefore = uuid.NewString(), time.Now().Add(time.Hour)
	restart = kill(bus.StreamTasks)
	timed("enqueueing a delayed task", func(ctx context.Context) error { return b.Enqueue(ctx, delayed, "qtasks/faults") })
	restart()
	subj := events.DelaySubject(delayed.Queue, delayed.ID)
	info, err = s.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[subj]; n != 1 {
		t.Fatalf("%d delayed task messages stored, want 1", n)
	}
}

// electionBatch is the size of the batch submitInElection submits: two of
// SubmitMany's chunks, of 250 and 50.
const electionBatch = 300

// submitInElection submits a batch of electionBatch (every third with an
// idempotency key) with SubmitMany, and two tasks with Submit beside it
// (one with a key, one without), on queue, with writeLimit each, right
// away (its stream's leader was just killed), and returns a function that
// waits for them and checks them: every submission queued, with its
// record, and its task message stored once. (SubmitMany used to refuse
// whole chunks, "not queued", while the stream had no leader, where Submit
// with a key asked again and got through; Submit without one failed as
// the batch did.)
func submitInElection(t *testing.T, app *executor.App, c *cluster, queue string) (wait func()) {
	t.Helper()
	reqs := make([]executor.SubmitRequest, electionBatch)
	for i := range reqs {
		o := &executor.SubmitOptions{Queue: queue}
		if i%3 == 0 {
			o.IdempotencyKey = fmt.Sprintf("%s-%d", queue, i)
		}
		reqs[i] = executor.SubmitRequest{Name: "add", Input: map[string]int{"a": i}, Options: o}
	}
	type answer struct {
		res  []executor.SubmitResult
		err  error
		took time.Duration
	}
	many, one, plain := make(chan answer, 1), make(chan answer, 1), make(chan answer, 1)
	run := func(ch chan<- answer, f func(ctx context.Context) ([]executor.SubmitResult, error)) {
		ctx, cancel := context.WithTimeout(context.Background(), writeLimit)
		defer cancel()
		start := time.Now()
		res, err := f(ctx)
		ch <- answer{res, err, time.Since(start)}
	}
	go run(many, func(ctx context.Context) ([]executor.SubmitResult, error) { return app.SubmitMany(ctx, reqs) })
	go run(one, func(ctx context.Context) ([]executor.SubmitResult, error) {
		task, err := app.Submit(ctx, "add", map[string]int{"a": -1}, &executor.SubmitOptions{Queue: queue, IdempotencyKey: queue + "-one"})
		return []executor.SubmitResult{{Task: task, Err: err}}, err
	})
	go run(plain, func(ctx context.Context) ([]executor.SubmitResult, error) {
		task, err := app.Submit(ctx, "add", map[string]int{"a": -2}, &executor.SubmitOptions{Queue: queue})
		return []executor.SubmitResult{{Task: task, Err: err}}, err
	})
	return func() {
		t.Helper()
		var m, o, u answer
		for _, ch := range []chan answer{many, one, plain} {
			select {
			case a := <-ch:
				switch ch {
				case many:
					m = a
				case one:
					o = a
				default:
					u = a
				}
			case <-time.After(hangLimit):
				t.Fatalf("a submission on %s did not return within %v", queue, hangLimit)
			}
		}
		refused, unknown := 0, 0
		var sample error
		for _, r := range m.res {
			switch {
			case errors.Is(r.Err, executor.ErrOutcomeUnknown):
				unknown++
			case r.Err != nil:
				refused++
				sample = r.Err
			}
		}
		t.Logf("in the election, queue %s: SubmitMany of %d: %d refused, %d with their outcome unknown, in %v (e.g. %v); Submit with a key: %v in %v; without: %v in %v",
			queue, len(reqs), refused, unknown, m.took.Round(time.Millisecond), sample, o.err, o.took.Round(time.Millisecond), u.err, u.took.Round(time.Millisecond))
		if o.err != nil {
			t.Errorf("Submit with a key in the election on %s: %v", queue, o.err)
		}
		if u.err != nil {
			t.Errorf("Submit without a key in the election on %s: %v", queue, u.err)
		}
		if m.err != nil {
			t.Fatalf("SubmitMany in the election on %s: %d of %d refused, %d with their outcome unknown, where Submit got through: %v", queue, refused, len(reqs), unknown, m.err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i, r := range m.res {
			if _, err := app.Get(ctx, r.Task.ID); err != nil {
				t.Fatalf("submission %d (task %s) answered queued, its record: %v", i, r.Task.ID, err)
			}
		}
		s, err := c.js.Stream(ctx, bus.StreamTasks)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.RunSubject(queue)))
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Subjects[events.RunSubject(queue)]; n != uint64(len(reqs))+2 {
			t.Fatalf("%d task messages stored on %s, want %d (the batch's and the two Submits', once each)", n, queue, len(reqs)+2)
		}
	}
}
