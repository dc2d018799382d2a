//go:build unix

package executor

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
)

// BenchmarkChainAdvancer is the cost of the chain advancer (every final
// fact delivered to the shared consumer qtasks-chains, looked at and
// acked) on tasks that are no chain's steps: the same run of no-op tasks
// with it on and off, tasks/s and CPU µs per task (process and embedded
// server together). docs/ARCHITECTURE.md, "Shared state, chains, limits".
//
//	go test -run=NONE -bench=ChainAdvancer -benchtime=3000x -count=3 ./executor
func BenchmarkChainAdvancer(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "advancer=off"
		if on {
			name = "advancer=on"
		}
		b.Run(name, func(b *testing.B) { benchAdvancer(b, on) })
	}
}

func benchAdvancer(b *testing.B, on bool) {
	b.Helper()
	ctx := benchCtx(b)
	bs := bustest.Open(b, &bus.Config{Logger: benchLogger()})
	app, err := New(bs, &Config{Concurrency: benchConcurrency, GracePeriod: 10 * time.Second, Logger: benchLogger()})
	if err != nil {
		b.Fatal(err)
	}
	app.flow.off = !on
	if on {
		// As a first Chain would: an app consumes final facts once a
		// chain exists (startFlow).
		if err := app.ensureChainConsumer(ctx); err != nil {
			b.Fatal(err)
		}
	}
	MustRegister(app, "noop", func(_ context.Context, in benchArgs) (int, error) { return in.A + in.B, nil }, nil)
	if err := app.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = app.Stop(context.Background()) })
	var done atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	sub, err := bs.Conn().Subscribe("$KV."+bus.BucketTasks+".>", func(m *nats.Msg) {
		if len(m.Data) > 0 && containsStatus(m.Data, `"status":"success"`) && done.Add(1) == int64(b.N) {
			once.Do(func() { close(all) })
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	b.Cleanup(func() { _ = sub.Unsubscribe() })

	b.ResetTimer()
	start, cpu0 := time.Now(), benchCPU()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range benchSubmitters {
		wg.Go(func() {
			for int(next.Add(1)) <= b.N {
				if _, err := app.Submit(ctx, "noop", benchArgs{A: 1, B: 1}, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(benchWait):
		b.Fatalf("%d of %d tasks done after %v", done.Load(), b.N, benchWait)
	}
	el, cpu := time.Since(start), benchCPU()-cpu0
	if on {
		// Every final fact is handled by then, or soon: wait, so that
		// the CPU counted includes the advancer's share.
		bustest.WaitFor(b, benchWait, "the advancer to catch up", func() bool {
			c, err := bs.EventStream().Consumer(ctx, ChainConsumer)
			if err != nil {
				return false
			}
			info, err := c.Info(ctx)
			return err == nil && info.NumPending == 0 && info.NumAckPending == 0
		})
		el, cpu = time.Since(start), benchCPU()-cpu0
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "tasks/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/task")
}

func containsStatus(data []byte, s string) bool { return bytes.Contains(data, []byte(s)) }
