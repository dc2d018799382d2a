//go:build unix

package executor

import (
	"context"
	"os"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
)

// benchSubmitGoroutines is how many goroutines Submit concurrently in
// BenchmarkSubmitMany, as the harness's (bench/ -submitters).
const benchSubmitGoroutines = 32

// benchSubmitRound is how many tasks each way of BenchmarkSubmitMany
// submits before the next way takes its turn: the ways alternate, so that
// a machine whose load changes from one second to the next gives each
// about the same share of its cores.
const benchSubmitRound = 2500

// BenchmarkSubmitMany: b.N no-op tasks submitted three ways in the same
// run, each on an embedded server of its own, every trigger recorded (the
// default): SubmitMany (one call per round of benchSubmitRound), Submit
// from 32 goroutines, and Submit one after another, the ways taking turns
// by rounds. Figures, per way: tasks/s, CPU per task (this process, the
// embedded servers included) and the cores it used (CPU ÷ wall-clock
// time); and SubmitMany's tasks/s ÷ each other way's. The CPU profile's
// samples of the submitting goroutines carry the way as the label "way"
// (go tool pprof -tagfocus way=many). With QTASKS_BENCH_WAY=many (or conc,
// seq) only that way runs, to profile it alone.
//
//	go test -run=NONE -bench=SubmitMany -benchtime=10000x -count=3 ./executor
func BenchmarkSubmitMany(b *testing.B) {
	ctx := benchCtx(b)
	type args struct{ A, B int }
	type way struct {
		name    string
		submit  func(app *App, from, n int)
		app     *App
		el, cpu time.Duration
		idle    float64 // seconds of idle Ps (runtime/metrics)
		runq    float64 // seconds its threads waited for a core (Linux)
	}
	one := func(app *App, i int) {
		if _, err := app.Submit(ctx, "noop", args{A: i, B: 1}, nil); err != nil {
			b.Fatal(err)
		}
	}
	ways := []*way{
		{name: "many", submit: func(app *App, from, n int) {
			reqs := make([]SubmitRequest, n)
			for i := range reqs {
				reqs[i] = SubmitRequest{Name: "noop", Input: args{A: from + i, B: 1}}
			}
			res, err := app.SubmitMany(ctx, reqs)
			if err != nil {
				b.Fatal(err)
			}
			if len(res) != n {
				b.Fatalf("%d results for %d submissions", len(res), n)
			}
		}},
		{name: "conc", submit: func(app *App, from, n int) {
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
				next <- from + i
			}
			close(next)
			wg.Wait()
		}},
		{name: "seq", submit: func(app *App, from, n int) {
			for i := range n {
				one(app, from+i)
			}
		}},
	}
	if only := os.Getenv("QTASKS_BENCH_WAY"); only != "" {
		ways = slices.DeleteFunc(ways, func(w *way) bool { return w.name != only })
	}
	for _, w := range ways {
		bs := bustest.Open(b, &bus.Config{Record: bus.RecordAll, Logger: benchLogger()})
		app, err := New(bs, &Config{Logger: benchLogger()})
		if err != nil {
			b.Fatal(err)
		}
		w.app = app
		w.submit(app, 0, 20) // warm up: the connection, the streams' first writes
	}
	b.ResetTimer()
	for from := 0; from < b.N; from += benchSubmitRound {
		n := min(benchSubmitRound, b.N-from)
		for _, w := range ways {
			pprof.Do(ctx, pprof.Labels("way", w.name), func(context.Context) {
				cpu0, idle0, runq0, t0 := benchCPU(), benchIdlePs(), benchRunQueueWait(), time.Now()
				w.submit(w.app, from, n)
				w.el += time.Since(t0)
				w.cpu += benchCPU() - cpu0
				w.idle += benchIdlePs() - idle0
				w.runq += benchRunQueueWait() - runq0
			})
		}
	}
	b.StopTimer()
	rate := map[string]float64{}
	for _, w := range ways {
		rate[w.name] = float64(b.N) / w.el.Seconds()
		b.ReportMetric(rate[w.name], w.name+"-tasks/s")
		b.ReportMetric(float64(w.cpu.Microseconds())/float64(b.N), w.name+"-cpu-us/task")
		b.ReportMetric(w.cpu.Seconds()/w.el.Seconds(), w.name+"-cores")
		b.ReportMetric(w.idle/w.el.Seconds(), w.name+"-idle-ps")
		b.ReportMetric(w.runq/w.el.Seconds(), w.name+"-runq-wait")
	}
	if rate["many"] > 0 && rate["seq"] > 0 {
		b.ReportMetric(rate["many"]/rate["seq"], "many-x-seq")
	}
	if rate["many"] > 0 && rate["conc"] > 0 {
		b.ReportMetric(rate["many"]/rate["conc"], "many-x-conc"+strconv.Itoa(benchSubmitGoroutines))
	}
	b.ReportMetric(0, "ns/op")
}

// benchIdlePs is the time the Ps of this process have been idle so far:
// no goroutine to run, counting the time the GC's idle mark workers took
// on Ps that had none (runtime/metrics; the runtime updates these figures
// at the end of each GC cycle, so a window of many cycles is needed).
func benchIdlePs() float64 {
	s := []rtmetrics.Sample{{Name: "/cpu/classes/idle:cpu-seconds"}, {Name: "/cpu/classes/gc/mark/idle:cpu-seconds"}}
	rtmetrics.Read(s)
	var total float64
	for _, x := range s {
		if x.Value.Kind() == rtmetrics.KindFloat64 {
			total += x.Value.Float64()
		}
	}
	return total
}

// benchRunQueueWait is the time the threads of this process have spent
// runnable but waiting for a core so far: the second field of each
// thread's /proc/self/task/*/schedstat (Linux; 0 elsewhere). Threads that
// ended are not counted; the Go runtime seldom ends one.
func benchRunQueueWait() float64 {
	dirs, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var ns int64
	for _, d := range dirs {
		data, err := os.ReadFile("/proc/self/task/" + d.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			ns += v
		}
	}
	return float64(ns) / 1e9
}
