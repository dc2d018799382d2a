package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// ErrTaskNotFound is returned for an unknown task id.
var ErrTaskNotFound = errors.New("task not found")

// TaskRecord is a task's current record with its KV revision, for
// compare-and-set updates.
type TaskRecord struct {
	Task     events.Task
	Revision uint64
}

// CreateTask stores a new task record. If a record with the same id exists
// (an idempotent resubmission), it returns that record and created=false.
func (b *Bus) CreateTask(ctx context.Context, t events.Task) (rec TaskRecord, created bool, err error) {
	return b.createTask(ctx, t, nil, nil)
}

// createTask is CreateTask, with t encoded as enc (encodeTask) and, when
// first is not nil, first taken for the error of its first attempt, made
// already (CreateTaskAfter).
func (b *Bus) createTask(ctx context.Context, t events.Task, enc []byte, first error) (rec TaskRecord, created bool, err error) {
	if !events.ValidToken(t.ID) {
		return rec, false, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	data, err := encodeTask(t, enc)
	if err != nil {
		return rec, false, err
	}
	// Created again after an attempt whose answer was lost, the record
	// exists: it is ours if it holds what we wrote.
	var rev uint64
	err = b.retryWrite(ctx, true, func(a writeAttempt) error {
		if a.n == 1 && first != nil {
			return first
		}
		ctx, cancel := a.context()
		defer cancel()
		var err error
		rev, err = b.taskKV.Create(ctx, t.ID, data)
		if a.n > 1 && errors.Is(err, jetstream.ErrKeyExists) {
			if own, ok := b.ownWrite(ctx, t.ID, data); ok {
				rev, err = own, nil
			}
		}
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		rec, err = b.GetTaskLatest(ctx, t.ID)
		return rec, false, err
	}
	if err != nil {
		return rec, false, fmt.Errorf("storing task %s: %w", t.ID, err)
	}
	return TaskRecord{Task: t, Revision: rev}, true, nil
}

// GetTask returns a task's current record, as any replica of the task
// bucket has it. On a cluster the bucket allows direct gets, which any
// replica answers, and a replica may lag its leader by a few writes: a
// record just created can be "not found", one just updated can show its
// previous revision. That is fine for showing a task (qtasksd get, HTTP,
// Wait). What decides something (intake, compare-and-set retries,
// idempotent resubmission) reads with GetTaskLatest.
func (b *Bus) GetTask(ctx context.Context, id string) (TaskRecord, error) {
	return b.getTask(ctx, id, nil)
}

// knownRecord is a task record a reader has decoded already: data and
// its decoding, task. A record stored as exactly data is task, and is not
// decoded again (GetTaskLatestLike).
type knownRecord struct {
	data []byte
	task *events.Task
}

// decode decodes the record of task id, data, or takes k's decoding when
// k holds the same bytes.
func (k *knownRecord) decode(id string, data []byte) (events.Task, error) {
	if k != nil && bytes.Equal(data, k.data) && k.task.ID == id {
		return *k.task, nil
	}
	return decodeRecord(id, data)
}

// ErrNotRecord is a value of the task bucket that is not a record of the
// task its key names: not written by an executor (a plugin can have the
// server write its answers there, kv.go). It is refused, never read as the
// task's record; the task's run fails on it as on an unreadable record.
var ErrNotRecord = errors.New("not a task record")

// decodeRecord decodes data, the value of task id's key: a record of that
// task, with its name and a status (JetStream's answers, a publish ack or
// an API reply, have neither, nor the task's id).
func decodeRecord(id string, data []byte) (events.Task, error) {
	var t events.Task
	if err := events.DecodeTask(data, &t); err != nil {
		return events.Task{}, fmt.Errorf("decoding task %s: %w: %w", id, ErrNotRecord, err)
	}
	if t.ID != id || t.Name == "" || !events.ValidStatus(t.Status) {
		return events.Task{}, fmt.Errorf("decoding task %s: %w: id %q, name %q, status %q", id, ErrNotRecord, t.ID, t.Name, t.Status)
	}
	return t, nil
}

// recordEcho refuses the value of task id's key stored with a Nats-Stream
// header (kvEcho; direct as there).
func recordEcho(id string, h nats.Header, direct bool) error {
	if err := kvEcho(h, direct); err != nil {
		return fmt.Errorf("reading task %s: %w: %w", id, ErrNotRecord, err)
	}
	return nil
}

func (b *Bus) getTask(ctx context.Context, id string, known *knownRecord) (TaskRecord, error) {
	if !events.ValidToken(id) {
		return TaskRecord{}, fmt.Errorf("%w: invalid id %q", ErrTaskNotFound, id)
	}
	if b.taskKV == nil {
		return TaskRecord{}, fmt.Errorf("%w: %s (this connection cannot read task records)", ErrTaskNotFound, id)
	}
	// kvGet, not KeyValue.Get: the headers as stored tell an echo, and a
	// worker reads the record of every task it takes (issue #15), which
	// nats.go would wrap in a regular expression on the key, a JSON body
	// and a context per call.
	e, err := b.kvGet(ctx, BucketTasks, id)
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	if e == nil || e.Deleted {
		return TaskRecord{}, fmt.Errorf("%w: %s", ErrTaskNotFound, id)
	}
	return taskFromMsg(id, e.Header, e.Value, e.Revision, e.direct, known)
}

// taskFromMsg decodes the record of task id stored at seq. A delete or
// purge marker (the record was taken back) or the server's marker of a
// record that expired (FinishedTaskTTL) is ErrTaskNotFound, as
// KeyValue.Get has it. A record known already (known) is not decoded again.
// An echo (kvEcho: h as a direct get answers them when direct) is no
// record.
func taskFromMsg(id string, h nats.Header, data []byte, seq uint64, direct bool, known *knownRecord) (TaskRecord, error) {
	if h.Get(kvOperationHeader) != "" || h.Get(jetstream.MarkerReasonHeader) != "" {
		return TaskRecord{}, fmt.Errorf("%w: %s", ErrTaskNotFound, id)
	}
	if err := recordEcho(id, h, direct); err != nil {
		return TaskRecord{}, err
	}
	t, err := known.decode(id, data)
	if err != nil {
		return TaskRecord{}, err
	}
	return TaskRecord{Task: t, Revision: seq}, nil
}

// GetTaskLatest returns a task's current record as the task bucket's
// stream leader has it: every write acknowledged before the call is seen.
// It asks the leader with the stream's message-get API instead of a direct
// get (nats.go's KeyValue.Get takes a direct get whenever the bucket allows
// them, and cannot be told otherwise). On a single server both read the
// same store. A request the leader does not answer (it died) is asked
// again, as a write is (retryWrite), until ctx ends or, when ctx has no
// deadline, Config.PublishTimeout.
func (b *Bus) GetTaskLatest(ctx context.Context, id string) (TaskRecord, error) {
	return b.getTaskLatest(ctx, id, nil)
}

// GetTaskLatestLike is GetTaskLatest for a reader that holds like, the
// encoding of a record of task id, decoded already as t: a record stored
// as exactly those bytes is t (a copy of it, sharing its slices and map),
// and is not decoded again. A worker reads the record of every task it
// takes, and on a task's first delivery the record holds the task
// message's bytes (a submission writes both from one encoding).
func (b *Bus) GetTaskLatestLike(ctx context.Context, id string, like []byte, t *events.Task) (TaskRecord, error) {
	return b.getTaskLatest(ctx, id, &knownRecord{data: like, task: t})
}

func (b *Bus) getTaskLatest(ctx context.Context, id string, known *knownRecord) (TaskRecord, error) {
	if !events.ValidToken(id) {
		return TaskRecord{}, fmt.Errorf("%w: invalid id %q", ErrTaskNotFound, id)
	}
	if b.taskKV == nil {
		return TaskRecord{}, fmt.Errorf("%w: %s (this connection cannot read task records)", ErrTaskNotFound, id)
	}
	if b.srv != nil {
		// The embedded server is a single server, never clustered: a direct
		// get reads the one store every acknowledged write is in, and costs
		// the server a third of the message-get API's request (JSON in,
		// JSON and base64 out). A worker reads the record of every task it
		// takes (issue #15).
		return b.getTask(ctx, id, known)
	}
	var data []byte
	var seq uint64
	err := b.retryWrite(ctx, true, func(a writeAttempt) error {
		ctx, cancel := a.context()
		defer cancel()
		var err error
		data, seq, err = b.latestTask(ctx, id)
		return err
	})
	if errors.Is(err, ErrTaskNotFound) {
		return TaskRecord{}, err
	}
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	t, err := known.decode(id, data)
	if err != nil {
		return TaskRecord{}, err
	}
	return TaskRecord{Task: t, Revision: seq}, nil
}

// latestTask is one request of GetTaskLatest: the record's data and
// revision as the leader has them.
func (b *Bus) latestTask(ctx context.Context, id string) (data []byte, seq uint64, err error) {
	req, _ := json.Marshal(struct { //nolint:errchkjson // a struct of one string always encodes
		LastBySubject string `json:"last_by_subj"`
	}{taskSubject(id)})
	m, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+BucketTasks, req)
	if err != nil {
		return nil, 0, err
	}
	var resp struct {
		Message *struct {
			Seq     uint64 `json:"seq"`
			Headers []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, 0, fmt.Errorf("decoding the reply: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, 0, fmt.Errorf("%w: %s", ErrTaskNotFound, id)
		}
		return nil, 0, resp.Error
	}
	if resp.Message == nil {
		return nil, 0, errors.New("empty reply")
	}
	if len(resp.Message.Headers) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Headers)
		if err != nil {
			return nil, 0, fmt.Errorf("decoding the reply's headers: %w", err)
		}
		if h.Get(kvOperationHeader) != "" {
			// A delete or purge marker: the record was taken back.
			return nil, 0, fmt.Errorf("%w: %s", ErrTaskNotFound, id)
		}
		// The headers as stored: an echo's Nats-Stream is its own.
		if err := recordEcho(id, h, false); err != nil {
			return nil, 0, err
		}
	}
	return resp.Message.Data, resp.Message.Seq, nil
}

// ownWrite reports whether the record of id is data, as the leader has
// it, and its revision: an earlier attempt of a conditional write whose
// answer was lost stored it (the record holds its write times to the
// nanosecond, so another writer's record is never equal).
func (b *Bus) ownWrite(ctx context.Context, id string, data []byte) (uint64, bool) {
	got, seq, err := b.latestTask(ctx, id)
	return seq, err == nil && bytes.Equal(got, data)
}

func taskSubject(id string) string { return "$KV." + BucketTasks + "." + id }

// SurelyNotStored reports whether err, the error of a publish (Publish,
// Enqueue), means the message was not stored: the server refused it, or it
// never left this process. Any other error (a timeout, a context ended while
// waiting for the ack, a connection lost after sending) leaves the outcome
// unknown.
func SurelyNotStored(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return false
	case errors.As(err, &apiErr),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrInvalidConnection),
		errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject):
		return true
	}
	return false
}

// DeleteTask removes a task's record if it is still at revision rev; a
// later CreateTask may make it again.
func (b *Bus) DeleteTask(ctx context.Context, id string, rev uint64) error {
	if !events.ValidToken(id) {
		return fmt.Errorf("%w: invalid id %q", ErrTaskNotFound, id)
	}
	if err := b.taskKV.Delete(ctx, id, jetstream.LastRevision(rev)); err != nil {
		if revisionMoved(err) {
			return fmt.Errorf("%w: %s", ErrConflict, id)
		}
		return fmt.Errorf("deleting task %s: %w", id, err)
	}
	return nil
}

// ErrConflict is returned by UpdateTask when the record changed since it was
// read.
var ErrConflict = errors.New("task record changed concurrently")

// UpdateTask writes t if the record is still at revision rev.
func (b *Bus) UpdateTask(ctx context.Context, t events.Task, rev uint64) (uint64, error) {
	if !events.ValidToken(t.ID) {
		return 0, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	data, err := t.AppendJSON(nil)
	if err != nil {
		return 0, fmt.Errorf("encoding task %s: %w", t.ID, err)
	}
	return b.updateTask(ctx, t.ID, data, rev, b.recordTTL(t.Status), nil)
}

// UpdateTaskEncoded is UpdateTask for a caller that holds t encoded as
// data (events.Task.AppendJSON): a worker's final record, which its final
// fact carries too, is encoded once.
func (b *Bus) UpdateTaskEncoded(ctx context.Context, t *events.Task, data []byte, rev uint64) (uint64, error) {
	if !events.ValidToken(t.ID) {
		return 0, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	return b.updateTask(ctx, t.ID, data, rev, b.recordTTL(t.Status), nil)
}

// ReplaceForgedTask writes t, a task whose record is ErrNotRecord (a value
// no executor wrote, kv.go), over that value at its revision: what a
// worker does with a task message whose record was forged, as it creates
// a missing one. ErrConflict when the key holds a record again (another
// worker replaced it first: read it).
func (b *Bus) ReplaceForgedTask(ctx context.Context, t events.Task) (TaskRecord, error) {
	if !events.ValidToken(t.ID) {
		return TaskRecord{}, fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID)
	}
	raw, err := b.kvGet(ctx, BucketTasks, t.ID)
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: %w", t.ID, err)
	}
	if raw == nil || raw.Deleted {
		rec, _, err := b.CreateTask(ctx, t)
		return rec, err
	}
	if raw.echo() == nil {
		if _, err := decodeRecord(t.ID, raw.Value); err == nil {
			return TaskRecord{}, fmt.Errorf("%w: %s", ErrConflict, t.ID)
		}
	}
	rev, err := b.UpdateTask(ctx, t, raw.Revision)
	if err != nil {
		return TaskRecord{}, err
	}
	return TaskRecord{Task: t, Revision: rev}, nil
}

// recordTTL is how long a record in status lives: Config.FinishedTaskTTL
// once final, for ever before.
func (b *Bus) recordTTL(status string) time.Duration {
	switch status {
	case events.StatusSuccess, events.StatusError, events.StatusCancel:
		return b.cfg.FinishedTaskTTL
	}
	return 0
}

// updateTask writes the record of id, data, if it is still at revision
// rev. first, when not nil, is the error of a first attempt the caller
// made asynchronously (UpdateTaskAsync): it is read as attempt 1, so that
// the write goes on as it would after a synchronous attempt that failed
// so (retryWrite).
func (b *Bus) updateTask(ctx context.Context, id string, data []byte, rev uint64, ttl time.Duration, first error) (uint64, error) {
	// Written again after an attempt whose answer was lost, the record is
	// past rev: it is ours if it holds what we wrote.
	var n uint64
	err := b.retryWrite(ctx, true, func(a writeAttempt) error {
		if a.n == 1 && first != nil {
			return first
		}
		var err error
		n, err = b.updateRecord(a.ctx, id, data, rev, ttl, a.deadline)
		if a.n > 1 && revisionMoved(err) {
			octx, cancel := a.context()
			own, ok := b.ownWrite(octx, id, data)
			cancel()
			if ok {
				n, err = own, nil
			}
		}
		return err
	})
	if err != nil {
		if revisionMoved(err) {
			return 0, fmt.Errorf("%w: %s", ErrConflict, id)
		}
		return 0, fmt.Errorf("updating task %s: %w", id, err)
	}
	return n, nil
}

// TaskWrite is a conditional write of a task record under way
// (UpdateTaskAsync).
type TaskWrite struct {
	b    *Bus
	id   string
	data []byte
	rev  uint64
	ttl  time.Duration
	f    *pubFuture
	err  error // of the first attempt's send, or of the write when done
	seq  uint64
	done bool
}

// UpdateTaskAsync starts UpdateTask and returns without waiting for its
// answer: TaskWrite.Wait waits for it, and completes the write as
// UpdateTask would when that answer is lost or says nobody stored it. A
// worker's claim of a run is sent this way at intake, and waited for
// only before the first message of the run leaves (PROTOCOL.md §5).
func (b *Bus) UpdateTaskAsync(t events.Task, rev uint64) *TaskWrite {
	w := &TaskWrite{b: b, id: t.ID, rev: rev, ttl: b.recordTTL(t.Status)}
	if !events.ValidToken(t.ID) {
		w.err, w.done = fmt.Errorf("task id %q: must be a valid NATS subject token", t.ID), true
		return w
	}
	var err error
	if w.data, err = t.AppendJSON(nil); err != nil {
		w.err, w.done = fmt.Errorf("encoding task %s: %w", t.ID, err), true
		return w
	}
	w.f, w.err = b.apub.publishWithin(recordMsg(t.ID, w.data, rev, w.ttl), writeAttemptWait)
	return w
}

// Wait waits for the write's outcome, UpdateTask's: the record's new
// revision, or an error (ErrConflict when the record was not at the
// revision given). It may be called again, and answers the same.
func (w *TaskWrite) Wait(ctx context.Context) (uint64, error) {
	if w.done {
		return w.seq, w.err
	}
	w.done = true
	err := w.err
	if err == nil {
		ack, aerr := w.f.await(ctx)
		if aerr == nil {
			w.seq = ack.Sequence
			return w.seq, nil
		}
		err = aerr
	}
	switch {
	case ctx.Err() != nil:
		w.err = fmt.Errorf("updating task %s: %w", w.id, err)
	case revisionMoved(err):
		w.err = fmt.Errorf("%w: %s", ErrConflict, w.id)
	case errors.Is(err, errAnswerLost) || storedByNobody(err):
		// The first attempt's answer was lost, or nobody stored it: the
		// write goes on as UpdateTask's would after such an attempt.
		w.seq, w.err = w.b.updateTask(ctx, w.id, w.data, w.rev, w.ttl, firstAttempt(err))
	default:
		w.err = fmt.Errorf("updating task %s: %w", w.id, err)
	}
	return w.seq, w.err
}

// revisionMoved reports whether a conditional write of a record failed
// because the record is no longer at the revision given.
func revisionMoved(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		errors.Is(err, jetstream.ErrKeyExists)
}

// updateRecord is KeyValue.Update of the task bucket, with the record's
// expiry when ttl > 0: the same conditional publish on the key's subject
// (the key's last sequence must be rev), made with publishSync rather than
// through nats.go's KeyValue, whose PubAck decoding showed in the profile
// of a run (the claim and the final record are two of a run's writes).
func (b *Bus) updateRecord(ctx context.Context, id string, data []byte, rev uint64, ttl time.Duration, deadline time.Time) (uint64, error) {
	ack, err := b.publishSync(ctx, recordMsg(id, data, rev, ttl), deadline)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// recordMsg is the message of a conditional write of the record of id.
func recordMsg(id string, data []byte, rev uint64, ttl time.Duration) *nats.Msg {
	m := &nats.Msg{Subject: taskSubject(id), Header: nats.Header{}, Data: data}
	m.Header[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(rev, 10)}
	if ttl > 0 {
		m.Header[jetstream.MsgTTLHeader] = []string{ttl.String()}
	}
	return m
}

// WatchTask sends a task's record each time it changes, starting with the
// current one, until ctx ends.
func (b *Bus) WatchTask(ctx context.Context, id string) (<-chan events.Task, error) {
	if !events.ValidToken(id) {
		return nil, fmt.Errorf("%w: invalid id %q", ErrTaskNotFound, id)
	}
	if b.taskKV == nil {
		return nil, fmt.Errorf("%w: %s (this connection cannot read task records)", ErrTaskNotFound, id)
	}
	updates, err := b.watchKV(ctx, BucketTasks, id)
	if err != nil {
		return nil, fmt.Errorf("watching task %s: %w", id, err)
	}
	out := make(chan events.Task, 4)
	go func() {
		defer close(out)
		for {
			select {
			case u := <-updates:
				if u == nil || u.Deleted {
					continue
				}
				t, err := decodeRecord(id, u.Value)
				if err == nil {
					err = recordEcho(id, u.Header, false)
				}
				if err != nil {
					b.log.WarnContext(ctx, "ignoring a task record that is not one", "task_id", id, "revision", u.Revision, "err", err)
					continue
				}
				select {
				case out <- t:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Enqueue puts a task on its queue for a worker. The message id is the task
// id and attempt, so a repeated enqueue of the same attempt is dropped. A
// task whose NotBefore is later waits in the task stream as a scheduled
// message until then (delay.go). Either rides out a leader election: it is
// EnqueueAfter with no earlier attempt.
func (b *Bus) Enqueue(ctx context.Context, t events.Task, source string) error {
	return b.EnqueueAfter(ctx, t, nil, source, nil)
}

// TaskConsumer returns the durable pull consumer workers of queue share.
// ackWait is how long a silent worker keeps a task before it is redelivered
// to another; maxDeliver bounds redeliveries (-1 for no bound).
func (b *Bus) TaskConsumer(ctx context.Context, queue string, ackWait time.Duration, maxDeliver int) (jetstream.Consumer, error) {
	if !events.ValidToken(queue) {
		return nil, fmt.Errorf("queue name %q: must be a valid NATS subject token", queue)
	}
	c, err := b.js.CreateOrUpdateConsumer(ctx, StreamTasks, jetstream.ConsumerConfig{
		Durable:       "workers-" + queue,
		Description:   "qtasks workers of queue " + queue,
		FilterSubject: events.RunSubject(queue),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("creating worker consumer for queue %s: %w", queue, err)
	}
	return c, nil
}
