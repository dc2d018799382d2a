package events

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Backoff is an exponential backoff with jitter: after attempt n failed, the
// next attempt waits min(Max, Base × Factor^(n-1)), spread by ±Jitter (a
// fraction: with Jitter 0.2 a delay d becomes a value drawn uniformly from
// [0.8d, 1.2d]), and never more than Max. A zero Base means no delay.
type Backoff struct {
	Base   time.Duration `json:"base"`
	Factor float64       `json:"factor"`
	Max    time.Duration `json:"max"`
	Jitter float64       `json:"jitter"`
}

// DefaultRetryBackoff is the delay before a retry when the task's function
// and plugins say nothing else: 1 s after the first failure, then 2 s, 4 s,
// ... up to 5 min, each ±20%. The executor puts it in worker_task_error_retry's
// model.delay_ms before the plugins are called, so that a plugin (the retry
// plugin's Backoff) overrides it by patching delay_ms.
var DefaultRetryBackoff = Backoff{Base: time.Second, Factor: 2, Max: 5 * time.Minute, Jitter: 0.2}

// MinDelay is the least delay Delay can give after attempt n: the bound a
// test (or an operator) can count on.
func (b Backoff) MinDelay(n int) time.Duration { return b.delay(n, 0) }

// Delay returns the delay after failed attempt n (from 1); u is a uniform
// random number in [0, 1) that draws the jitter.
func (b Backoff) Delay(n int, u float64) time.Duration { return b.delay(n, u) }

func (b Backoff) delay(n int, u float64) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	factor := b.Factor
	if factor < 1 {
		factor = 1
	}
	d := float64(b.Base) * math.Pow(factor, float64(max(n, 1)-1))
	if b.Max > 0 && (d > float64(b.Max) || math.IsInf(d, 0)) {
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		d *= 1 + b.Jitter*(2*u-1)
	}
	if b.Max > 0 && d > float64(b.Max) {
		d = float64(b.Max)
	}
	return time.Duration(d)
}

// Check reports what makes b invalid, or nil.
func (b Backoff) Check() error {
	var errs []error
	if b.Base < 0 {
		errs = append(errs, fmt.Errorf("base %v must not be negative", b.Base))
	}
	if b.Base > 0 && (b.Factor < 1 || math.IsNaN(b.Factor) || math.IsInf(b.Factor, 0)) {
		errs = append(errs, fmt.Errorf("factor %v must be a finite number ≥ 1", b.Factor))
	}
	if b.Max < 0 || b.Base > 0 && b.Max > 0 && b.Max < b.Base {
		errs = append(errs, fmt.Errorf("max %v must be 0 (none) or at least the base %v", b.Max, b.Base))
	}
	if b.Jitter < 0 || b.Jitter > 1 || math.IsNaN(b.Jitter) {
		errs = append(errs, fmt.Errorf("jitter %v must be in [0, 1]", b.Jitter))
	}
	if len(errs) > 0 {
		return fmt.Errorf("retry backoff: %w", errors.Join(errs...))
	}
	return nil
}
