//go:build unix

package executor

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// BenchmarkScheduleTick: what a scheduler spends per tick (claim the tick
// with a compare-and-set, submit its task, record the tick, confirm it),
// beside a plain Submit of the same task in the same run: the scheduler's
// overhead per tick is the difference. The clock is the benchmark's (one
// interval per iteration), so ticks come as fast as they are fired.
//
//	go test -run=NONE -bench=ScheduleTick -benchtime=2000x ./executor
func BenchmarkScheduleTick(b *testing.B) {
	ctx := benchCtx(b)
	bs := bustest.Open(b, &bus.Config{Logger: benchLogger()})
	var mu sync.Mutex
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	app, err := New(bs, &Config{Logger: benchLogger(), Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := app.AddSchedule(ctx, events.Schedule{Name: "bench", Task: "noop", EveryMS: time.Minute.Milliseconds()}, Action{By: "bench"}); err != nil {
		b.Fatal(err)
	}
	e, err := bs.GetSchedule(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	tick, _ := e.State.Spec.Ticker()
	s := &Scheduler{a: app, ctx: ctx, entries: map[string]bus.ScheduleEntry{"bench": e}, ticks: map[string]func(time.Time) time.Time{"bench": tick}}

	run := func(n int, f func(i int)) time.Duration {
		start := time.Now()
		for i := range n {
			f(i)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	ticks := run(b.N, func(int) {
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
		s.step()
	})
	b.StopTimer()
	submits := run(b.N, func(int) {
		if _, err := app.Submit(ctx, "noop", nil, nil); err != nil {
			b.Fatal(err)
		}
	})
	st, err := bs.GetSchedule(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	if want := t0.Add(time.Duration(b.N) * time.Minute); !st.State.LastTick.Equal(want) || len(st.State.Pending) > 0 {
		b.Fatalf("last tick %v (want %v), pending %v: not every tick was fired", st.State.LastTick, want, st.State.Pending)
	}
	b.ReportMetric(float64(ticks.Microseconds())/float64(b.N), "µs/tick")
	b.ReportMetric(float64(submits.Microseconds())/float64(b.N), "µs/submit")
	b.ReportMetric(float64((ticks-submits).Microseconds())/float64(b.N), "µs-overhead/tick")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDelayLateness: how late delayed tasks run after their due time
// (each must run at or after it): 200 tasks submitted with RunIn 2s, their
// runs' lateness as percentiles. The tolerance documented is
// events.DelayTolerance.
//
//	go test -run=NONE -bench=DelayLateness -benchtime=1x ./executor
func BenchmarkDelayLateness(b *testing.B) {
	const tasks = 200
	ctx := benchCtx(b)
	for range b.N {
		bs := bustest.Open(b, &bus.Config{Logger: benchLogger()})
		app, err := New(bs, &Config{Logger: benchLogger(), Concurrency: 64})
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		late := make([]time.Duration, 0, tasks)
		done := make(chan struct{}, tasks)
		MustRegister(app, "due", func(_ context.Context, in struct {
			Due time.Time `json:"due"`
		},
		) (int, error) {
			d := time.Since(in.Due)
			mu.Lock()
			late = append(late, d)
			mu.Unlock()
			done <- struct{}{}
			return 0, nil
		}, nil)
		if err := app.Start(ctx); err != nil {
			b.Fatal(err)
		}
		for range tasks {
			due := time.Now().Add(2 * time.Second)
			if _, err := app.Submit(ctx, "due", map[string]any{"due": due}, &SubmitOptions{RunAt: due}); err != nil {
				b.Fatal(err)
			}
		}
		for range tasks {
			select {
			case <-done:
			case <-ctx.Done():
				b.Fatal("delayed tasks did not run")
			}
		}
		_ = app.Stop(ctx)
		slices.Sort(late)
		if late[0] < 0 {
			b.Fatalf("a task ran %v before its due time", -late[0])
		}
		p := func(q float64) float64 { return float64(late[int(q*float64(len(late)-1))].Milliseconds()) }
		b.ReportMetric(p(0.5), "ms-late-p50")
		b.ReportMetric(p(0.99), "ms-late-p99")
		b.ReportMetric(float64(slices.Max(late).Milliseconds()), "ms-late-max")
		b.ReportMetric(0, "ns/op")
	}
}
