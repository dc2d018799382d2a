package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// A fact's publish acknowledgement lost while the connection stays up (the
// stream leader died after storing it, and the client is connected to
// another node of the cluster) left Acks.Wait waiting for ever: async
// publishes had no timeout, and the executor waits without a deadline.
// Here the publish goes to a subject no stream stores, with a silent
// subscriber, so that nobody answers it (and the server does not say "no
// responders").
func TestAcksWaitEndsWhenAnAckIsLost(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, &bus.Config{PublishTimeout: time.Second})
	sub, err := b.Conn().SubscribeSync("lost.ack")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, b.Conn().Flush())
	ev := events.Event{
		ID: "lost-ack", Source: "test", Type: events.TypeTriggerPrefix + events.WorkerAdd,
		Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: []byte(`{}`), Trigger: events.WorkerAdd,
	}
	var acks bus.Acks
	acks.Bound(b.PublishTimeout())
	f, err := b.PublishAsync("lost.ack", "", &ev)
	require.NoError(t, err)
	acks.Add(f)

	done := make(chan error, 1)
	go func() { done <- acks.Wait(context.Background()) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, jetstream.ErrAsyncPublishTimeout)
	case <-time.After(wait):
		t.Fatal("Acks.Wait still waiting for an ack that was lost")
	}
}

// GetTaskLatest reads what GetTask reads, from the leader: a record, its
// revision, and "not found" for a key never made or deleted.
func TestGetTaskLatest(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	_, err := b.GetTaskLatest(ctx, "never")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
	task := events.Task{ID: "t1", Name: "n", Queue: "default", Status: events.StatusNew, Attempt: 1}
	rec, created, err := b.CreateTask(ctx, task)
	require.NoError(t, err)
	require.True(t, created)
	got, err := b.GetTaskLatest(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, rec.Revision, got.Revision)
	require.Equal(t, "n", got.Task.Name)
	require.NoError(t, b.DeleteTask(ctx, "t1", rec.Revision))
	_, err = b.GetTaskLatest(ctx, "t1")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
	_, err = b.GetTaskLatest(ctx, "a.b")
	require.ErrorIs(t, err, bus.ErrTaskNotFound)
}

// Only an error that proves a publish was not stored says so; a timeout or
// an ended context leaves the outcome unknown.
func TestSurelyNotStored(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]bool{
		fmt.Errorf("enqueueing: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077}): true,
		fmt.Errorf("x: %w", jetstream.ErrNoStreamResponse):                             true,
		fmt.Errorf("x: %w", nats.ErrReconnectBufExceeded):                              true,
		fmt.Errorf("x: %w", nats.ErrConnectionClosed):                                  true,
		fmt.Errorf("x: %w", context.DeadlineExceeded):                                  false,
		fmt.Errorf("x: %w", nats.ErrTimeout):                                           false,
		fmt.Errorf("x: %w", jetstream.ErrAsyncPublishTimeout):                          false,
		nil: false,
	} {
		require.Equal(t, want, bus.SurelyNotStored(err), "%v", err)
	}
}

// lostAnswer opens a server and a bus to it through a proxy, and returns a
// function that makes the proxy lose the server's answer to the next
// write on subject: it holds the server's replies from when the write is
// sent, waits until stored reports the write stored, and cuts the
// connection, as a stream leader dying after storing a write and before
// its answer left. The client reconnects through the proxy.
func lostAnswer(t *testing.T) (b, srv *bus.Bus, lose func(subject string, stored func() bool) (done func())) {
	t.Helper()
	srv = bustest.Open(t, nil)
	p := bustest.NewProxy(t, srv.ClientURL())
	b = bustest.Open(t, &bus.Config{URL: p.URL()})
	return b, srv, func(subject string, stored func() bool) func() {
		p.HoldOn(subject)
		return func() {
			bustest.WaitFor(t, wait, "the write stored", stored)
			p.HoldOn("")
			p.Cut()
			p.Release()
		}
	}
}

// A conditional write of a task record whose answer is lost is asked
// again; the second attempt finds the record already at what it writes
// and takes it as its own (it used to wait for the lost answer until its
// deadline, and a retry of the whole submission would have found "another
// submission was first").
func TestTaskWritesRecogniseTheirOwnEarlierAttempt(t *testing.T) {
	t.Parallel()
	b, srv, lose := lostAnswer(t)
	ctx := testCtx(t)
	task := events.Task{ID: "lost-create", Name: "n", Queue: "default", Status: events.StatusNew, Attempt: 1, CreatedAt: fixedTime}

	done := lose("$KV."+bus.BucketTasks+".lost-create", func() bool {
		_, err := srv.GetTaskLatest(ctx, task.ID)
		return err == nil
	})
	go done()
	rec, created, err := b.CreateTask(ctx, task)
	require.NoError(t, err)
	require.True(t, created, "the record is the one this call wrote")

	task.Status = events.StatusProcess
	done = lose("$KV."+bus.BucketTasks+".lost-create", func() bool {
		got, err := srv.GetTaskLatest(ctx, task.ID)
		return err == nil && got.Task.Status == events.StatusProcess
	})
	go done()
	rev, err := b.UpdateTask(ctx, task, rec.Revision)
	require.NoError(t, err, "not a conflict: the record holds this call's write")
	got, err := srv.GetTaskLatest(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, got.Revision, rev)
}

// A publish under a Nats-Msg-Id whose answer is lost is sent again under
// the same id and stored once; one without an id is not sent again (a
// second copy would be stored), and its error leaves the outcome unknown.
func TestPublishAfterALostAnswer(t *testing.T) {
	t.Parallel()
	b, srv, lose := lostAnswer(t)
	ctx := testCtx(t)
	ev := func(id string) *events.Event {
		return &events.Event{
			ID: id, Source: "test", Type: events.TypeAlert, Time: time.Now(),
			DataContentType: events.ContentTypeJSON, Data: []byte(`{}`),
		}
	}
	stored := func(subject string, n int) func() bool {
		return func() bool { return len(bustest.Events(t, srv, subject)) >= n }
	}

	go lose(events.AlertSubject("withid"), stored(events.AlertSubject("withid"), 1))()
	ack, err := b.Publish(ctx, events.AlertSubject("withid"), "once", ev("once"))
	require.NoError(t, err)
	require.True(t, ack.Duplicate, "the second attempt found the first stored")
	require.Len(t, bustest.Events(t, srv, events.AlertSubject("withid")), 1)

	go lose(events.AlertSubject("noid"), stored(events.AlertSubject("noid"), 1))()
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = b.Publish(short, events.AlertSubject("noid"), "", ev("plain"))
	require.Error(t, err)
	require.False(t, bus.SurelyNotStored(err), "%v", err)
	require.Len(t, bustest.Events(t, srv, events.AlertSubject("noid")), 1, "sent once")
}

// A fact published while its stream has no leader (the server answers at
// once that nobody stored it) is sent again by Acks.Wait, within the
// publish timeout, instead of failing the run or leaving the submission's
// fact out of the log: it cannot be stored twice. Here the stream is gone
// until the fact has been sent a few times, then provisioned again.
func TestAcksWaitSendsAgainWhatNobodyStored(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := bustest.Open(t, nil)
	require.NoError(t, b.JetStream().DeleteStream(ctx, bus.StreamEvents))
	ev := events.Event{
		ID: "nobody-stored", Source: "test", Type: events.TypeTriggerPrefix + events.WorkerAdd,
		Time: time.Now(), DataContentType: events.ContentTypeJSON, Data: []byte(`{}`), Trigger: events.WorkerAdd,
	}
	subject := events.FactSubject(events.WorkerAdd, "node")
	var acks bus.Acks
	acks.Bound(b.PublishTimeout())
	sent := b.Conn().Stats().OutMsgs
	f, err := b.PublishAsync(subject, "", &ev)
	require.NoError(t, err)
	acks.Add(f)
	done := make(chan error, 1)
	go func() { done <- acks.Wait(ctx) }()
	// nats.go itself sends it three times; a fourth is Wait's.
	bustest.WaitFor(t, wait, "the fact sent again", func() bool { return b.Conn().Stats().OutMsgs >= sent+4 })
	bustest.Connect(t, b, nil) // provisions the streams again
	require.NoError(t, <-done)
	require.Len(t, bustest.Events(t, b, subject), 1)
}

// An async publish whose answer is lost with its connection fails at once
// with nats.ErrDisconnected (as nats.go's PublishMsgAsync did): an outcome
// unknown, neither a wait until the publish timeout nor "not stored". The
// bus's own async publisher (asyncpub.go) keeps that.
func TestAsyncPublishFailsWhenItsConnectionIsLost(t *testing.T) {
	t.Parallel()
	b, srv, lose := lostAnswer(t)
	ctx := testCtx(t)
	ev := factEvent(events.WorkerAdd, "t-lost", "e-lost")
	subject := events.FactSubject(ev.Trigger, "lostconn")
	done := lose(subject, func() bool {
		return len(bustest.Events(t, srv, subject)) == 1
	})
	f, err := b.PublishAsync(subject, ev.ID, &ev)
	require.NoError(t, err)
	done()
	select {
	case ack := <-f.Ok():
		t.Fatalf("acked through a lost connection: %+v", ack)
	case err := <-f.Err():
		require.ErrorIs(t, err, nats.ErrDisconnected)
		require.False(t, bus.SurelyNotStored(err))
	case <-ctx.Done():
		t.Fatal("no answer")
	}
	// The bus publishes again once reconnected.
	ev2 := factEvent(events.WorkerAdd, "t-lost", "e-after")
	bustest.WaitFor(t, wait, "a publish acked after the reconnect", func() bool {
		f, err := b.PublishAsync(subject, ev2.ID, &ev2)
		if err != nil {
			return false
		}
		_, err = b.AwaitAck(ctx, f)
		return err == nil
	})
}

// The first attempts of a batch's writes, published without waiting,
// whose answers do not come (their stream's leader died with them) are
// given up after an attempt's wait, not the publish timeout, and asked
// again as one write is: the record and the task message the lost
// attempts stored are found the caller's own, each stored once. (A batch
// used to wait for the lost answers until the publish timeout, or fail
// its submissions at the first "no response".)
func TestLostAsyncAttemptsAskedAgain(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	srv := bustest.Open(t, nil)
	p := bustest.NewProxy(t, srv.ClientURL())
	b := bustest.Open(t, &bus.Config{URL: p.URL()})
	task := events.Task{ID: "lost-batch", Name: "n", Queue: "lostbatch", Status: events.StatusNew, Attempt: 1, CreatedAt: fixedTime}

	lose := func(subject string, write func() (jetstream.PubAckFuture, error), stored func() bool) error {
		t.Helper()
		p.HoldOn(subject)
		f, err := write()
		require.NoError(t, err)
		start := time.Now()
		_, errs := b.AwaitAttempts(ctx, []jetstream.PubAckFuture{f})
		require.ErrorIs(t, errs[0], bus.ErrAcksLost)
		require.False(t, bus.SurelyNotStored(errs[0]))
		require.Less(t, time.Since(start), b.PublishTimeout(), "given up after an attempt's wait")
		bustest.WaitFor(t, wait, "the write stored", stored)
		p.Release()
		return errs[0]
	}

	first := lose("$KV."+bus.BucketTasks+"."+task.ID,
		func() (jetstream.PubAckFuture, error) { return b.CreateTaskAsync(task, nil) },
		func() bool { _, err := srv.GetTaskLatest(ctx, task.ID); return err == nil })
	rec, created, err := b.CreateTaskAfter(ctx, task, nil, first)
	require.NoError(t, err)
	require.True(t, created, "the record is the one the first attempt wrote")
	got, err := srv.GetTaskLatest(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, got.Revision, rec.Revision)

	subject := events.RunSubject(task.Queue)
	messages := func() uint64 {
		s, err := srv.JetStream().Stream(ctx, bus.StreamTasks)
		require.NoError(t, err)
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		require.NoError(t, err)
		return info.State.Subjects[subject]
	}
	first = lose(subject,
		func() (jetstream.PubAckFuture, error) { return b.EnqueueAsync(task, nil, "test") },
		func() bool { return messages() == 1 })
	require.NoError(t, b.EnqueueAfter(ctx, task, nil, "test", first))
	require.Equal(t, uint64(1), messages(), "stored once")
}
