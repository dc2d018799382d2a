package events

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaultRetryBackoffBounds(t *testing.T) {
	b := DefaultRetryBackoff
	require.NoError(t, b.Check())
	for n := 1; n <= 20; n++ {
		lo, hi := b.MinDelay(n), b.Delay(n, 1)
		require.LessOrEqual(t, lo, hi)
		require.LessOrEqual(t, hi, b.Max, "attempt %d", n)
		for _, u := range []float64{0, 0.25, 0.5, 0.999} {
			d := b.Delay(n, u)
			require.GreaterOrEqual(t, d, lo)
			require.LessOrEqual(t, d, hi)
		}
	}
	require.Equal(t, 800*time.Millisecond, b.MinDelay(1))
	require.Equal(t, 1600*time.Millisecond, b.MinDelay(2))
	require.Equal(t, time.Second, b.Delay(1, 0.5))
	require.Equal(t, b.Max, b.Delay(30, 1))
	require.Zero(t, Backoff{}.Delay(3, 0.5), "a zero backoff retries at once")
	for _, bad := range []Backoff{
		{Base: -1},
		{Base: time.Second, Factor: 0.5},
		{Base: time.Second, Factor: 2, Max: time.Millisecond},
		{Base: time.Second, Factor: 2, Jitter: 1.5},
	} {
		require.Error(t, bad.Check(), "%+v", bad)
	}
}

func TestScheduleCheck(t *testing.T) {
	ok := Schedule{Name: "nightly", Task: "backup", Cron: "0 3 * * *", TimeZone: "Europe/Paris"}
	require.NoError(t, ok.Check())
	for _, tc := range []struct {
		name string
		edit func(s *Schedule)
	}{
		{"BadName", func(s *Schedule) { s.Name = "a.b" }},
		{"NoTask", func(s *Schedule) { s.Task = "" }},
		{"BadCron", func(s *Schedule) { s.Cron = "61 * * * *" }},
		{"BadZone", func(s *Schedule) { s.TimeZone = "Mars/Olympus" }},
		{"Both", func(s *Schedule) { s.EveryMS = 1000 }},
		{"Neither", func(s *Schedule) { s.Cron = "" }},
		{"EveryTooShort", func(s *Schedule) { s.Cron, s.TimeZone, s.EveryMS = "", "", 500 }},
		{"ZoneWithEvery", func(s *Schedule) { s.Cron, s.EveryMS = "", 60000 }},
		{"CronEvery", func(s *Schedule) { s.Cron, s.TimeZone = "@every 1m", "" }},
		{"CronTZPrefix", func(s *Schedule) { s.Cron = "CRON_TZ=UTC 0 3 * * *" }},
		{"BadCatchUp", func(s *Schedule) { s.CatchUp = "burst" }},
		{"CatchUpMax", func(s *Schedule) { s.CatchUpMax = MaxCatchUp + 1 }},
		{"KwNotObject", func(s *Schedule) { s.Kw = json.RawMessage(`[1]`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			require.ErrorIs(t, s.Check(), ErrInvalidEvent)
		})
	}
}

func TestScheduleTicker(t *testing.T) {
	// An interval ticks at multiples of it since the epoch, whoever asks.
	every := Schedule{Name: "e", Task: "t", EveryMS: 15 * 60 * 1000}
	tick, err := every.Ticker()
	require.NoError(t, err)
	at := time.Date(2026, 12, 7, 10, 7, 31, 0, time.UTC)
	require.Equal(t, time.Date(2026, 12, 7, 10, 15, 0, 0, time.UTC), tick(at))
	require.Equal(t, time.Date(2026, 12, 7, 10, 30, 0, 0, time.UTC), tick(tick(at)))
	// A cron expression is read in its time zone: 03:00 in Paris is 02:00
	// UTC in winter, 01:00 in summer.
	cron := Schedule{Name: "c", Task: "t", Cron: "0 3 * * *", TimeZone: "Europe/Paris"}
	tick, err = cron.Ticker()
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 12, 8, 2, 0, 0, 0, time.UTC), tick(at))
	require.Equal(t, time.Date(2026, 7, 2, 1, 0, 0, 0, time.UTC), tick(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)))
	// Six fields: seconds first.
	secs := Schedule{Name: "s", Task: "t", Cron: "*/10 * * * * *"}
	tick, err = secs.Ticker()
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 12, 7, 10, 7, 40, 0, time.UTC), tick(at))
	require.Equal(t, "schedule:nightly:1765159200000", ScheduleTickKey("nightly", time.Date(2025, 12, 8, 2, 0, 0, 0, time.UTC)))
}
