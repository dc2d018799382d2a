package retry_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/plugins/retry"
)

const ms = time.Millisecond

// The delays are pure functions of the failed attempt's number (and, with
// jitter, of the injected random source): no clock is involved, so they are
// checked without waiting.
func TestBackoffDelays(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		backoff retry.Backoff
		want    []time.Duration // after attempts 1, 2, 3, ...
	}{
		{"Fixed", retry.Fixed(250 * ms), []time.Duration{250 * ms, 250 * ms, 250 * ms}},
		{"FixedZero", retry.Fixed(0), []time.Duration{0, 0}},
		{"List", retry.List{100 * ms, 200 * ms}, []time.Duration{100 * ms, 200 * ms, 200 * ms, 200 * ms}},
		{"Exponential", &retry.Exponential{Base: 100 * ms}, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms}},
		{
			"ExponentialFactorAndMax", &retry.Exponential{Base: 100 * ms, Factor: 3, Max: time.Second},
			[]time.Duration{100 * ms, 300 * ms, 900 * ms, time.Second, time.Second},
		},
		{"ExponentialFactorOne", &retry.Exponential{Base: 50 * ms, Factor: 1}, []time.Duration{50 * ms, 50 * ms, 50 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := retry.New(retry.Config{Backoff: tt.backoff}) // validates, sets defaults
			require.NoError(t, err)
			for i, want := range tt.want {
				require.Equal(t, want, tt.backoff.Delay(i+1), "after attempt %d", i+1)
			}
		})
	}

	t.Run("ExponentialHugeAttemptIsCapped", func(t *testing.T) {
		t.Parallel()
		e := &retry.Exponential{Base: time.Second}
		_, err := retry.New(retry.Config{Backoff: e})
		require.NoError(t, err)
		require.Equal(t, retry.MaxDelay, e.Delay(10_000), "no overflow")
	})

	t.Run("JitterSeeded", func(t *testing.T) {
		t.Parallel()
		mk := func() *retry.Exponential {
			return &retry.Exponential{Base: 100 * ms, Max: 2 * time.Second, Jitter: 0.2, Rand: rand.New(rand.NewPCG(7, 7))}
		}
		a, b := mk(), mk()
		for _, e := range []*retry.Exponential{a, b} {
			_, err := retry.New(retry.Config{Backoff: e})
			require.NoError(t, err)
		}
		spread := false
		for n := 1; n <= 8; n++ {
			da, db := a.Delay(n), b.Delay(n)
			require.Equal(t, da, db, "same seed, same delay after attempt %d", n)
			nominal := min(100*ms<<(n-1), 2*time.Second)
			require.GreaterOrEqual(t, da, time.Duration(float64(nominal)*0.8), "attempt %d", n)
			require.LessOrEqual(t, da, min(time.Duration(float64(nominal)*1.2), 2*time.Second), "attempt %d", n)
			spread = spread || da != nominal
		}
		require.True(t, spread, "jitter moved some delay off its nominal value")
	})

	t.Run("JitterExtremes", func(t *testing.T) {
		t.Parallel()
		// A source that always draws 0 gives the low end; one that draws
		// close to 1 the high end.
		low := &retry.Exponential{Base: time.Second, Jitter: 0.5, Rand: rand.New(constSource(0))}
		high := &retry.Exponential{Base: time.Second, Jitter: 0.5, Rand: rand.New(constSource(^uint64(0)))}
		require.Equal(t, 500*ms, low.Delay(1))
		require.InDelta(t, float64(1500*ms), float64(high.Delay(1)), float64(time.Microsecond))
	})
}

// constSource always yields v.
type constSource uint64

func (s constSource) Uint64() uint64 { return uint64(s) }

// A misconfigured backoff or match is refused when the plugin is made, with
// a message that says what is wrong.
func TestConfigRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  retry.Config
		want string
	}{
		{"NegativeFixed", retry.Config{Backoff: retry.Fixed(-time.Second)}, "fixed backoff -1s: must not be negative"},
		{"HugeFixed", retry.Config{Backoff: retry.Fixed(48 * time.Hour)}, "at most 24h0m0s"},
		{"EmptyList", retry.Config{Backoff: retry.List{}}, "list backoff: empty"},
		{"NilList", retry.Config{Backoff: retry.List(nil)}, "list backoff: empty"},
		{"NegativeInList", retry.Config{Backoff: retry.List{ms, -ms}}, "delay 2 (-1ms) must not be negative"},
		{"ZeroBase", retry.Config{Backoff: &retry.Exponential{}}, "base 0s must be positive"},
		{"SmallFactor", retry.Config{Backoff: &retry.Exponential{Base: ms, Factor: 0.5}}, "factor 0.5 must be a finite number ≥ 1"},
		{"BaseOverMax", retry.Config{Backoff: &retry.Exponential{Base: time.Second, Max: ms}}, "base 1s is more than max 1ms"},
		{"NegativeMax", retry.Config{Backoff: &retry.Exponential{Base: ms, Max: -ms}}, "max -1ms must not be negative"},
		{"Jitter", retry.Config{Backoff: &retry.Exponential{Base: ms, Jitter: 1.5}}, "jitter 1.5 must be in [0, 1]"},
		{"EmptyRetryOn", retry.Config{RetryOn: []retry.Match{{}}}, "RetryOn[0]: empty match"},
		{"EmptyNeverRetry", retry.Config{NeverRetry: []retry.Match{{Type: "x"}, {}}}, "NeverRetry[1]: empty match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := retry.New(tt.cfg)
			require.Nil(t, p)
			require.ErrorContains(t, err, "retry plugin: ")
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestParseBackoff(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want []time.Duration // nil: a nil Backoff
	}{
		{"none", nil},
		{"", nil},
		{"fixed:1s", []time.Duration{time.Second, time.Second}},
		{"list:100ms, 200ms", []time.Duration{100 * ms, 200 * ms, 200 * ms}},
		{"exponential:base=100ms,factor=3,max=1s", []time.Duration{100 * ms, 300 * ms, 900 * ms, time.Second}},
		{"exp:base=10ms", []time.Duration{10 * ms, 20 * ms, 40 * ms}},
	} {
		b, err := retry.ParseBackoff(tt.in)
		require.NoError(t, err, tt.in)
		if tt.want == nil {
			require.Nil(t, b, tt.in)
			continue
		}
		for i, want := range tt.want {
			require.Equal(t, want, b.Delay(i+1), "%s after attempt %d", tt.in, i+1)
		}
	}
	a, err := retry.ParseBackoff("exp:base=100ms,jitter=0.5,seed=42")
	require.NoError(t, err)
	b, err := retry.ParseBackoff("exp:base=100ms,jitter=0.5,seed=42")
	require.NoError(t, err)
	for n := 1; n < 5; n++ {
		require.Equal(t, a.Delay(n), b.Delay(n), "a seed makes the jitter repeatable")
	}

	for in, want := range map[string]string{
		"fixed:-1s":            "must not be negative",
		"fixed:soon":           "invalid duration",
		"list:":                "list backoff: empty",
		"list:1s,-2s":          "delay 2 (-2s) must not be negative",
		"exp:factor=2":         "base 0s must be positive",
		"exp:base=1s,bogus=1":  "unknown key",
		"exp:base":             "is not key=value",
		"exp:base=1s,jitter=2": "jitter 2 must be in [0, 1]",
		"linear:1s":            `unknown kind "linear"`,
		"none:1s":              "none takes no argument",
	} {
		_, err := retry.ParseBackoff(in)
		require.ErrorContains(t, err, want, in)
	}
}
