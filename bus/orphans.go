package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// scanBatch is how many record writes NewTaskRecords fetches at a time.
const scanBatch = 256

// NewTaskRecords calls fn for every write of a task record stored in
// [since, until) (the server's clock) that wrote status new, in stream
// order, with the time the server stored it; it returns the time of the
// last write it read (since when none). It is how a janitor finds records
// that may never have been queued: a record is written new once, at
// submission, and every later write of it (a worker's claim of a run, its
// status process, the final record) is another. Whether a write found is
// still the record's current one is for the caller to ask
// (GetTaskLatest: its revision is the write's sequence).
func (b *Bus) NewTaskRecords(ctx context.Context, since, until time.Time, fn func(rec TaskRecord, stored time.Time) error) (time.Time, error) {
	last := since
	if !until.After(since) {
		return last, nil
	}
	cons, err := b.js.OrderedConsumer(ctx, "KV_"+BucketTasks, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{taskSubject("*")},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return last, fmt.Errorf("reading the task bucket: %w", err)
	}
	for {
		// What is stored already is all there is to read: no waiting.
		batch, err := cons.FetchNoWait(scanBatch)
		if err != nil {
			return last, fmt.Errorf("reading the task bucket: %w", err)
		}
		n := 0
		var pending uint64
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return last, fmt.Errorf("reading the task bucket: %w", err)
			}
			if !md.Timestamp.Before(until) {
				return last, nil
			}
			last, pending = md.Timestamp, md.NumPending
			if len(m.Data()) == 0 { // a delete or purge marker
				continue
			}
			var t events.Task
			if json.Unmarshal(m.Data(), &t) != nil || t.Status != events.StatusNew {
				continue
			}
			if err := fn(TaskRecord{Task: t, Revision: md.Sequence.Stream}, md.Timestamp); err != nil {
				return last, err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return last, fmt.Errorf("reading the task bucket: %w", err)
		}
		if n == 0 || pending == 0 {
			return last, ctx.Err()
		}
	}
}

// maxQueueWalk bounds how many task messages QueuedTaskIDs reads.
const maxQueueWalk = 100_000

// ErrQueueTooLong is QueuedTaskIDs' error for a queue holding more than it
// reads.
var ErrQueueTooLong = errors.New("queue too long to read")

// QueuedTaskIDs returns the ids of the tasks whose messages of queue are
// still in the task stream (waiting, or held by a worker and not
// acknowledged). The task stream is a work queue, on which JetStream allows
// no consumer besides the workers': it reads the messages one by one by
// sequence, at most maxQueueWalk of them (ErrQueueTooLong beyond).
func (b *Bus) QueuedTaskIDs(ctx context.Context, queue string) (map[string]bool, error) {
	ids := map[string]bool{}
	subject := events.RunSubject(queue)
	seq := uint64(1)
	for range maxQueueWalk {
		m, err := b.tasks.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading queue %s: %w", queue, err)
		}
		for _, id := range m.Header[events.HeaderPrefix+events.ExtTaskID] {
			ids[id] = true
		}
		seq = m.Sequence + 1
	}
	return nil, fmt.Errorf("%w: queue %s holds more than %d task messages", ErrQueueTooLong, queue, maxQueueWalk)
}
