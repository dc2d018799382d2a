package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// idempotencyNamespace derives task ids from idempotency keys.
var idempotencyNamespace = uuid.MustParse("5b0f3c1e-8d4f-4a59-9e57-5b1c1f2a9e10")

// SubmitOptions are per-submission options; nil means the task's defaults.
type SubmitOptions struct {
	// Args are QTasks' positional arguments; the input given to Submit is
	// the keyword arguments.
	Args []any
	// Priority overrides the task's registered priority.
	Priority *int
	// IdempotencyKey makes a resubmission with the same key return the
	// first task instead of creating another. It must pass
	// events.CheckIdempotencyKey, else Submit fails and writes nothing.
	// When empty, Submit makes one (GeneratedKeyPrefix and the task id) and
	// returns it in the task's IdempotencyKey, for a retry after an
	// OutcomeUnknownError.
	IdempotencyKey string
	// Queue overrides the task's queue.
	Queue string
	// Tags are added to the task's registered tags.
	Tags []string
	// Extra metadata for plugins.
	Extra map[string]any
	// MaxTime overrides the task's registered MaxTime for this submission.
	MaxTime *int64
	// Unique derives IdempotencyKey from the submission (UniqueOpts), as
	// River's unique jobs: a second submission within the options' scope
	// returns the first task, a duplicate. It cannot be given with
	// IdempotencyKey.
	Unique *UniqueOpts
	// AllowKeyConflict answers a submission whose IdempotencyKey names a
	// task submitted with another task name, queue, args or kw with that
	// task, as a duplicate, instead of a *KeyConflictError. The decision
	// is recorded either way (events.TypeDuplicate).
	AllowKeyConflict bool
	// TraceParent is a W3C traceparent to carry through every event. One
	// that events.ParseTraceParent refuses is dropped with a warning: a bad
	// trace context must not cost the task (W3C asks the same of a
	// receiving service).
	TraceParent string
	// RunAt delays the task until then: it waits in JetStream, held by no
	// worker, and runs at that time (within events.DelayTolerance), never
	// before. A time not after now runs at once. See delay.go.
	RunAt time.Time
	// RunIn delays the task by this long from submission; at most one of
	// RunAt and RunIn may be set.
	RunIn time.Duration
}

// Submit fires the submission triggers and queues a task. input becomes the
// task's kw (nil for none); opts may be nil. Submit returns once JetStream
// has acknowledged the task: from then on it reaches a final status even if
// workers crash.
//
// An error means the task was not queued, except an *OutcomeUnknownError
// (errors.Is ErrOutcomeUnknown): the task may be queued, and the task
// returned with it carries its id and idempotency key. Submit again with
// that key to settle it: it returns the task, queued, and never a second
// one. A key that names a task submitted with another name, queue, args or
// kw is a *KeyConflictError (unless SubmitOptions.AllowKeyConflict);
// SubmitOne also says whether the task returned is a duplicate.
func (a *App) Submit(ctx context.Context, name string, input any, opts *SubmitOptions) (events.Task, error) {
	return a.submit(ctx, name, input, opts, nil)
}

// submit is Submit; *dup, when dup is not nil, is set when the key named
// an existing task (duplicate, unique.go).
func (a *App) submit(ctx context.Context, name string, input any, opts *SubmitOptions, dup *bool) (events.Task, error) {
	var o SubmitOptions
	if opts != nil {
		o = *opts
	}
	t, err := a.newTask(name, input, &o)
	if err != nil {
		return events.Task{}, err
	}
	if o.IdempotencyKey == "" {
		// Time-ordered (UUIDv7): the id tells when the task was made, so a
		// lookup in the log can start there when the record has expired,
		// and ids go into indexes in order. The key generated with it names
		// it, so that a caller told the outcome is unknown can retry safely.
		id, err := uuid.NewV7()
		if err != nil {
			return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
		}
		t.ID = id.String()
		t.IdempotencyKey = GeneratedKeyPrefix + t.ID
	} else {
		t.ID = KeyTaskID(o.IdempotencyKey)
		// Submissions of one key take turns: they carry the same task id,
		// hence the same fact and invocation ids, and two in flight at once
		// would wait on the same patch (one of them in vain).
		unlock, err := a.lockID(ctx, t.ID)
		if err != nil {
			return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
		}
		defer unlock()
		if rec, err := a.b.GetTaskLatest(ctx, t.ID); err == nil {
			return a.duplicate(ctx, &o, &t, rec, dup)
		} else if !errors.Is(err, bus.ErrTaskNotFound) {
			return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
		}
	}
	now := a.cfg.Now().UTC()
	t.CreatedAt, t.UpdatedAt = now, now
	t.NotBefore = o.runAt(now) // checked by checkDelay in newTask

	if err := checkPayloadSize(&t, "arguments and extra"); err != nil {
		return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
	}
	f := a.newFiring(&t, 0)
	// A submission's ids carry a token of their own: a resubmission of the
	// same idempotency key after a refused one must reach the plugins again,
	// not be dropped as a duplicate.
	f.idBase = t.ID + "~" + uuid.NewString()[:8]
	// storage_add's fact records the task as new: it is held until the
	// task is queued, and written as failed if it is not, so that a task
	// that was never queued is never shown as one waiting (a projection's
	// task new for ever).
	f.hold = events.StorageAdd
	f.phase = events.PhaseSubmit
	fail := func(err error) (events.Task, error) {
		// The facts so far are recorded; the submission is not accepted.
		f.release(err)
		f.flush()
		_ = f.acks.Wait(context.WithoutCancel(ctx))
		return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
	}

	enc, err := a.fireBefore(ctx, f, &t)
	if err != nil {
		return fail(err)
	}
	// The record and the task message (queue.go), after the facts so far.
	rec, created, err := a.storeAndQueue(ctx, f, &t, enc, o.IdempotencyKey == "")
	var unknown *OutcomeUnknownError
	switch {
	case errors.As(err, &unknown):
		// The task may run: storage_add's fact is written as it is.
		f.release(nil)
		f.flush()
		_ = f.acks.Wait(context.WithoutCancel(ctx))
		return t, err
	case err != nil:
		return fail(err)
	case !created:
		// Lost a race on the same idempotency key: the first one stands.
		f.release(errors.New("another submission with the same idempotency key was first"))
		f.flush()
		_ = f.acks.Wait(context.WithoutCancel(ctx))
		return a.duplicate(ctx, &o, &t, rec, dup)
	}
	// The task is queued: from here on nothing may turn the answer into an
	// error, which would tell the caller that it was not. A failure of
	// the after-queue triggers is in their facts and the log. Their facts
	// are written only now: the log holds none for a task never queued.
	f.release(nil)
	f.setPhase(events.PhaseQueued)
	a.fireAfter(ctx, f, &t, enc)
	f.flush()
	if err := f.acks.Wait(ctx); err != nil {
		// Some of the submission's facts may be missing from the log; the
		// task is queued all the same, and runs.
		a.log.WarnContext(ctx, "task queued; some of its submission facts are not confirmed stored", "task_id", t.ID, "err", err)
	}
	a.countSubmitted(&t)
	return t, nil
}

// newTask is the task of a submission of name with input and o, before its
// id and the plugins: checked, encoded, with the registered task's
// defaults and o's overrides, its key derived from o.Unique and digested
// (keyOf). Its errors blame the request (ErrInvalidInput).
func (a *App) newTask(name string, input any, o *SubmitOptions) (events.Task, error) {
	if !events.ValidToken(name) {
		return events.Task{}, fmt.Errorf("submitting %q: the task name must be a valid NATS subject token: %w", name, ErrInvalidInput)
	}
	if err := events.CheckIdempotencyKey(o.IdempotencyKey); err != nil {
		return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
	}
	if err := o.checkDelay(); err != nil {
		return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
	}
	if o.TraceParent != "" && !events.ValidTraceParent(o.TraceParent) {
		a.log.Warn("dropping an invalid traceparent", "task_name", name, "traceparent_bytes", len(o.TraceParent))
		o.TraceParent = ""
	}
	kw, err := encodeKw(input)
	if err != nil {
		return events.Task{}, fmt.Errorf("submitting %s: %w: %w", name, ErrInvalidInput, err)
	}
	args := json.RawMessage("[]")
	if o.Args != nil {
		if args, err = json.Marshal(o.Args); err != nil {
			return events.Task{}, fmt.Errorf("submitting %s: encoding args: %w: %w", name, ErrInvalidInput, err)
		}
	}
	var extra map[string]json.RawMessage
	if len(o.Extra) > 0 {
		extra = make(map[string]json.RawMessage, len(o.Extra))
		for k, v := range o.Extra {
			b, err := json.Marshal(v)
			if err != nil {
				return events.Task{}, fmt.Errorf("submitting %s: encoding extra %q: %w: %w", name, k, ErrInvalidInput, err)
			}
			extra[k] = b
		}
	}
	// Priority: explicit, else the registered task's, else 0 (as QTasks).
	t := events.Task{
		Name: name, Queue: a.cfg.Queue, Status: events.StatusNew, Attempt: 1, Args: args, Kw: kw,
		IdempotencyKey: o.IdempotencyKey, Trace: o.TraceParent, Extra: extra,
	}
	if d, ok := a.task(name); ok {
		t.Priority = d.opts.Priority
		t.Retry = d.opts.Retry
		t.Tags = slices.Clone(d.opts.Tags)
		t.TimeoutMS = d.opts.MaxTime.Milliseconds()
		if d.opts.Queue != "" {
			t.Queue = d.opts.Queue
		}
		for k, v := range d.opts.Extra {
			if _, set := t.Extra[k]; set {
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				return events.Task{}, fmt.Errorf("submitting %s: encoding extra %q: %w", name, k, err)
			}
			if t.Extra == nil {
				t.Extra = map[string]json.RawMessage{}
			}
			t.Extra[k] = b
		}
	}
	if o.Priority != nil {
		t.Priority = *o.Priority
	}
	if o.Queue != "" {
		t.Queue = o.Queue
	}
	if o.MaxTime != nil {
		t.TimeoutMS = *o.MaxTime
	}
	t.Tags = append(t.Tags, o.Tags...)
	if !events.ValidToken(t.Queue) {
		return events.Task{}, fmt.Errorf("submitting %s: queue %q must be a valid NATS subject token: %w", name, t.Queue, ErrInvalidInput)
	}
	// Unique options derive the key; a key gets the submission's digest
	// (unique.go).
	if err := keyOf(o, &t, a.cfg.Now()); err != nil {
		return events.Task{}, fmt.Errorf("submitting %s: %w", name, err)
	}
	return t, nil
}

// fireBefore fires the triggers of t's submission before it is stored and
// queued (qtasks_add_task_before_broker, broker_add_before, storage_add),
// taking what their plugins patched, and returns t encoded (encodeRecord):
// the record is encoded once for the payloads that carry it, the record
// itself and the task message, again only when a plugin changed it. An
// error means t must not be stored.
func (a *App) fireBefore(ctx context.Context, f *firing, t *events.Task) ([]byte, error) {
	// qtasks_add_task_before_broker: name, priority, args, kw and extra.
	type before struct {
		TaskName string                     `json:"task_name"`
		Priority int                        `json:"priority"`
		Args     json.RawMessage            `json:"args"`
		Kw       json.RawMessage            `json:"kw"`
		Extra    map[string]json.RawMessage `json:"extra"`
	}
	out, err := f.fire(ctx, events.QTasksAddTaskBeforeBroker, before{t.Name, t.Priority, t.Args, t.Kw, t.Extra})
	if err != nil {
		return nil, err
	}
	b := before{t.Name, t.Priority, t.Args, t.Kw, t.Extra}
	if out != nil {
		b = before{}
		if err := json.Unmarshal(out, &b); err != nil {
			return nil, fmt.Errorf("%s output: %w", events.QTasksAddTaskBeforeBroker, err)
		}
	}
	if b.TaskName != "" && b.TaskName != t.Name {
		if !events.ValidToken(b.TaskName) {
			return nil, fmt.Errorf("a plugin renamed the task to %q, which is not a valid name", b.TaskName)
		}
		t.Name = b.TaskName
	}
	t.Priority = b.Priority
	t.Args, t.Kw = orEmpty(b.Args, "[]"), orEmpty(b.Kw, "{}")
	t.Extra = b.Extra
	if err := checkPayloadSize(t, "arguments and extra as patched"); err != nil {
		return nil, err
	}

	// broker_add_before: the new record.
	rec := encodeRecord(*t)
	if out, err = f.fire(ctx, events.BrokerAddBefore, encoded(modelInput(rec))); err != nil {
		return nil, err
	}
	if out != nil {
		if err := takeModel(out, "model", t); err != nil {
			return nil, err
		}
		rec = encodeRecord(*t)
	}
	// storage_add: the record is stored with status new.
	if out, err = f.fire(ctx, events.StorageAdd, encoded(storageAddInput(rec, t.ID))); err != nil {
		return nil, err
	}
	if out != nil {
		if err := takeModel(out, "task_status", t); err != nil {
			return nil, err
		}
		rec = encodeRecord(*t)
	}
	// The plugins of broker_add_before and storage_add may have grown the
	// extra: what is stored and queued must fit the facts of every run.
	if err := checkPayloadSize(t, "arguments and extra as patched"); err != nil {
		return nil, err
	}
	return rec, nil
}

// fireAfter fires the triggers of t's submission once it is queued
// (broker_add_after, qtasks_add_task_after_broker). A failure is in their
// facts and the log, and changes nothing: the task is queued. rec is t
// encoded (fireBefore's).
func (a *App) fireAfter(ctx context.Context, f *firing, t *events.Task, rec []byte) {
	if _, err := f.fire(ctx, events.BrokerAddAfter, encoded(modelInput(rec))); err != nil {
		a.log.WarnContext(ctx, "task queued; a plugin failed after it", "task_id", t.ID, "trigger", events.BrokerAddAfter, "err", err)
	} else if _, err := f.fire(ctx, events.QTasksAddTaskAfterBroker, events.AfterBrokerPayload{
		TaskID: t.ID, TaskName: t.Name, Priority: t.Priority, Args: t.Args, Kw: t.Kw,
	}); err != nil {
		a.log.WarnContext(ctx, "task queued; a plugin failed after it", "task_id", t.ID, "trigger", events.QTasksAddTaskAfterBroker, "err", err)
	}
}

// checkPayloadSize checks a task's arguments and extra against
// events.MaxPayloadSize, at submission: every fact of a run that carries
// the record carries them, before and after the plugins, and one too large
// for the log would fail the task on every delivery.
func checkPayloadSize(t *events.Task, what string) error {
	n := len(t.Args) + len(t.Kw)
	if len(t.Extra) > 0 {
		b, err := json.Marshal(t.Extra)
		if err != nil {
			return fmt.Errorf("encoding extra: %w", err)
		}
		n += len(b)
	}
	if n > events.MaxPayloadSize {
		return fmt.Errorf("%s are %d bytes, at most %d: %w", what, n, events.MaxPayloadSize, events.ErrTooLarge)
	}
	return nil
}

// GeneratedKeyPrefix starts the idempotency key Submit makes for a
// submission that brings none: the prefix, then the task id. A key of that
// form names its task id as it is (KeyTaskID), so a retry with it finds the
// same task.
const GeneratedKeyPrefix = "id:"

// KeyTaskID is the task id of a submission with idempotency key key: the
// id in a generated key (GeneratedKeyPrefix and a UUID), else a UUIDv5 of
// the key.
func KeyTaskID(key string) string {
	if rest, ok := strings.CutPrefix(key, GeneratedKeyPrefix); ok {
		if id, err := uuid.Parse(rest); err == nil && id.String() == rest {
			return rest
		}
	}
	return uuid.NewSHA1(idempotencyNamespace, []byte(key)).String()
}

// ErrInvalidInput is wrapped by Submit's errors that blame the request (a
// bad task name or queue, arguments that do not encode); events.ErrTooLarge
// by those of arguments too large. Other errors are the bus's or a
// plugin's.
var ErrInvalidInput = errors.New("invalid input")

// ErrOutcomeUnknown is what an OutcomeUnknownError matches with errors.Is.
var ErrOutcomeUnknown = errors.New("outcome unknown: the task may or may not be queued")

// OutcomeUnknownError is Submit's error when the task may have been queued
// (JetStream stored the task message and its ack was lost, or the context
// ended while waiting for it). Submit's every other error means the task was
// not queued. A retry of Submit with IdempotencyKey settles it without a
// duplicate: it returns the task, queued.
type OutcomeUnknownError struct {
	TaskID         string
	IdempotencyKey string
	Err            error // the cause
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("%v: %v (task %s; retry with idempotency key %q)", ErrOutcomeUnknown, e.Err, e.TaskID, e.IdempotencyKey)
}

// Unwrap gives ErrOutcomeUnknown and the cause.
func (e *OutcomeUnknownError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }

// resubmitted answers a submission whose idempotency key already has a
// record. A record still new may be one whose submission did not end well
// (its enqueue's outcome unknown, or the caller gone after creating it): it
// is queued again, which JetStream drops as a duplicate if the task message
// is stored already. Past the duplicate window that could queue a second
// copy of a task waiting in a long queue, so an older record is left to
// the janitor, which ends it if it has no task message.
func (a *App) resubmitted(ctx context.Context, rec bus.TaskRecord) (events.Task, error) {
	t := rec.Task
	if t.Status != events.StatusNew || t.Attempt != 1 ||
		a.cfg.Now().Sub(t.UpdatedAt) > bus.DefaultDuplicateWindow-bus.TaskClockSkew {
		return t, nil
	}
	if err := a.b.Enqueue(ctx, t, a.source); err != nil {
		if bus.SurelyNotStored(err) {
			return events.Task{}, fmt.Errorf("submitting %s: queueing task %s again: %w", t.Name, t.ID, err)
		}
		return t, &OutcomeUnknownError{TaskID: t.ID, IdempotencyKey: t.IdempotencyKey, Err: fmt.Errorf("submitting %s: %w", t.Name, err)}
	}
	return t, nil
}

// lockID takes the submission lock of task id, waiting until ctx ends.
func (a *App) lockID(ctx context.Context, id string) (unlock func(), err error) {
	a.submitMu.Lock()
	l := a.submitting[id]
	if l == nil {
		l = &idLock{ch: make(chan struct{}, 1)}
		a.submitting[id] = l
	}
	l.refs++
	a.submitMu.Unlock()
	release := func() {
		a.submitMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(a.submitting, id)
		}
		a.submitMu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, context.Cause(ctx)
	}
}

// idLock is a lock that a waiter can give up on.
type idLock struct {
	ch   chan struct{}
	refs int // holders and waiters; guarded by App.submitMu
}

func encodeKw(input any) (json.RawMessage, error) {
	if input == nil {
		return json.RawMessage("{}"), nil
	}
	b, err := json.Marshal(input)
	if err != nil {
		return nil, fmt.Errorf("encoding input: %w", err)
	}
	if string(b) == "null" {
		return json.RawMessage("{}"), nil
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("input must encode to a JSON object (the task's kw), got %.40s; pass positional arguments in SubmitOptions.Args", b)
	}
	return b, nil
}

func orEmpty(b json.RawMessage, empty string) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return json.RawMessage(empty)
	}
	return b
}

// takeModel reads back the patchable fields of the record at key of a
// trigger's output; nil out (unchanged) keeps them. Identity fields are not
// patchable (the trigger contract forbids it), so they are kept from t.
func takeModel(out json.RawMessage, key string, t *events.Task) error {
	if out == nil {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		return fmt.Errorf("reading patched payload: %w", err)
	}
	var nt events.Task
	if err := json.Unmarshal(m[key], &nt); err != nil {
		return fmt.Errorf("reading patched %s: %w", key, err)
	}
	t.Priority = nt.Priority
	t.Args, t.Kw = orEmpty(nt.Args, "[]"), orEmpty(nt.Kw, "{}")
	t.Extra = maps.Clone(nt.Extra)
	t.Tags = nt.Tags
	t.Result = nt.Result
	return nil
}

// Get returns a task's current record. It may be a moment behind on a
// cluster (bus.GetTask), but never says "not found" for a task whose
// submission returned: that answer is checked with the leader.
func (a *App) Get(ctx context.Context, id string) (events.Task, error) {
	rec, err := a.b.GetTask(ctx, id)
	if errors.Is(err, bus.ErrTaskNotFound) {
		rec, err = a.b.GetTaskLatest(ctx, id)
	}
	return rec.Task, err
}

// Wait blocks until task id reaches success, error or cancel, following its
// retries, and returns its record. Use Result to decode the outcome.
func (a *App) Wait(ctx context.Context, id string) (events.Task, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := a.b.WatchTask(ctx, id)
	if err != nil {
		return events.Task{}, err
	}
	var last events.Task
	seen := false
	for t := range ch {
		last, seen = t, true
		switch t.Status {
		case events.StatusSuccess, events.StatusError, events.StatusCancel:
			return t, nil
		}
	}
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		if !seen {
			if _, gerr := a.b.GetTaskLatest(context.WithoutCancel(ctx), id); errors.Is(gerr, bus.ErrTaskNotFound) {
				return events.Task{}, gerr
			}
		}
		return last, fmt.Errorf("waiting for task %s (status %s): %w", id, last.Status, err)
	}
	return last, fmt.Errorf("waiting for task %s: watch ended", id)
}
