package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
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

	task := events.Task{
		ID: uuid.NewString(), Name: "add", Queue: "default", Status: events.StatusNew, Attempt: 1,
		Args: json.RawMessage("[]"), Kw: json.RawMessage("{}"), CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(),
	}

	// The task bucket: a record created, updated, read.
	restart := kill("KV_" + bus.BucketTasks)
	var rev uint64
	timed("creating a task record", func(ctx context.Context) error {
		rec, created, err := b.CreateTask(ctx, task)
		if err == nil && !created {
			err = errors.New("the record was created by another submission, says CreateTask")
		}
		rev = rec.Revision
		return err
	})
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
	timed("enqueueing a task", func(ctx context.Context) error { return b.Enqueue(ctx, task, "qtasks/faults") })
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
}
