package replay_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/plugins/replay/internal/testplugin"
)

// benchN is how many invocations the benchmarks record and replay; set
// QTASKS_REPLAY_BENCH_N to change it (the memory benchmark also replays a
// tenth of it, to show that memory does not grow with the history).
func benchN(tb testing.TB) int {
	tb.Helper()
	if s := os.Getenv("QTASKS_REPLAY_BENCH_N"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(tb, err)
		return n
	}
	return 20000
}

// synthHistory writes n recorded invocations of testplugin v1 and their
// patches straight to the log of a new bus: the shape executor history
// has, without running n tasks.
func synthHistory(b *testing.B, n int) *bus.Bus {
	b.Helper()
	live := bustest.Open(b, &bus.Config{Logger: bustest.Logger(b), MaxPending: 8192})
	publishHistory(b, live, n)
	return live
}

// publishHistory writes the history of synthHistory to live.
func publishHistory(b *testing.B, live *bus.Bus, n int) {
	b.Helper()
	t0 := time.Now().Add(-time.Hour)
	for i := 1; i <= n; i++ {
		id := "t" + strconv.Itoa(i)
		at := t0.Add(time.Duration(i) * time.Millisecond)
		inv := events.Event{
			ID:     events.InvocationID(id, 1, 1, testplugin.Trigger, 0, testplugin.Name),
			Source: "qtasks/bench", Type: events.TypeInvokePrefix + testplugin.Trigger, Subject: id, Time: at,
			DataContentType: events.ContentTypeJSON, Data: []byte(`{"args":[],"kw":{"n":` + strconv.Itoa(i) + `}}`),
			TaskID: id, TaskName: "calc", Trigger: testplugin.Trigger, Attempt: 1, Run: 1,
			Plugin: testplugin.Name, PluginVersion: "1", TimeoutMS: 5000,
		}
		patch := events.Event{
			DataContentType: events.ContentTypeMergePatch,
			Data:            []byte(`{"kw":{"double":` + strconv.Itoa(2*i) + `,"stamp":"` + at.UTC().Format(time.RFC3339Nano) + `"}}`),
		}
		bus.FillPatch(&patch, events.PluginInfo{Name: testplugin.Name, Version: "1"}, inv)
		if _, err := live.PublishAsync(events.InvokeSubject(testplugin.Name, testplugin.Trigger), inv.ID, &inv); err != nil {
			b.Fatal(err)
		}
		if _, err := live.PublishAsync(events.PatchSubject(testplugin.Name, testplugin.Trigger), patch.ID, &patch); err != nil {
			b.Fatal(err)
		}
		if i%2000 == 0 || i == n {
			select {
			case <-live.JetStream().PublishAsyncComplete():
			case <-time.After(5 * time.Minute):
				b.Fatal("publishing the history did not complete")
			}
		}
	}
}

// BenchmarkReplay replays the history against testplugin v1 in its own
// process, and measures beside it the live mutator round trip (bus.Invoke
// against a plugins.Start consumer on the same server), at the same
// concurrency.
//
//	go test -run NONE -bench BenchmarkReplay$ -benchtime 1x ./plugins/replay/
func BenchmarkReplay(b *testing.B) {
	n := benchN(b)
	live := synthHistory(b, n)
	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("live-roundtrip/conc=%d", conc), func(b *testing.B) {
			benchLiveRoundTrip(b, live, conc)
		})
		b.Run(fmt.Sprintf("replay-process/conc=%d", conc), func(b *testing.B) {
			benchReplay(b, live, n, conc, candidate(b, "--version", "1", "--concurrency", "32"))
		})
		b.Run(fmt.Sprintf("replay-inprocess/conc=%d", conc), func(b *testing.B) {
			benchReplay(b, live, n, conc, inProcess(&testplugin.Plugin{Version: "1"}))
		})
	}
}

func benchReplay(b *testing.B, live *bus.Bus, n, conc int, c replay.Candidate) {
	b.Helper()
	c.Timeout = 30 * time.Second
	var first, last time.Time
	var seen int
	for b.Loop() {
		seen = 0
		rep, err := replay.Run(context.Background(), live, testplugin.Name, replay.Filter{}, replay.Options{
			Candidate:   c,
			Mask:        []string{"/kw/stamp"},
			Concurrency: conc,
			OnResult: func(replay.Result) {
				if seen == 0 {
					first = time.Now()
				}
				seen++
				last = time.Now()
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Totals.Identical != n {
			b.Fatalf("replay: %+v", rep.Totals)
		}
	}
	// The rate while replaying, start-up of the candidate left out.
	b.ReportMetric(float64(seen-1)/last.Sub(first).Seconds(), "inv/s")
}

func benchLiveRoundTrip(b *testing.B, live *bus.Bus, conc int) {
	b.Helper()
	ctx := context.Background()
	peer := bustest.Connect(b, live, nil)
	spec := testplugin.Spec(&testplugin.Plugin{Version: "1"})
	spec.Name = "bench-live-" + strconv.Itoa(conc)
	spec.Concurrency = 32
	r, err := plugins.Start(ctx, peer, spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Stop(context.Background()) })
	require.NoError(b, live.Registry().WaitFor(ctx, spec.Name, ""))
	info, _ := live.Registry().Get(spec.Name)
	var next atomic.Int64
	payload := []byte(`{"args":[],"kw":{"n":7}}`)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				id := "rt" + strconv.Itoa(conc) + "-" + strconv.FormatInt(i, 10) + "-" + strconv.Itoa(b.N)
				inv := events.Event{
					ID: id, Source: "qtasks/bench", Subject: id, Data: payload, TaskID: id, TaskName: "calc",
					Trigger: testplugin.Trigger, Attempt: 1, Run: 1,
				}
				if _, err := live.Invoke(ctx, info, inv); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "inv/s")
}

// BenchmarkReplayMemory replays N and N/10 invocations against testplugin
// v1 in its own process and reports the replaying process's peak heap:
// the replay streams, so the two are alike.
//
//	QTASKS_REPLAY_BENCH_N=100000 go test -run NONE -bench BenchmarkReplayMemory -benchtime 1x ./plugins/replay/
func BenchmarkReplayMemory(b *testing.B) {
	n := benchN(b)
	// The live server runs in a process of its own, as qtasksd does: the
	// heap measured is the replaying process's (the harness and its replay
	// server), as the CLI's would be.
	srv, err := startProc(nil, "", "--serve-dir", b.TempDir())
	require.NoError(b, err)
	b.Cleanup(srv.stop)
	writer := openURL(b, bus.Config{URL: srv.url, MaxPending: 8192})
	publishHistory(b, writer, n)
	live := openURL(b, bus.Config{URL: srv.url, ReadOnly: true})
	for _, size := range []int{n / 10, n} {
		b.Run(fmt.Sprintf("n=%d", size), func(b *testing.B) {
			for b.Loop() {
				runtime.GC()
				// Sampled every 10 ms: the heap in use (live objects and
				// garbage not yet collected: what the process holds) and
				// the live heap as of the last GC (what it needs).
				samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
				var peakInuse, peakLive uint64
				done := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					for {
						metrics.Read(samples)
						peakInuse = max(peakInuse, samples[0].Value.Uint64())
						peakLive = max(peakLive, samples[1].Value.Uint64())
						select {
						case <-done:
							return
						case <-t.C:
						}
					}
				}()
				c := candidate(b, "--version", "1", "--concurrency", "32")
				rep, err := replay.Run(context.Background(), live, testplugin.Name, replay.Filter{Last: size}, replay.Options{
					Candidate: c, Mask: []string{"/kw/stamp"}, Concurrency: 16,
				})
				close(done)
				<-sampled
				if err != nil {
					b.Fatal(err)
				}
				if rep.Totals.Identical != size {
					b.Fatalf("replay: %+v", rep.Totals)
				}
				b.ReportMetric(float64(peakInuse)/(1<<20), "peak-heap-MB")
				b.ReportMetric(float64(peakLive)/(1<<20), "peak-live-heap-MB")
				b.ReportMetric(float64(size), "invocations")
			}
		})
	}
}

// BenchmarkRead reads the history with its patches (what Export and Run
// read), beside bus.ReadLog reading the same messages raw.
//
//	go test -run NONE -bench BenchmarkRead ./plugins/replay/
func BenchmarkRead(b *testing.B) {
	n := benchN(b)
	live := synthHistory(b, n)
	b.Run("readlog-raw", func(b *testing.B) {
		var msgs int
		start := time.Now()
		for b.Loop() {
			if err := live.ReadLog(context.Background(), 1, nil, func(bus.Stored) error { msgs++; return nil }); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(msgs)/time.Since(start).Seconds(), "msg/s")
	})
	b.Run("replay.Read", func(b *testing.B) {
		var recs int
		start := time.Now()
		for b.Loop() {
			if err := replay.Read(context.Background(), live, testplugin.Name, replay.Filter{}, func(replay.Record) error { recs++; return nil }); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(recs)/time.Since(start).Seconds(), "inv/s")
	})
}

func openURL(tb testing.TB, cfg bus.Config) *bus.Bus {
	tb.Helper()
	cfg.Logger = bustest.Logger(tb)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	b, err := bus.Open(ctx, cfg)
	require.NoError(tb, err)
	tb.Cleanup(b.Close)
	return b
}
