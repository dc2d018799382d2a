package events

import (
	"errors"
	"fmt"
	"strings"
)

// TypeOperator is an operator's action on a task or a queue (cancel, retry,
// pause, resume): who did what, why and when, in the log like everything
// else. Only executors and operators write it, on OperatorSubject, which no
// plugin's rights include.
const TypeOperator = "io.qtasks.operator"

// SubjectOperator prefixes operator actions: qtasks.operator.<queue>.
const SubjectOperator = SubjectRoot + ".operator"

// OperatorSubject is where actions on queue's tasks (or on queue itself)
// are recorded.
func OperatorSubject(queue string) string { return SubjectOperator + "." + queue }

// Operator actions (OperatorAction.Action).
const (
	// ActionCancel cancels a task's current attempt: a queued one ends in
	// cancel without running, a running one has its context cancelled.
	ActionCancel = "cancel"
	// ActionRetry queues a new attempt of a task that ended in error or
	// cancel.
	ActionRetry = "retry"
	// ActionPause stops a queue's workers from taking tasks; ActionResume
	// lets them take tasks again.
	ActionPause  = "pause"
	ActionResume = "resume"
)

// MaxReasonSize bounds an operator's reason, and its "by".
const MaxReasonSize = 1024

// OperatorAction is the data of an operator event.
type OperatorAction struct {
	Action string `json:"action"`
	// TaskID and Attempt name the task attempt acted on (cancel, retry);
	// empty for queue actions.
	TaskID  string `json:"task_id,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	Queue   string `json:"queue"`
	// By is who acted (the authenticated user, or what the caller says);
	// Reason is why, in their words.
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	// Next is, for a retry, the record of the attempt it queued.
	Next *Task `json:"next,omitempty"`
}

// CheckActor reports what makes who acts (by) and why (reason) invalid in
// an operator action, or nil: the part of Check that needs no task state,
// so that an action can refuse bad input before it reads any (bad input is
// then told as such, not as "the task has ended").
func CheckActor(by, reason string) error {
	if errs := actorErrs(by, reason); len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}

func actorErrs(by, reason string) []error {
	var errs []error
	if by == "" || len(by) > MaxReasonSize {
		errs = append(errs, fmt.Errorf("by: want who acted, 1 to %d bytes", MaxReasonSize))
	}
	if len(reason) > MaxReasonSize {
		errs = append(errs, fmt.Errorf("reason is %d bytes, at most %d", len(reason), MaxReasonSize))
	}
	return errs
}

// Check reports what makes a an invalid action, or nil.
func (a *OperatorAction) Check() error {
	var errs []error
	switch a.Action {
	case ActionCancel, ActionRetry:
		if !ValidToken(a.TaskID) {
			errs = append(errs, fmt.Errorf("task id %q is not a valid task id", a.TaskID))
		}
		if a.Attempt < 1 {
			errs = append(errs, fmt.Errorf("attempt %d: want 1 or more", a.Attempt))
		}
	case ActionPause, ActionResume:
		if a.TaskID != "" {
			errs = append(errs, fmt.Errorf("a %s names a queue, not a task", a.Action))
		}
	default:
		errs = append(errs, fmt.Errorf("action %q: want %s", a.Action, strings.Join([]string{ActionCancel, ActionRetry, ActionPause, ActionResume}, ", ")))
	}
	if !ValidToken(a.Queue) {
		errs = append(errs, fmt.Errorf("queue %q is not a valid queue name", a.Queue))
	}
	errs = append(errs, actorErrs(a.By, a.Reason)...)
	if a.Action == ActionRetry && (a.Next == nil || a.Next.ID != a.TaskID || a.Next.Attempt != a.Attempt+1) {
		errs = append(errs, errors.New("a retry records the next attempt's record"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}
