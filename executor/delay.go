package executor

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// MaxDelay bounds SubmitOptions.RunAt and RunIn: a task due further out is
// refused (a year; a later time is more likely a unit mistake than a plan).
const MaxDelay = 366 * 24 * time.Hour

// checkDelay checks the delay options of a submission.
func (o *SubmitOptions) checkDelay() error {
	switch {
	case !o.RunAt.IsZero() && o.RunIn != 0:
		return fmt.Errorf("run at and run in are both set, want at most one: %w", ErrInvalidInput)
	case o.RunIn < 0:
		return fmt.Errorf("run in %v is negative: %w", o.RunIn, ErrInvalidInput)
	case o.RunIn > MaxDelay || !o.RunAt.IsZero() && time.Until(o.RunAt) > MaxDelay:
		return fmt.Errorf("the task would be due more than %v from now: %w", MaxDelay, ErrInvalidInput)
	}
	return nil
}

// runAt is when a task submitted at now is due: the zero time for now.
// The task record's NotBefore carries it: the submission's facts (whose
// payloads hold the record) say when the task is due, the task stream
// holds its message as a scheduled one until then (bus.Enqueue), and a
// worker that receives it early hands it back.
func (o *SubmitOptions) runAt(now time.Time) time.Time {
	at := o.RunAt
	if o.RunIn > 0 {
		at = now.Add(o.RunIn)
	}
	if !at.After(now) {
		return time.Time{}
	}
	return at.UTC()
}

// retryDelay is the default delay, in milliseconds, before the attempt
// after failed attempt n (Config.RetryBackoff). A delay of at least
// events.MinScheduleLead makes the next attempt wait as a scheduled message
// (bus.Enqueue); a shorter one is held back by the worker that receives it.
func (a *App) retryDelay(n int) int64 {
	d := a.cfg.RetryBackoff.Delay(n, rand.Float64())
	if d <= 0 {
		return 0
	}
	return max(d.Milliseconds(), 1)
}
