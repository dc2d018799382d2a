package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// Errors of the operator actions.
var (
	// ErrTaskFinished is returned by Cancel for a task whose attempt has
	// already ended.
	ErrTaskFinished = errors.New("task already finished")
	// ErrNotRetryable is returned by Retry for a task that did not end in
	// error or cancel.
	ErrNotRetryable = errors.New("only a task that ended in error or cancel can be retried")
)

// Action says who acts and why; both are recorded in the log.
type Action struct {
	// By is who acts: the authenticated user, or an operator's name.
	By string
	// Reason is why, in the operator's words. Optional.
	Reason string
}

// Cancel cancels the current attempt of task id: a queued attempt ends in
// cancel without its function being called, a running one has its
// function's context cancelled on whichever worker runs it, and ends in
// cancel with the operator's reason as its error. The action is recorded in
// the log first; it returns the record as it was. A finished task is
// ErrTaskFinished, and nothing is written.
func (a *App) Cancel(ctx context.Context, id string, act Action) (events.Task, error) {
	if err := events.CheckActor(act.By, act.Reason); err != nil {
		return events.Task{}, err
	}
	rec, err := a.b.GetTask(ctx, id)
	if err != nil {
		return events.Task{}, err
	}
	t := rec.Task
	if events.FinalStatus(t.Status) && t.Status != events.StatusRetry {
		return t, fmt.Errorf("cancelling task %s: %w (status %s)", id, ErrTaskFinished, t.Status)
	}
	attempt := t.Attempt
	if t.Status == events.StatusRetry { // between attempts: the next one is queued
		attempt++
	}
	op := events.OperatorAction{Action: events.ActionCancel, TaskID: id, Attempt: attempt, Queue: t.Queue, By: act.By, Reason: act.Reason}
	if err := op.Check(); err != nil {
		return t, err
	}
	// The mark first: an action in the log that workers never saw would
	// be a lie. If the log surely refused the record, the mark is taken
	// back; if the record may be stored (its acknowledgement lost), the
	// mark stays and the error says so (actionUnknown).
	if err := a.b.SetCancel(ctx, id, bus.Mark{Attempt: attempt, By: act.By, Reason: act.Reason, At: a.cfg.Now().UTC()}); err != nil {
		return t, err
	}
	if _, err := a.b.RecordAction(ctx, a.source, op); err != nil {
		if !bus.SurelyNotStored(err) {
			return t, actionUnknown("the cancel of task "+id, err)
		}
		if cerr := a.b.ClearCancel(context.WithoutCancel(ctx), id); cerr != nil {
			return t, fmt.Errorf("%w; and taking the cancel back failed, so the outcome is unknown: %w", err, cerr)
		}
		return t, err
	}
	a.log.InfoContext(ctx, "task cancel requested", "task_id", id, "attempt", attempt, "by", act.By, "reason", act.Reason)
	return t, nil
}

// Retry queues a new attempt of task id, which must have ended in error or
// cancel; the new attempt is linked to the last (RetryParent) and has the
// arguments as submitted. It returns the new attempt's record.
func (a *App) Retry(ctx context.Context, id string, act Action) (events.Task, error) {
	if err := events.CheckActor(act.By, act.Reason); err != nil {
		return events.Task{}, err
	}
	rec, err := a.b.GetTask(ctx, id)
	if err != nil {
		return events.Task{}, err
	}
	t := rec.Task
	if t.Status != events.StatusError && t.Status != events.StatusCancel {
		return t, fmt.Errorf("retrying task %s: %w (status %s)", id, ErrNotRetryable, t.Status)
	}
	next := nextAttempt(t, a.cfg.Now())
	next.NotBefore = time.Time{} // an operator's retry runs now
	op := events.OperatorAction{Action: events.ActionRetry, TaskID: id, Attempt: t.Attempt, Queue: t.Queue, By: act.By, Reason: act.Reason, Next: &next}
	if err := op.Check(); err != nil {
		return t, err
	}
	// The record moves first, at the revision read: of two operators
	// retrying at once, one wins and the other is told. Then the log, then
	// the task message; past the record, a failure leaves the outcome
	// unknown, which the error says.
	if _, err := a.b.UpdateTask(ctx, next, rec.Revision); err != nil {
		return t, fmt.Errorf("retrying task %s: %w", id, err)
	}
	unknown := func(err error) (events.Task, error) {
		return next, fmt.Errorf("retrying task %s: the record says attempt %d is queued, but %w: the outcome is unknown", id, next.Attempt, err)
	}
	if _, err := a.b.RecordAction(ctx, a.source, op); err != nil {
		return unknown(err)
	}
	if err := a.b.ClearCancel(ctx, id); err != nil {
		return unknown(err)
	}
	if err := a.b.Enqueue(ctx, next, a.source); err != nil {
		return unknown(err)
	}
	a.log.InfoContext(ctx, "task retried by an operator", "task_id", id, "attempt", next.Attempt, "by", act.By, "reason", act.Reason)
	return next, nil
}

// Pause stops the workers of queue from taking tasks (tasks already
// running finish; tasks they held are handed back), until Resume. It
// survives restarts: the pause is kept in JetStream.
func (a *App) Pause(ctx context.Context, queue string, act Action) error {
	op := events.OperatorAction{Action: events.ActionPause, Queue: queue, By: act.By, Reason: act.Reason}
	if err := op.Check(); err != nil {
		return err
	}
	mark := bus.Mark{By: act.By, Reason: act.Reason, At: a.cfg.Now().UTC()}
	rev, err := a.b.SetPause(ctx, queue, mark)
	if err != nil {
		return err
	}
	if _, err := a.b.RecordAction(ctx, a.source, op); err != nil {
		if !bus.SurelyNotStored(err) {
			a.applyControl(bus.ControlUpdate{Pause: queue, Mark: &mark, Revision: rev})
			return actionUnknown("the pause of queue "+queue, err)
		}
		if _, cerr := a.b.ClearPause(context.WithoutCancel(ctx), queue); cerr != nil {
			return fmt.Errorf("%w; and taking the pause back failed, so the outcome is unknown: %w", err, cerr)
		}
		return err
	}
	a.applyControl(bus.ControlUpdate{Pause: queue, Mark: &mark, Revision: rev})
	a.log.InfoContext(ctx, "queue paused", "queue", queue, "by", act.By, "reason", act.Reason)
	return nil
}

// Resume lets the workers of queue take tasks again.
func (a *App) Resume(ctx context.Context, queue string, act Action) error {
	op := events.OperatorAction{Action: events.ActionResume, Queue: queue, By: act.By, Reason: act.Reason}
	if err := op.Check(); err != nil {
		return err
	}
	rev, err := a.b.ClearPause(ctx, queue)
	if err != nil {
		return err
	}
	a.applyControl(bus.ControlUpdate{Pause: queue, Revision: rev})
	if _, err := a.b.RecordAction(ctx, a.source, op); err != nil {
		if !bus.SurelyNotStored(err) {
			return actionUnknown("the resume of queue "+queue, err)
		}
		return fmt.Errorf("%w: the queue is resumed, but the log does not say so", err)
	}
	a.log.InfoContext(ctx, "queue resumed", "queue", queue, "by", act.By, "reason", act.Reason)
	return nil
}

// actionUnknown is the error of an operator's action that is in effect
// while its record in the log may or may not be stored (the publish's
// acknowledgement was lost, as when a stream leader dies): taking the
// action back could leave in the log an action no worker saw, so it stays,
// and the answer says plainly what is known.
func actionUnknown(what string, err error) error {
	return fmt.Errorf("%s is in effect, but whether the log records it is unknown (do not repeat it blindly: read the log or the projection): %w", what, err)
}

// applyControl hands u, a change this app just wrote to the control
// bucket, to its own worker at once: a queue paused through this app takes
// no task on this app's worker once Pause returns, rather than once the
// bucket's watch delivers the change (milliseconds later, in which a task
// submitted right after could still be pulled). Other workers learn it
// from the watch, as before; the watch's own delivery of u changes nothing
// more, and its late delivery of an older change of the same queue (a
// pause, when Resume came right after Pause) is ignored by its revision.
func (a *App) applyControl(u bus.ControlUpdate) {
	a.mu.RLock()
	w := a.worker
	a.mu.RUnlock()
	if w != nil {
		w.ctl.update(u)
	}
}

// controls is what a worker knows of the control bucket: the attempts
// cancelled, whether its queue is paused, and the task functions it runs
// (to cancel them).
type controls struct {
	queue string

	mu      sync.Mutex
	cancels map[string]bus.Mark
	paused  bool
	// pauseRev is the revision of the pause change applied last: the
	// watch may deliver an older one after the app applied a newer one.
	pauseRev uint64
	resumed  chan struct{} // closed when the queue is resumed
	running  map[string]runningTask
	onPause  func() // called (without mu) when the queue becomes paused
}

type runningTask struct {
	attempt int
	cancel  context.CancelCauseFunc
}

func newControls(queue string) *controls {
	return &controls{queue: queue, cancels: map[string]bus.Mark{}, running: map[string]runningTask{}, resumed: make(chan struct{})}
}

// update applies a change of the control bucket.
func (c *controls) update(u bus.ControlUpdate) {
	c.mu.Lock()
	var pause func()
	switch {
	case u.Cancel != "" && u.Mark == nil:
		delete(c.cancels, u.Cancel)
	case u.Cancel != "":
		c.cancels[u.Cancel] = *u.Mark
		if r, ok := c.running[u.Cancel]; ok && r.attempt == u.Mark.Attempt {
			r.cancel(cancelError(*u.Mark))
		}
	case u.Pause == c.queue && u.Revision != 0 && u.Revision <= c.pauseRev:
		// Older than what this worker applied already.
	case u.Pause == c.queue && u.Mark != nil:
		c.pauseRev = u.Revision
		if !c.paused {
			c.paused, c.resumed = true, make(chan struct{})
			pause = c.onPause
		}
	case u.Pause == c.queue:
		c.pauseRev = u.Revision
		if c.paused {
			c.paused = false
			close(c.resumed)
		}
	}
	c.mu.Unlock()
	if pause != nil {
		pause()
	}
}

// cancelled returns the cancel of attempt of task id, or nil.
func (c *controls) cancelled(id string, attempt int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.cancels[id]; ok && m.Attempt == attempt {
		return cancelError(m)
	}
	return nil
}

// track returns a context for the function of attempt of task id that an
// operator's cancel cancels, and a func to call when the function returns.
func (c *controls) track(ctx context.Context, id string, attempt int) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	c.mu.Lock()
	c.running[id] = runningTask{attempt: attempt, cancel: cancel}
	if m, ok := c.cancels[id]; ok && m.Attempt == attempt {
		cancel(cancelError(m))
	}
	c.mu.Unlock()
	return ctx, func() {
		c.mu.Lock()
		delete(c.running, id)
		c.mu.Unlock()
		cancel(nil)
	}
}

// pausedNow reports whether the queue is paused, and the channel closed
// when it is resumed.
func (c *controls) pausedNow() (bool, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused, c.resumed
}

func cancelError(m bus.Mark) *CancelError {
	reason := "cancelled by " + m.By
	if m.Reason != "" {
		reason += ": " + m.Reason
	}
	return &CancelError{Reason: reason}
}
