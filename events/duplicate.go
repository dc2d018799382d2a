package events

import (
	"errors"
	"fmt"
	"strings"
)

// TypeDuplicate is an executor's decision on a submission whose
// idempotency key (given, or derived from unique options) already names a
// task: the submission is that task's duplicate, or, with other arguments
// under a key the caller gave, a conflict that is refused. Only executors
// write it, on DuplicateSubject, which no plugin's rights include.
const TypeDuplicate = "io.qtasks.duplicate"

// SubjectDuplicate prefixes duplicate decisions: qtasks.duplicate.<queue>.
const SubjectDuplicate = SubjectRoot + ".duplicate"

// DuplicateSubject is where the decisions on submissions of queue's tasks
// are recorded (the queue of the task the key names).
func DuplicateSubject(queue string) string { return SubjectDuplicate + "." + queue }

// Duplicate decisions (DuplicateDecision.Decision).
const (
	// DecisionDuplicate: the submission was answered with the existing
	// task; nothing new was queued. Differs lists what the submission
	// changed when the caller allowed a key conflict (or a unique key
	// leaves those parts out by design).
	DecisionDuplicate = "duplicate"
	// DecisionConflict: the submission gave a key that names a task
	// submitted with another name, queue, args or kw (Differs), and was
	// refused; nothing was queued.
	DecisionConflict = "conflict"
)

// Submission parts compared for a key conflict (SubmitDigest, Differs).
const (
	PartName  = "task_name"
	PartQueue = "queue"
	PartArgs  = "args"
	PartKw    = "kw"
)

// SubmitParts are the parts of a submission its digest covers, in the
// digest's order: what makes two submissions of one key "the same".
var SubmitParts = []string{PartName, PartQueue, PartArgs, PartKw}

// DuplicateDecision is the data of a TypeDuplicate event.
type DuplicateDecision struct {
	Decision string `json:"decision"`
	// TaskID and Attempt name the existing task (its attempt when
	// decided); Queue is its queue.
	TaskID  string `json:"task_id"`
	Attempt int    `json:"attempt"`
	Queue   string `json:"queue"`
	// IdempotencyKey is the key both submissions carry.
	IdempotencyKey string `json:"idempotency_key"`
	// TaskName is the name the refused or deduplicated submission gave.
	TaskName string `json:"task_name"`
	// Status is the existing task's status when decided.
	Status string `json:"status"`
	// Differs lists the parts (SubmitParts) in which the submission
	// differs from the existing task's; empty for an exact repeat.
	Differs []string `json:"differs,omitempty"`
	// Unique is true when the key was derived from unique options
	// (UniqueKeyPrefix): a repeat within the options' scope is a duplicate
	// whatever the parts they leave out.
	Unique bool `json:"unique,omitempty"`
}

// Check reports what makes d an invalid decision, or nil.
func (d *DuplicateDecision) Check() error {
	var errs []error
	if d.Decision != DecisionDuplicate && d.Decision != DecisionConflict {
		errs = append(errs, fmt.Errorf("decision %q: want %s or %s", d.Decision, DecisionDuplicate, DecisionConflict))
	}
	if !ValidToken(d.TaskID) {
		errs = append(errs, fmt.Errorf("task id %q is not a valid task id", d.TaskID))
	}
	if d.Attempt < 1 {
		errs = append(errs, fmt.Errorf("attempt %d: want 1 or more", d.Attempt))
	}
	if !ValidToken(d.Queue) {
		errs = append(errs, fmt.Errorf("queue %q is not a valid queue name", d.Queue))
	}
	if d.IdempotencyKey == "" {
		errs = append(errs, errors.New("no idempotency key"))
	} else if err := CheckIdempotencyKey(d.IdempotencyKey); err != nil {
		errs = append(errs, err)
	}
	if d.Decision == DecisionConflict && len(d.Differs) == 0 {
		errs = append(errs, errors.New("a conflict names the parts that differ"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}

// Summary is the decision in words, as the projection lists it.
func (d *DuplicateDecision) Summary() string {
	var b strings.Builder
	b.WriteString("submission with key ")
	b.WriteString(d.IdempotencyKey)
	if d.Decision == DecisionConflict {
		b.WriteString(" refused: ")
	} else {
		b.WriteString(" answered with this task (" + d.Status + ")")
		if len(d.Differs) == 0 {
			return b.String()
		}
		b.WriteString(", although ")
	}
	b.WriteString(strings.Join(d.Differs, ", "))
	b.WriteString(" differ")
	return b.String()
}

// UniqueKeyPrefix starts an idempotency key derived from unique options
// (executor.UniqueOpts); a hash of what they cover follows.
const UniqueKeyPrefix = "unique:"
