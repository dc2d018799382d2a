package events

import (
	"errors"
	"fmt"
)

// TypeLimit is a task run held back by a cluster-wide limit, or taking over
// a crashed worker's slot: which limit, how long it waited. Only executors
// write it, on LimitSubject, which no plugin's rights include. A run that
// got its slot and start at once writes none.
const TypeLimit = "io.qtasks.limit"

// SubjectLimit prefixes limit events: qtasks.limit.<queue>, the task's.
const SubjectLimit = SubjectRoot + ".limit"

// LimitSubject is where the limit events of queue's tasks are recorded.
func LimitSubject(queue string) string { return SubjectLimit + "." + queue }

// Limit kinds (LimitWait.Kind).
const (
	LimitConcurrency = "concurrency"
	LimitRate        = "rate"
)

// LimitWait is the data of a limit event. The event's ce-taskid,
// ce-attempt and ce-run name the task run.
type LimitWait struct {
	// Limit names the limit: "t-<task name>" or "q-<queue>".
	Limit string `json:"limit"`
	Kind  string `json:"kind"`
	// WaitedMS is how long the run waited for its slot or start.
	WaitedMS int64 `json:"waited_ms"`
	// Slot is the concurrency slot taken (from 0).
	Slot int `json:"slot,omitempty"`
	// TookOver names the holder ("<task id>#<attempt>#<run>") of the
	// expired slot this run took over: a worker that stopped renewing it.
	TookOver string `json:"took_over,omitempty"`
}

// Check reports what makes w an invalid limit event, or nil.
func (w *LimitWait) Check() error {
	var errs []error
	if len(w.Limit) < 3 || (w.Limit[:2] != "t-" && w.Limit[:2] != "q-") || !ValidName(w.Limit[2:]) {
		errs = append(errs, fmt.Errorf("limit %q: want t-<task name> or q-<queue>", w.Limit))
	}
	switch w.Kind {
	case LimitConcurrency:
	case LimitRate:
		if w.Slot != 0 || w.TookOver != "" {
			errs = append(errs, errors.New("a rate has no slots"))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: want %s or %s", w.Kind, LimitConcurrency, LimitRate))
	}
	if w.WaitedMS < 0 || w.Slot < 0 {
		errs = append(errs, errors.New("negative wait or slot"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}
