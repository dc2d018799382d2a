//go:build unix

package executor

import (
	"context"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
)

// benchSubmitGoroutines is how many goroutines Submit concurrently in
// BenchmarkSubmitMany, as the harness's (bench/ -submitters).
const benchSubmitGoroutines = 32

// BenchmarkSubmitMany: b.N no-op tasks submitted three ways in the same
// run, each on a new embedded server, every trigger recorded (the
// default): SubmitMany of b.N in one call, Submit from 32 goroutines, and
// Submit one after another. Figures: tasks/s and CPU per task (this
// process, the embedded server included) of each way, and SubmitMany's
// tasks/s ÷ each other way's. The CPU profile's samples carry the way as
// the label "way" (go tool pprof -tagfocus way=many).
//
//	go test -run=NONE -bench=SubmitMany -benchtime=10000x -count=3 ./executor
func BenchmarkSubmitMany(b *testing.B) {
	ctx := benchCtx(b)
	type args struct{ A, B int }
	way := func(name string, submit func(app *App, n int)) (perSec, cpuPerTask float64) {
		bs := bustest.Open(b, &bus.Config{Record: bus.RecordAll, Logger: benchLogger()})
		app, err := New(bs, &Config{Logger: benchLogger()})
		if err != nil {
			b.Fatal(err)
		}
		submit(app, 20) // warm up: the connection, the streams' first writes
		var el, cpu time.Duration
		pprof.Do(ctx, pprof.Labels("way", name), func(context.Context) {
			cpu0, t0 := benchCPU(), time.Now()
			submit(app, b.N)
			el, cpu = time.Since(t0), benchCPU()-cpu0
		})
		bs.Close()
		return float64(b.N) / el.Seconds(), float64(cpu.Microseconds()) / float64(b.N)
	}
	one := func(app *App, i int) {
		if _, err := app.Submit(ctx, "noop", args{A: i, B: 1}, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	many, manyCPU := way("many", func(app *App, n int) {
		reqs := make([]SubmitRequest, n)
		for i := range reqs {
			reqs[i] = SubmitRequest{Name: "noop", Input: args{A: i, B: 1}}
		}
		res, err := app.SubmitMany(ctx, reqs)
		if err != nil {
			b.Fatal(err)
		}
		if len(res) != n {
			b.Fatalf("%d results for %d submissions", len(res), n)
		}
	})
	conc, concCPU := way("conc", func(app *App, n int) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range benchSubmitGoroutines {
			wg.Go(func() {
				for i := range next {
					one(app, i)
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	})
	seq, seqCPU := way("seq", func(app *App, n int) {
		for i := range n {
			one(app, i)
		}
	})
	b.StopTimer()
	b.ReportMetric(many, "many-tasks/s")
	b.ReportMetric(conc, "conc"+strconv.Itoa(benchSubmitGoroutines)+"-tasks/s")
	b.ReportMetric(seq, "seq-tasks/s")
	b.ReportMetric(many/seq, "many-x-seq")
	b.ReportMetric(many/conc, "many-x-conc")
	b.ReportMetric(manyCPU, "many-cpu-us/task")
	b.ReportMetric(concCPU, "conc-cpu-us/task")
	b.ReportMetric(seqCPU, "seq-cpu-us/task")
	b.ReportMetric(0, "ns/op")
}
