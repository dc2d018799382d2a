package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// UniqueOpts make a submission unique, as River's UniqueOpts do: the
// idempotency key is derived from the task name and what the options
// cover, so that a second submission with the same values returns the
// first task (SubmitResult.Duplicate) instead of queueing another. At
// least one option must be set.
//
// A task is unique for as long as its record lasts: while it waits or
// runs, and once finished for bus.Config.FinishedTaskTTL (7 days by
// default). There is no ByState: a key names one task id, which cannot be
// made again while its record stands; use ByPeriod to let a new task be
// made in each period.
type UniqueOpts struct {
	// ByArgs puts the args and kw in the key, in canonical form
	// (events.CanonicalJSON: key order and spacing do not count). Without
	// it, submissions with other arguments are duplicates of the first.
	ByArgs bool
	// ByQueue puts the queue in the key: the same task in another queue is
	// another task. Without it a task is unique across queues.
	ByQueue bool
	// ByPeriod puts the period the submission falls in (Config.Now) in
	// the key: a new task can be made in each period. Periods are aligned
	// on the Unix epoch, so a 24h period starts at 00:00 UTC. At least 1s.
	ByPeriod time.Duration
}

// MinUniquePeriod is the shortest UniqueOpts.ByPeriod.
const MinUniquePeriod = time.Second

// ErrKeyConflict is what a *KeyConflictError matches with errors.Is.
var ErrKeyConflict = errors.New("idempotency key conflict: the key names a task submitted with other arguments")

// KeyConflictError is Submit's error when the idempotency key given names
// a task submitted with another task name, queue, args or kw: the key is
// being reused for other work, which a silent duplicate would hide.
// Nothing was queued. SubmitOptions.AllowKeyConflict answers such a
// submission with the existing task instead.
type KeyConflictError struct {
	IdempotencyKey string
	// Task is the existing task the key names.
	Task events.Task
	// Differs lists the parts that differ (events.SubmitParts).
	Differs []string
}

func (e *KeyConflictError) Error() string {
	return fmt.Sprintf("%v: key %q names task %s, submitted with another %s", ErrKeyConflict, e.IdempotencyKey, e.Task.ID, strings.Join(e.Differs, ", "))
}

// Unwrap gives ErrKeyConflict.
func (e *KeyConflictError) Unwrap() error { return ErrKeyConflict }

// SubmitResult is the outcome of one submission.
type SubmitResult struct {
	// Task is the task queued, or the existing one for a duplicate; for an
	// *OutcomeUnknownError, the one that may be queued.
	Task events.Task
	// Duplicate is true when the idempotency key (given or derived from
	// Unique) named a task that existed: Task is that task, and the
	// submission queued nothing.
	Duplicate bool
	// Err is the submission's error (SubmitMany): as Submit's, it means
	// the task was not queued unless it is an *OutcomeUnknownError.
	Err error
}

// SubmitOne is Submit, and says whether the task is a duplicate.
func (a *App) SubmitOne(ctx context.Context, name string, input any, opts *SubmitOptions) (SubmitResult, error) {
	var r SubmitResult
	r.Task, r.Err = a.submit(ctx, name, input, opts, &r.Duplicate)
	return r, r.Err
}

// keyOf derives o's idempotency key from its unique options, and digests
// the submission of a keyed task (events.SubmitDigest) so that a later one
// with the same key can be told a repeat or a conflict. A task without a
// key has no digest: only a retry with its generated key could name it.
func keyOf(o *SubmitOptions, t *events.Task, now time.Time) error {
	if u := o.Unique; u != nil {
		if o.IdempotencyKey != "" {
			return fmt.Errorf("unique options and an idempotency key: give one or the other: %w", ErrInvalidInput)
		}
		key, err := uniqueKey(u, t, now)
		if err != nil {
			return err
		}
		o.IdempotencyKey, t.IdempotencyKey = key, key
	}
	if o.IdempotencyKey == "" {
		return nil
	}
	d, err := events.SubmitDigest(t.Name, t.Queue, t.Args, t.Kw)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	t.SubmitDigest = d
	return nil
}

// uniqueKey is the idempotency key of t under u: events.UniqueKeyPrefix
// and a SHA-256 of the name and what u covers, each part labelled so that
// keys of different options never collide.
func uniqueKey(u *UniqueOpts, t *events.Task, now time.Time) (string, error) {
	if !u.ByArgs && !u.ByQueue && u.ByPeriod == 0 {
		return "", fmt.Errorf("unique options: set at least one of ByArgs, ByQueue, ByPeriod: %w", ErrInvalidInput)
	}
	if u.ByPeriod != 0 && u.ByPeriod < MinUniquePeriod {
		return "", fmt.Errorf("unique period %v: at least %v: %w", u.ByPeriod, MinUniquePeriod, ErrInvalidInput)
	}
	h := sha256.New()
	part := func(label string, v []byte) {
		h.Write([]byte(label))
		h.Write([]byte{0})
		h.Write([]byte(strconv.Itoa(len(v))))
		h.Write([]byte{0})
		h.Write(v)
	}
	part("name", []byte(t.Name))
	if u.ByArgs {
		for _, v := range []struct {
			label string
			raw   json.RawMessage
		}{{"args", t.Args}, {"kw", t.Kw}} {
			c, err := events.CanonicalJSON(v.raw)
			if err != nil {
				return "", fmt.Errorf("%s: %w: %w", v.label, ErrInvalidInput, err)
			}
			part(v.label, c)
		}
	}
	if u.ByQueue {
		part("queue", []byte(t.Queue))
	}
	if u.ByPeriod > 0 {
		p := u.ByPeriod.Nanoseconds()
		start := now.UnixNano() / p * p
		if now.UnixNano() < 0 && now.UnixNano()%p != 0 {
			start -= p
		}
		part("period", []byte(strconv.FormatInt(p, 10)+"@"+strconv.FormatInt(start, 10)))
	}
	return events.UniqueKeyPrefix + hex.EncodeToString(h.Sum(nil)), nil
}

// decide is the decision on submission t, whose key names the existing
// task old: a duplicate, or a conflict when a key the caller gave (not a
// unique one: that leaves parts out by design) names a task submitted
// with other parts and the caller did not allow it.
func decide(o *SubmitOptions, t *events.Task, old events.Task) (events.DuplicateDecision, error) {
	d := events.DuplicateDecision{
		Decision: events.DecisionDuplicate, TaskID: old.ID, Attempt: max(old.Attempt, 1), Queue: old.Queue,
		IdempotencyKey: old.IdempotencyKey, TaskName: t.Name, Status: old.Status,
		Differs: events.DigestDiffers(t.SubmitDigest, old.SubmitDigest), Unique: o.Unique != nil,
	}
	if d.IdempotencyKey == "" {
		d.IdempotencyKey = t.IdempotencyKey
	}
	if len(d.Differs) > 0 && o.Unique == nil && !o.AllowKeyConflict {
		d.Decision = events.DecisionConflict
		return d, &KeyConflictError{IdempotencyKey: d.IdempotencyKey, Task: old, Differs: d.Differs}
	}
	return d, nil
}

// decisionEvent is the log event of decision d, on submission t.
func (a *App) decisionEvent(d *events.DuplicateDecision, t *events.Task) (events.Event, error) {
	if err := d.Check(); err != nil {
		return events.Event{}, err
	}
	data, err := json.Marshal(d)
	if err != nil {
		return events.Event{}, err
	}
	return events.Event{
		ID: "dup:" + uuid.NewString(), Source: a.source, Type: events.TypeDuplicate, Subject: d.TaskID,
		Time: a.cfg.Now().UTC(), DataContentType: events.ContentTypeJSON, Data: data,
		TaskID: d.TaskID, Attempt: d.Attempt, TraceParent: t.Trace,
	}, nil
}

// publishDecision writes decision d to the log without waiting; the
// future says when it is stored.
func (a *App) publishDecision(d *events.DuplicateDecision, t *events.Task) (jetstream.PubAckFuture, error) {
	ev, err := a.decisionEvent(d, t)
	if err != nil {
		return nil, fmt.Errorf("recording the %s decision: %w", d.Decision, err)
	}
	return a.b.PublishAsync(events.DuplicateSubject(d.Queue), "", &ev)
}

// recordDecision writes decision d to the log and waits until it is
// stored. A failure is logged and does not change the answer: the key's
// task stands, or the conflict is refused, whether or not the decision
// could be recorded.
func (a *App) recordDecision(ctx context.Context, d *events.DuplicateDecision, t *events.Task) {
	ev, err := a.decisionEvent(d, t)
	if err == nil {
		_, err = a.b.Publish(context.WithoutCancel(ctx), events.DuplicateSubject(d.Queue), "", &ev)
	}
	if err != nil {
		a.log.WarnContext(ctx, "the duplicate decision could not be recorded", "task_id", d.TaskID, "decision", d.Decision, "err", err)
	}
}

// duplicate answers submission t, whose key names the existing record rec:
// the decision is recorded, then a conflict is refused and a duplicate
// answered with the existing task (resubmitted); *dup says so.
func (a *App) duplicate(ctx context.Context, o *SubmitOptions, t *events.Task, rec bus.TaskRecord, dup *bool) (events.Task, error) {
	d, conflict := decide(o, t, rec.Task)
	a.recordDecision(ctx, &d, t)
	if conflict != nil {
		return events.Task{}, fmt.Errorf("submitting %s: %w", t.Name, conflict)
	}
	if dup != nil {
		*dup = true
	}
	return a.resubmitted(ctx, rec)
}
