package events

import (
	"encoding/json"
	"errors"
	"fmt"
)

// TypeChain is an event of a chain of tasks (QTasks' AsyncTaskUtils.chain):
// its start, each step submitted, its end. Only executors write it, on
// ChainSubject, which no plugin's rights include.
const TypeChain = "io.qtasks.chain"

// SubjectChain prefixes chain events: qtasks.chain.<queue>, the queue of
// the step whose end the event follows (of the first step, for a start).
const SubjectChain = SubjectRoot + ".chain"

// ChainSubject is where the events of chains starting on queue are
// recorded.
func ChainSubject(queue string) string { return SubjectChain + "." + queue }

// ExtraChain is the key of a chain step's record extra that holds its
// ChainLink.
const ExtraChain = "chain"

// Chain actions (ChainEvent.Action).
const (
	ChainStart = "start" // the chain and its first step were submitted
	ChainStep  = "step"  // step Step was submitted, after step Step-1 succeeded
	ChainEnd   = "end"   // the chain ended, in Status
)

// MaxChainSteps bounds a chain's length.
const MaxChainSteps = 100

// ChainStepSpec is one step of a chain as submitted: a task and its
// arguments. The previous step's result is appended to Args when the step
// is submitted (QTasks appends it as the last positional argument).
type ChainStepSpec struct {
	Name     string          `json:"name"`
	Args     json.RawMessage `json:"args,omitempty"`
	Kw       json.RawMessage `json:"kw,omitempty"`
	Queue    string          `json:"queue,omitempty"`
	Priority *int            `json:"priority,omitempty"`
}

// ChainLink is what a chain step's task carries in extra.chain: the chain it
// belongs to, where it stands, the task before it, and the steps after it
// (so that whoever finishes it can submit the next one, with nothing to
// look up).
type ChainLink struct {
	ID    string `json:"id"`
	Step  int    `json:"step"` // from 0
	Steps int    `json:"steps"`
	// Prev is the task id of the step before (empty for the first).
	Prev string          `json:"prev,omitempty"`
	Rest []ChainStepSpec `json:"rest,omitempty"`
}

// ChainEvent is the data of a chain event. The event's ce-taskid is the
// step's task (the first step's for start, the submitted one's for step,
// the last that ran for end).
type ChainEvent struct {
	Chain  string `json:"chain"`
	Action string `json:"action"`
	Step   int    `json:"step"`
	Steps  int    `json:"steps"`
	TaskID string `json:"task_id"`
	// Prev is the task whose result step Step was given (step only).
	Prev string `json:"prev,omitempty"`
	// Status is the chain's final status (end only): success, or the
	// failed step's error or cancel.
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	// Specs are the chain's steps (start only).
	Specs []ChainStepSpec `json:"specs,omitempty"`
}

// Check reports what makes e an invalid chain event, or nil.
func (e *ChainEvent) Check() error {
	var errs []error
	if !ValidToken(e.Chain) {
		errs = append(errs, fmt.Errorf("chain id %q is not a valid token", e.Chain))
	}
	if e.Steps < 1 || e.Steps > MaxChainSteps || e.Step < 0 || e.Step >= e.Steps {
		errs = append(errs, fmt.Errorf("step %d of %d: want 0 <= step < steps <= %d", e.Step, e.Steps, MaxChainSteps))
	}
	if !ValidToken(e.TaskID) {
		errs = append(errs, fmt.Errorf("task id %q is not a valid token", e.TaskID))
	}
	switch e.Action {
	case ChainStart:
		if e.Step != 0 || len(e.Specs) != e.Steps {
			errs = append(errs, errors.New("a start is step 0 and lists every step"))
		}
	case ChainStep:
		if e.Step == 0 || e.Prev == "" {
			errs = append(errs, errors.New("a step after the first names the task before it"))
		}
	case ChainEnd:
		if !FinalStatus(e.Status) || e.Status == StatusRetry {
			errs = append(errs, fmt.Errorf("end status %q is not final", e.Status))
		}
	default:
		errs = append(errs, fmt.Errorf("action %q: want %s, %s or %s", e.Action, ChainStart, ChainStep, ChainEnd))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}

// ChainVerdict is what a chain does once one of its steps has a status.
type ChainVerdict int

// Chain verdicts.
const (
	ChainWaits    ChainVerdict = iota // the step is not decided yet (queued, running, retrying)
	ChainNext                         // the step succeeded: submit the next, its result appended
	ChainSucceeds                     // the last step succeeded: the chain ends in success
	ChainFails                        // the step ended in error or cancel: the chain ends so, later steps never run
)

// ChainAfter is the chain's failure policy, its one home: what a chain
// does after step (from 0) of steps has status. Every place that
// evaluates a chain (the executor advancing it, waiting on it, the
// projection) asks it.
func ChainAfter(status string, step, steps int) ChainVerdict {
	switch status {
	case StatusSuccess:
		if step+1 >= steps {
			return ChainSucceeds
		}
		return ChainNext
	case StatusError, StatusCancel:
		return ChainFails
	}
	return ChainWaits
}
