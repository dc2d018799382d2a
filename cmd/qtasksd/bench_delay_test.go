//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// procSample is a process's resident memory and CPU time, from /proc.
type procSample struct {
	rssKB int64
	cpu   time.Duration // user + system
}

func sampleProc(pid int) (procSample, error) {
	var s procSample
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.rssKB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command's closing parenthesis: utime is the 14th
	// field of the line, stime the 15th, in clock ticks (100 Hz).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = time.Duration(ut+stt) * 10 * time.Millisecond
	return s, nil
}

// idleWindow is how long idleCost measures.
const idleWindow = 5 * time.Second

// idleCost is what a process spends over idleWindow doing nothing asked
// of it: its CPU in ms per second, and its RSS at the end.
func idleCost(b *testing.B, pid int) (cpuMSPerS float64, rssKB int64) {
	b.Helper()
	s0, err := sampleProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(idleWindow) // a measurement window, not a wait on a condition
	s1, err := sampleProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	return float64((s1.cpu - s0.cpu).Milliseconds()) / idleWindow.Seconds(), s1.rssKB
}

// BenchmarkDelayedWaiting: the cost of 100k delayed tasks waiting (due in
// an hour) on a qtasksd running a worker and a scheduler (its own process,
// on the server of another qtasksd, as in a deployment), and on the
// server: RSS and idle CPU of both before and after, beside the
// alternative of queueing the tasks at once and letting the worker hand
// each back until due (a negative acknowledgement with the delay: what a
// server without message schedules gets). QTASKS_BENCH_DELAYED sets the
// number of tasks.
//
//	go test -run=NONE -bench=DelayedWaiting -benchtime=1x ./cmd/qtasksd
func BenchmarkDelayedWaiting(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("QTASKS_BENCH_DELAYED")); err == nil && v > 0 {
		n = v
	}
	for range b.N {
		dir := b.TempDir()
		start := func(name string, args ...string) *testkit.Proc {
			d := filepath.Join(dir, name)
			if err := os.MkdirAll(d, 0o750); err != nil {
				b.Fatal(err)
			}
			p := testkit.StartProc(b, d, bin, append([]string{"run", "--data-dir", filepath.Join(d, "data"), "--http", "", "--log-level", "info"}, args...)...)
			for t0 := time.Now(); !strings.Contains(p.Output(), `"qtasksd ready"`); time.Sleep(50 * time.Millisecond) {
				if p.Exited() || time.Since(t0) > waitLimit {
					b.Fatalf("qtasksd %s did not start: %s", name, p.Output())
				}
			}
			return p
		}
		server := start("server", "--port", "0", "--no-worker", "--no-projection", "--no-scheduler", "--seal-interval", "0")
		url := urlRE.FindString(server.Output())
		worker := start("worker", "--nats-url", url, "--no-projection", "--demo", "--seal-interval", "0")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		client, err := bus.Open(ctx, bus.Config{URL: url, Name: "bench-client"})
		if err != nil {
			b.Fatal(err)
		}
		defer client.Close()

		wCPU0, wRSS0 := idleCost(b, worker.Pid())
		sCPU0, sRSS0 := idleCost(b, server.Pid())

		due := time.Now().Add(time.Hour)
		publish := func(direct bool, prefix string) time.Duration {
			var next atomic.Int64
			var wg sync.WaitGroup
			t0 := time.Now()
			for range 32 {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(n) {
							return
						}
						t := events.Task{
							ID: prefix + strconv.FormatInt(i, 10), Name: "echo", Queue: "default", Status: events.StatusNew,
							Attempt: 1, Args: json.RawMessage("[]"), Kw: json.RawMessage("{}"), NotBefore: due,
						}
						var err error
						if direct {
							err = enqueueDirect(ctx, client, t)
						} else {
							err = client.Enqueue(ctx, t, "bench")
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			return time.Since(t0)
		}
		took := publish(false, "d")
		wCPU1, wRSS1 := idleCost(b, worker.Pid())
		sCPU1, sRSS1 := idleCost(b, server.Pid())
		b.ReportMetric(float64(n)/took.Seconds(), "scheduled/s")
		b.ReportMetric(wCPU0, "worker-idle-cpu-ms/s-0")
		b.ReportMetric(wCPU1, "worker-idle-cpu-ms/s-100k")
		b.ReportMetric(float64(wRSS1-wRSS0)/1024, "worker-rss-MiB-delta")
		b.ReportMetric(sCPU0, "server-idle-cpu-ms/s-0")
		b.ReportMetric(sCPU1, "server-idle-cpu-ms/s-100k")
		b.ReportMetric(float64(sRSS1-sRSS0)*1024/float64(n), "server-rss-B/task")

		// The alternative: the same tasks on the run subject at once.
		w0, _ := sampleProc(worker.Pid())
		t0 := time.Now()
		publish(true, "n")
		c, err := client.JetStream().Consumer(ctx, bus.StreamTasks, "workers-default")
		if err != nil {
			b.Fatal(err)
		}
		for {
			ci, err := c.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if ci.NumPending == 0 && ci.NumAckPending >= n {
				break // every task pulled by the worker and handed back
			}
			if time.Since(t0) > 5*time.Minute {
				b.Fatalf("the worker took %d of %d tasks", ci.NumAckPending, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		w1, _ := sampleProc(worker.Pid())
		wCPU2, wRSS2 := idleCost(b, worker.Pid())
		_, sRSS2 := idleCost(b, server.Pid())
		b.ReportMetric(float64((w1.cpu-w0.cpu).Microseconds())/float64(n), "nak-worker-cpu-µs/task")
		b.ReportMetric(wCPU2, "nak-worker-idle-cpu-ms/s")
		b.ReportMetric(float64(wRSS2-wRSS1)/1024, "nak-worker-rss-MiB-delta")
		b.ReportMetric(float64(sRSS2-sRSS1)*1024/float64(n), "nak-server-rss-B/task")
		b.ReportMetric(0, "ns/op")
	}
}

// enqueueDirect puts t on its run subject at once, as Enqueue does for a
// task due now: the worker that receives it before its due time hands it
// back with a delay.
func enqueueDirect(ctx context.Context, b *bus.Bus, t events.Task) error {
	data, err := json.Marshal(t)
	if err != nil {
		return err
	}
	ev := events.Event{
		ID: t.ID + ":1", Source: "bench", Type: events.TypeTask, Subject: t.ID, Time: time.Now(),
		DataContentType: events.ContentTypeJSON, Data: data, TaskID: t.ID, TaskName: t.Name, Attempt: 1,
	}
	_, err = b.Publish(ctx, events.RunSubject(t.Queue), ev.ID, &ev)
	return err
}
