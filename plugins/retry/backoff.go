package retry

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxDelay bounds every delay a Backoff may give: a longer Fixed or List
// delay is rejected by New, an Exponential one is capped here.
const MaxDelay = 24 * time.Hour

// Backoff computes how long to wait before the next attempt of a task.
//
// Delay is given the number of the attempt that failed (1 for the first
// run) and returns the wait before attempt n+1. It is called concurrently
// for different tasks and must be safe for that.
type Backoff interface {
	Delay(n int) time.Duration
}

// Fixed waits the same time before every retry.
type Fixed time.Duration

// Delay returns d.
func (d Fixed) Delay(int) time.Duration { return time.Duration(d) }

func (d Fixed) validate() error {
	if d < 0 {
		return fmt.Errorf("fixed backoff %v: must not be negative", time.Duration(d))
	}
	if time.Duration(d) > MaxDelay {
		return fmt.Errorf("fixed backoff %v: at most %v", time.Duration(d), MaxDelay)
	}
	return nil
}

// List waits List[n-1] after attempt n failed; attempts past its end wait
// its last delay.
type List []time.Duration

// Delay returns the delay after failed attempt n.
func (l List) Delay(n int) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(max(n, 1), len(l))-1]
}

func (l List) validate() error {
	if len(l) == 0 {
		return errors.New("list backoff: empty; give at least one delay")
	}
	var errs []error
	for i, d := range l {
		if d < 0 {
			errs = append(errs, fmt.Errorf("list backoff: delay %d (%v) must not be negative", i+1, d))
		} else if d > MaxDelay {
			errs = append(errs, fmt.Errorf("list backoff: delay %d (%v) is more than %v", i+1, d, MaxDelay))
		}
	}
	return errors.Join(errs...)
}

// Defaults of Exponential.
const (
	DefaultFactor = 2.0
)

// Exponential waits Base × Factor^(n-1) after attempt n failed, at most Max,
// spread by ±Jitter: with Jitter 0.2 a delay d becomes a value drawn
// uniformly from [0.8d, 1.2d] (then capped at Max again).
//
// Use it as a pointer; it is safe for concurrent use.
type Exponential struct {
	// Base is the delay after the first failure. Required, > 0.
	Base time.Duration
	// Factor multiplies the delay after each further failure. Defaults to
	// DefaultFactor; must be ≥ 1.
	Factor float64
	// Max caps the delay. Defaults to MaxDelay.
	Max time.Duration
	// Jitter is the fraction, in [0, 1], by which a delay may be spread
	// either way. 0: no jitter.
	Jitter float64
	// Rand draws the jitter. Give a seeded one (rand.New(rand.NewPCG(1, 2)))
	// for repeatable delays. Defaults to math/rand/v2's global source.
	Rand *rand.Rand

	mu sync.Mutex // guards Rand, which is not safe for concurrent use
}

func (e *Exponential) validate() error {
	if e.Factor == 0 {
		e.Factor = DefaultFactor
	}
	if e.Max == 0 {
		e.Max = MaxDelay
	}
	var errs []error
	if e.Base <= 0 {
		errs = append(errs, fmt.Errorf("exponential backoff: base %v must be positive", e.Base))
	}
	if e.Factor < 1 || math.IsNaN(e.Factor) || math.IsInf(e.Factor, 0) {
		errs = append(errs, fmt.Errorf("exponential backoff: factor %v must be a finite number ≥ 1", e.Factor))
	}
	switch {
	case e.Max < 0:
		errs = append(errs, fmt.Errorf("exponential backoff: max %v must not be negative", e.Max))
	case e.Max > MaxDelay:
		errs = append(errs, fmt.Errorf("exponential backoff: max %v is more than %v", e.Max, MaxDelay))
	case e.Base > e.Max:
		errs = append(errs, fmt.Errorf("exponential backoff: base %v is more than max %v", e.Base, e.Max))
	}
	if e.Jitter < 0 || e.Jitter > 1 || math.IsNaN(e.Jitter) {
		errs = append(errs, fmt.Errorf("exponential backoff: jitter %v must be in [0, 1]", e.Jitter))
	}
	return errors.Join(errs...)
}

// Delay returns the delay after failed attempt n.
func (e *Exponential) Delay(n int) time.Duration {
	factor, limit := e.Factor, e.Max
	if factor == 0 {
		factor = DefaultFactor
	}
	if limit <= 0 || limit > MaxDelay {
		limit = MaxDelay
	}
	d := float64(e.Base) * math.Pow(factor, float64(max(n, 1)-1))
	if d > float64(limit) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(limit)
	}
	if e.Jitter > 0 {
		d *= 1 + e.Jitter*(2*e.float()-1)
	}
	return min(time.Duration(d), limit)
}

func (e *Exponential) float() float64 {
	if e.Rand == nil {
		return rand.Float64()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.Rand.Float64()
}

// ParseBackoff reads a backoff from its text form, as the plugin's command
// takes it:
//
//	none
//	fixed:1s
//	list:100ms,200ms,1s
//	exponential:base=100ms,factor=2,max=30s,jitter=0.2,seed=7   (or exp:…)
//
// Only base is required for exponential; seed makes the jitter repeatable.
// The result is validated as New would.
func ParseBackoff(s string) (Backoff, error) {
	kind, arg, _ := strings.Cut(strings.TrimSpace(s), ":")
	var b Backoff
	switch kind {
	case "none", "":
		if arg != "" {
			return nil, fmt.Errorf("backoff %q: none takes no argument", s)
		}
		return nil, nil //nolint:nilnil // "none" is the nil Backoff (Config.Backoff: nil leaves the delay)
	case "fixed":
		d, err := time.ParseDuration(arg)
		if err != nil {
			return nil, fmt.Errorf("backoff %q: %w", s, err)
		}
		b = Fixed(d)
	case "list":
		var l List
		for f := range strings.SplitSeq(arg, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			d, err := time.ParseDuration(f)
			if err != nil {
				return nil, fmt.Errorf("backoff %q: %w", s, err)
			}
			l = append(l, d)
		}
		b = l
	case "exponential", "exp":
		e := &Exponential{}
		for f := range strings.SplitSeq(arg, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				return nil, fmt.Errorf("backoff %q: %q is not key=value", s, f)
			}
			var err error
			switch k {
			case "base":
				e.Base, err = time.ParseDuration(v)
			case "max":
				e.Max, err = time.ParseDuration(v)
			case "factor":
				e.Factor, err = strconv.ParseFloat(v, 64)
			case "jitter":
				e.Jitter, err = strconv.ParseFloat(v, 64)
			case "seed":
				var seed uint64
				seed, err = strconv.ParseUint(v, 10, 64)
				e.Rand = rand.New(rand.NewPCG(seed, seed))
			default:
				err = errors.New("unknown key; want base, factor, max, jitter or seed")
			}
			if err != nil {
				return nil, fmt.Errorf("backoff %q: %s: %w", s, k, err)
			}
		}
		b = e
	default:
		return nil, fmt.Errorf("backoff %q: unknown kind %q; want none, fixed, list or exponential", s, kind)
	}
	if err := validateBackoff(b); err != nil {
		return nil, err
	}
	return b, nil
}

// validateBackoff checks the backoffs of this package; others are trusted.
func validateBackoff(b Backoff) error {
	if v, ok := b.(interface{ validate() error }); ok {
		return v.validate()
	}
	return nil
}
