package projections_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/projections"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// BenchmarkApply measures the projection's apply rate beside a raw batched
// SQLite insert of the same messages (seq, subject, data: one row per
// event) into another file of the same disk, in the same run. The
// projection side is the projector's pipeline without the network: one
// goroutine decodes (events.Decode), another applies batches of
// DefaultBatchSize in transactions. b.N is the number of events: copies of
// a recorded real run, generated before the clock starts.
//
//	go test ./projections/ -run NONE -bench Apply -benchtime 200000x
func BenchmarkApply(b *testing.B) {
	recorded := projectionstest.ReadFile(b, projectionstest.ScenarioLog())
	ctx := context.Background()
	dir := b.TempDir()
	db, err := projections.Open(ctx, filepath.Join(dir, "projection.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	raw, err := sql.Open("sqlite3", projections.DSN(filepath.Join(dir, "raw.db")))
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	raw.SetMaxOpenConns(1)
	if _, err := raw.ExecContext(ctx, `CREATE TABLE events (seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, data TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	ins, err := raw.PrepareContext(ctx, `INSERT INTO events (seq, subject, data) VALUES (?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()

	const batchSize = projections.DefaultBatchSize
	var batches [][]projectionstest.Msg
	var cur []projectionstest.Msg
	for m := range projectionstest.Copies(recorded, b.N/len(recorded)+1, b.N) {
		cur = append(cur, m)
		if len(cur) == batchSize {
			batches, cur = append(batches, cur), nil
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	runtime.GC()
	b.ResetTimer()

	// Raw: what SQLite and the disk do at best, batch for batch.
	c0 := cpuTime()
	t0 := time.Now()
	var seq int64
	for _, batch := range batches {
		tx, err := raw.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		st := tx.StmtContext(ctx, ins)
		for _, m := range batch {
			seq++
			if _, err := st.ExecContext(ctx, seq, m.Subject, m.Data); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	rawDur := time.Since(t0)
	rawCPU := cpuTime() - c0

	// Projection: decode and prepare beside apply, as the projector does.
	c1 := cpuTime()
	t1 := time.Now()
	decoded := make(chan []projections.Prepared, 4)
	var decodeDur time.Duration
	go func() {
		defer close(decoded)
		var next uint64
		for _, batch := range batches {
			d0 := time.Now()
			stored := make([]projections.Prepared, len(batch))
			for i, m := range batch {
				next++
				stored[i] = projections.Prepare(m.Stored(next))
			}
			decodeDur += time.Since(d0)
			decoded <- stored
		}
	}()
	for stored := range decoded {
		if _, err := db.ApplyPrepared(ctx, stored); err != nil {
			b.Fatal(err)
		}
	}
	applyDur := time.Since(t1)
	applyCPU := cpuTime() - c1
	b.StopTimer()

	rawRate := float64(b.N) / rawDur.Seconds()
	applyRate := float64(b.N) / applyDur.Seconds()
	b.ReportMetric(applyRate, "events/s")
	b.ReportMetric(rawRate, "raw-rows/s")
	b.ReportMetric(applyRate/rawRate, "apply/raw")
	b.ReportMetric(float64(decodeDur.Nanoseconds())/float64(b.N), "prepare-ns/event")
	// CPU time (both goroutines; the process's user and system time) is
	// steadier than the rates on a shared machine.
	b.ReportMetric(float64(rawCPU.Nanoseconds())/float64(b.N), "raw-cpu-ns/row")
	b.ReportMetric(float64(applyCPU.Nanoseconds())/float64(b.N), "apply-cpu-ns/event")
}

// BenchmarkRebuild measures Build from sequence 1 of a log of b.N events
// (published first, not timed), and the peak Go heap while it runs: the
// rebuild holds one batch at a time, so the peak does not grow with the
// length of the history.
//
//	go test ./projections/ -run NONE -bench Rebuild -benchtime 1000000x -timeout 30m
func BenchmarkRebuild(b *testing.B) {
	recorded := projectionstest.ReadFile(b, projectionstest.ScenarioLog())
	bs := bustest.Open(b, nil)
	projectionstest.Publish(b, bs, projectionstest.Copies(recorded, b.N/len(recorded)+1, b.N))
	path := filepath.Join(b.TempDir(), "rebuilt.db")
	runtime.GC()
	base := heapBytes()
	peak := newPeak()
	b.ResetTimer()
	st, err := projections.Build(context.Background(), bs, path, nil)
	b.StopTimer()
	peakHeap := peak.stop()
	if err != nil {
		b.Fatal(err)
	}
	if st.Events != b.N {
		b.Fatalf("built %d events, want %d", st.Events, b.N)
	}
	b.ReportMetric(float64(b.N)/st.Duration.Seconds(), "events/s")
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(peakHeap-min(base, peakHeap))/(1<<20), "peak-heap-growth-MB")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// peak samples the live heap every few milliseconds until stopped.
type peak struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	max   uint64
}

func newPeak() *peak {
	p := &peak{stopc: make(chan struct{}), max: heapBytes()}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				p.max = max(p.max, heapBytes())
			case <-p.stopc:
				return
			}
		}
	}()
	return p
}

func (p *peak) stop() uint64 {
	close(p.stopc)
	p.wg.Wait()
	return max(p.max, heapBytes())
}
