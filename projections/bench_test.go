package projections_test

import (
	"context"
	"database/sql"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/projections"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// BenchmarkApply measures the projection's apply rate beside a raw batched
// SQLite insert of the same messages (seq, subject, data: one row per
// event) into another file of the same disk, with the same DSN and batch
// size, in the same run (half of the raw batches before the projection,
// half after). The projection side is the projector's pipeline without
// the network: one goroutine decodes (NATS header block, events.Decode,
// Prepare), another applies batches of DefaultBatchSize in transactions,
// and the DB's checkpointer folds the WAL beside them (the raw side's
// checkpoints run in its commits, SQLite's default). b.N is the number of
// events: copies of a recorded real run, generated before the clock
// starts.
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
	// The projection checkpoints beside its writer: the limit must not
	// pay checkpoints inside its commits either.
	if _, err := raw.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
		b.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `CREATE TABLE events (seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, data TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	ins, err := raw.PrepareContext(ctx, `INSERT INTO events (seq, subject, data) VALUES (?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()

	// The input is kept as the wire has it (subject, NATS header block,
	// data in one byte slice per message): the heap the collector scans
	// stays small, as in the projector, and decoding starts from what a
	// NATS client parses.
	const batchSize = projections.DefaultBatchSize
	var batches [][]wireMsg
	var cur []wireMsg
	for m := range projectionstest.Copies(recorded, b.N/len(recorded)+1, b.N) {
		cur = append(cur, toWire(m))
		if len(cur) == batchSize {
			batches, cur = append(batches, cur), nil
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	runtime.GC()
	b.ResetTimer()

	// Raw: what SQLite and the disk do, batch for batch, through
	// database/sql with a prepared statement. Half of the batches before
	// the projection and half after it, into the same table, so that both
	// see the same share of a shared machine's ups and downs.
	var seq int64
	var rawDur, rawCPU time.Duration
	rawBatches := func(batches [][]wireMsg) {
		c0 := cpuTime()
		t0 := time.Now()
		for _, batch := range batches {
			tx, err := raw.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			st := tx.StmtContext(ctx, ins) //nolint:sqlclosecheck // the transaction's: its Commit closes it
			for _, m := range batch {
				seq++
				if _, err := st.ExecContext(ctx, seq, m.subject(), m.data()); err != nil {
					b.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		rawDur += time.Since(t0)
		rawCPU += cpuTime() - c0
	}
	rawBatches(batches[:len(batches)/2])

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
				h, err := nats.DecodeHeadersMsg(m.header())
				if err != nil {
					panic(err)
				}
				stored[i] = projections.Prepare(bus.Unpack(next, m.subject(), events.Headers(h), m.dataBytes())[0])
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
	runtime.GC() // the projection's garbage is not the raw side's to collect
	rawBatches(batches[len(batches)/2:])
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

// wireMsg is a message as one byte slice: subject, header block, data.
type wireMsg struct {
	buf             []byte
	subjEnd, hdrEnd int
}

func toWire(m projectionstest.Msg) wireMsg {
	var buf []byte
	buf = append(buf, m.Subject...)
	w := wireMsg{subjEnd: len(buf)}
	buf = append(buf, "NATS/1.0\r\n"...)
	for k, vs := range m.Header {
		for _, v := range vs {
			buf = append(buf, k+": "+v+"\r\n"...)
		}
	}
	buf = append(buf, "\r\n"...)
	w.hdrEnd = len(buf)
	buf = append(buf, m.Data...)
	w.buf = buf
	return w
}

func (w wireMsg) subject() string   { return string(w.buf[:w.subjEnd]) }
func (w wireMsg) header() []byte    { return w.buf[w.subjEnd:w.hdrEnd] }
func (w wireMsg) dataBytes() []byte { return w.buf[w.hdrEnd:] }
func (w wireMsg) data() string      { return string(w.buf[w.hdrEnd:]) }

// BenchmarkRebuild measures Build from sequence 1 of a log of b.N events
// (published first, not timed) and the Go heap while it runs. The NATS
// server runs in a process of its own (qtasksd --no-worker), so that the
// heap is the rebuild's: the server's memory grows with the number of
// subjects in the log, the rebuild's must not (it holds a batch or two).
// peak-live-MB is the largest live heap after a collection during the
// rebuild; peak-heap-MB also counts garbage not yet collected.
//
//	go test ./projections/ -run NONE -bench Rebuild -benchtime 1000000x -timeout 60m
func BenchmarkRebuild(b *testing.B) {
	recorded := projectionstest.ReadFile(b, projectionstest.ScenarioLog())
	bs := externalServer(b)
	projectionstest.Publish(b, bs, projectionstest.Copies(recorded, b.N/len(recorded)+1, b.N))
	path := filepath.Join(b.TempDir(), "rebuilt.db")
	runtime.GC()
	base := liveBytes()
	peak := newPeak()
	b.ResetTimer()
	st, err := projections.Build(context.Background(), bs, path, nil)
	b.StopTimer()
	peakHeap, peakLive := peak.stop()
	if err != nil {
		b.Fatal(err)
	}
	if st.Events != b.N {
		b.Fatalf("built %d events, want %d", st.Events, b.N)
	}
	b.ReportMetric(float64(b.N)/st.Duration.Seconds(), "events/s")
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(peakLive)/(1<<20), "peak-live-MB")
	b.ReportMetric(float64(base)/(1<<20), "live-before-MB")
}

// externalServer starts qtasksd (embedded NATS, no worker, no projection)
// as a child process for the benchmark and connects a bus to it.
func externalServer(b *testing.B) *bus.Bus {
	b.Helper()
	dir := b.TempDir()
	bin := testkit.Build(b, "../cmd/qtasksd")
	ln, err := (&net.ListenConfig{}).Listen(b.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := testkit.Command(bin, "--port", strconv.Itoa(port), "--data-dir", filepath.Join(dir, "data"), "--no-worker",
		"--no-projection", "--http", "", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	var bs *bus.Bus
	bustest.WaitFor(b, time.Minute, "qtasksd to accept connections", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		bs, err = bus.Open(ctx, bus.Config{URL: url})
		return err == nil
	})
	b.Cleanup(bs.Close)
	return bs
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapBytes() uint64 { return readMetric("/memory/classes/heap/objects:bytes") }

// liveBytes is the live heap as of the last collection.
func liveBytes() uint64 { return readMetric("/gc/heap/live:bytes") }

func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// peak samples the heap every few milliseconds until stopped.
type peak struct {
	stopc      chan struct{}
	wg         sync.WaitGroup
	heap, live uint64
}

func newPeak() *peak {
	p := &peak{stopc: make(chan struct{}), heap: heapBytes(), live: liveBytes()}
	p.wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				p.heap, p.live = max(p.heap, heapBytes()), max(p.live, liveBytes())
			case <-p.stopc:
				return
			}
		}
	})
	return p
}

func (p *peak) stop() (heap, live uint64) {
	close(p.stopc)
	p.wg.Wait()
	return max(p.heap, heapBytes()), max(p.live, liveBytes())
}

// BenchmarkPrepare measures the projector's decoding goroutine alone: NATS
// header block, events.Decode and Prepare of copies of a recorded run, one
// event per op.
//
//	go test ./projections/ -run NONE -bench Prepare
func BenchmarkPrepare(b *testing.B) {
	recorded := projectionstest.ReadFile(b, projectionstest.ScenarioLog())
	var msgs []wireMsg
	for m := range projectionstest.Copies(recorded, 4, 0) {
		msgs = append(msgs, toWire(m))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m := msgs[i%len(msgs)]
		h, err := nats.DecodeHeadersMsg(m.header())
		if err != nil {
			b.Fatal(err)
		}
		p := projections.Prepare(bus.Unpack(uint64(i+1), m.subject(), events.Headers(h), m.dataBytes())[0])
		if p.Seq() == 0 {
			b.Fatal("not prepared")
		}
	}
}
