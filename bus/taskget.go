package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// directGetTask is GetTask on the embedded server: a direct get on the
// bucket's stream, the request KeyValue.Get makes (the bucket allows direct
// gets, provision.go), without what nats.go does around it for every call:
// a regular expression on the key, a JSON request body a direct get by
// subject does not send, and a context wrapped for a deadline. A worker
// reads the record of every task it takes (issue #15). A bucket that
// allows no direct gets (made so by an older version and not updated) is
// read through the message-get API. Without a deadline in ctx it waits at
// most Config.PublishTimeout.
func (b *Bus) directGetTask(ctx context.Context, id string, known *knownRecord) (TaskRecord, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.PublishTimeout)
		defer cancel()
	}
	m, err := b.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+BucketTasks+"."+taskSubject(id), nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return b.apiGetTask(ctx, id, known)
	}
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	if len(m.Data) == 0 {
		if st := m.Header.Get("Status"); st == "404" {
			return TaskRecord{}, fmt.Errorf("%w: %s", ErrTaskNotFound, id)
		} else if st != "" {
			return TaskRecord{}, fmt.Errorf("reading task %s: status %s %s", id, st, m.Header.Get("Description"))
		}
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: the reply's sequence: %w", id, err)
	}
	return taskFromMsg(id, m.Header, m.Data, seq, true, known)
}

// apiGetTask reads a task's record with the stream's message-get API (a
// stream handle fetched now, which sees that the bucket allows no direct
// gets; the bucket's own handle decided it when it was made).
func (b *Bus) apiGetTask(ctx context.Context, id string, known *knownRecord) (TaskRecord, error) {
	s, err := b.js.Stream(ctx, "KV_"+BucketTasks)
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, taskSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return TaskRecord{}, fmt.Errorf("%w: %s", ErrTaskNotFound, id)
	}
	if err != nil {
		return TaskRecord{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	return taskFromMsg(id, m.Header, m.Data, m.Sequence, s.CachedInfo().Config.AllowDirect, known)
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
