package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	_ "github.com/mattn/go-sqlite3" // the raw SQLite limit: the driver projections uses
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/projections"
)

// history is an event log, on a qtasksd process of its own, made of real
// task runs: one no-op task run by a
// real executor with one in-process mutator (bench-mut-0 on
// task_executor_args_replace), every trigger recorded, then its events
// cloned with fresh task ids (every byte of the template's task id replaced
// in subjects, headers and data) until the log holds the events wanted.
// Cloning makes a million events in seconds instead of minutes, and each
// clone is what the executor wrote, event for event.
type history struct {
	b      *bus.Bus
	events uint64
	// perTask is how many events one cloned task run has.
	perTask int
	// first holds the first ApplyEvents events of the log, for the apply
	// benchmark (read once, so that it measures SQLite and not JetStream).
	first []bus.Stored
}

// mutatorPlugin is the template run's mutator; its recorded invocations
// are what the replay benchmark replays.
const mutatorPlugin = "bench-mut-0"

// makeHistory builds a log on a new embedded server that stays up until the
// harness closes: the template run, then clones until the log holds at
// least target(events after the template run, events per run) events.
func (h *Harness) makeHistory(ctx context.Context, target func(base uint64, perTask int) uint64, keepFirst int) (*history, error) {
	t0 := time.Now()
	// The server is a qtasksd process with no worker and no projector, as
	// in production: the rebuild and replay read the log from another
	// process, and this process's memory holds only their side.
	qd, err := h.startQtasksd("--no-worker", "--no-projection")
	if err != nil {
		return nil, err
	}
	h.onClose(qd.stop)
	b, err := bus.Open(ctx, bus.Config{URL: qd.url, Name: "bench-history", Logger: h.quiet})
	if err != nil {
		return nil, err
	}
	h.onClose(b.Close)
	hist := &history{b: b}
	tmpl, err := templateRun(ctx, h, b)
	if err != nil {
		return nil, err
	}
	hist.perTask = len(tmpl.msgs)
	nc, err := nats.Connect(b.ClientURL(), nats.Name("bench-history"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(bus.DefaultMaxPending))
	if err != nil {
		return nil, err
	}
	info, err := b.EventStream().Info(ctx)
	if err != nil {
		return nil, err
	}
	have := info.State.Msgs
	n := target(have, hist.perTask)
	for have < n {
		id := []byte(uuid.NewString())
		for _, m := range tmpl.msgs {
			c := nats.NewMsg(string(bytes.ReplaceAll([]byte(m.Subject), tmpl.id, id)))
			for k, vs := range m.Header {
				for _, v := range vs {
					c.Header.Add(k, string(bytes.ReplaceAll([]byte(v), tmpl.id, id)))
				}
			}
			c.Data = bytes.ReplaceAll(m.Data, tmpl.id, id)
			if _, err := js.PublishMsgAsync(c, jetstream.WithStallWait(wait)); err != nil {
				return nil, fmt.Errorf("cloning history: %w", err)
			}
		}
		have += uint64(len(tmpl.msgs))
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * wait):
		return nil, errors.New("cloning history: acks missing")
	}
	if info, err = b.EventStream().Info(ctx); err != nil {
		return nil, err
	}
	hist.events = info.State.Msgs
	if keepFirst > 0 {
		errEnough := errors.New("enough")
		err := b.ReadLog(ctx, 1, nil, func(s bus.Stored) error {
			hist.first = append(hist.first, s)
			if len(hist.first) >= keepFirst {
				return errEnough
			}
			return nil
		})
		if err != nil && !errors.Is(err, errEnough) {
			return nil, err
		}
	}
	h.logf("history: %d events (%d per task run) in %.1fs", hist.events, hist.perTask, time.Since(t0).Seconds())
	return hist, nil
}

// template is one task run's messages as stored, and its task id.
type template struct {
	id   []byte
	msgs []*jetstream.RawStreamMsg
}

// templateRun runs one no-op task with bench-mut-0 through a real
// executor on b and returns its stored messages.
func templateRun(ctx context.Context, h *Harness, b *bus.Bus) (*template, error) {
	app, err := executor.New(b, &executor.Config{Concurrency: 4, GracePeriod: 10 * time.Second, Logger: h.quiet})
	if err != nil {
		return nil, err
	}
	executor.MustRegister(app, "noop", func(_ context.Context, in noopArgs) (int, error) { return in.A + in.B, nil }, nil)
	r, err := plugins.Local(ctx, b, kwMutator(0))
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Stop(context.Background()) }()
	if err := app.Start(ctx); err != nil {
		return nil, err
	}
	t, err := app.Submit(ctx, "noop", noopArgs{A: 1, B: 2}, nil)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if t, err = app.Wait(wctx, t.ID); err != nil {
		return nil, err
	}
	if t.Status != events.StatusSuccess {
		return nil, fmt.Errorf("template task ended %s: %s", t.Status, t.Error)
	}
	last, err := settledMsgs(ctx, b)
	if err != nil {
		return nil, err
	}
	sctx, c := context.WithTimeout(ctx, 30*time.Second)
	err = app.Stop(sctx)
	c()
	if err != nil {
		return nil, err
	}
	tm := &template{id: []byte(t.ID)}
	for seq := uint64(1); seq <= last; seq++ {
		m, err := b.EventStream().GetMsg(ctx, seq)
		if err != nil {
			return nil, err
		}
		// Subjects carry no task ids; the taskid attribute does.
		if m.Header.Get(events.HeaderPrefix+"taskid") == t.ID {
			tm.msgs = append(tm.msgs, m)
		}
	}
	var invocations int
	for _, m := range tm.msgs {
		if strings.HasPrefix(m.Subject, events.SubjectInvoke+"."+mutatorPlugin+".") {
			invocations++
		}
	}
	if invocations != 1 {
		return nil, fmt.Errorf("template run has %d invocations of %s, want 1", invocations, mutatorPlugin)
	}
	return tm, nil
}

func (h *Harness) projectionHistory(ctx context.Context) (*history, error) {
	h.histOnce.Do(func() {
		n := uint64(max(slicesMax(h.cfg.RebuildSizes), h.cfg.ApplyEvents))
		h.hist, h.histErr = h.makeHistory(ctx, func(uint64, int) uint64 { return n }, h.cfg.ApplyEvents)
	})
	return h.hist, h.histErr
}

func (h *Harness) replayHistory(ctx context.Context) (*history, error) {
	h.replayOnce.Do(func() {
		// The template run, then ReplayTasks-1 clones: ReplayTasks recorded
		// invocations of bench-mut-0.
		h.replayH, h.replayErr = h.makeHistory(ctx, func(base uint64, perTask int) uint64 {
			return base + uint64((h.cfg.ReplayTasks-1)*perTask)
		}, 0)
	})
	return h.replayH, h.replayErr
}

func slicesMax(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// rawSQLiteDSN is the DSN of the raw insert limit: the same driver
// (mattn/go-sqlite3) and pragmas as projections.DSN (WAL, synchronous
// NORMAL, IMMEDIATE transactions, a busy timeout) but foreign keys, which
// its one table does not have.
func rawSQLiteDSN(path string) string {
	return "file:" + path + "?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate&_synchronous=NORMAL"
}

// rawInsert writes every event of evs as one row (stream sequence, subject,
// type, task id, time, data) into a fresh table, batch rows per
// transaction, with a prepared statement; it returns rows per second.
func rawInsert(ctx context.Context, path string, evs []bus.Stored, batch int) (float64, error) {
	db, err := sql.Open("sqlite3", rawSQLiteDSN(path))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	// No checkpoint inside the timed commits: the projection runs its
	// checkpoints beside the writer, so the limit must not pay them
	// either (SQLite's default, every 1000 pages, costs two fsyncs).
	if _, err := db.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
		return 0, err
	}
	// An event's position is its message's stream sequence and its index
	// in the message (a phase message holds several), as the projection's
	// pos.
	if _, err := db.ExecContext(ctx, `CREATE TABLE events (pos INTEGER PRIMARY KEY, subject TEXT NOT NULL,
		type TEXT NOT NULL, task_id TEXT, time TEXT, data BLOB)`); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for i := 0; i < len(evs); {
		end := batchEnd(evs, i, batch)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO events (pos, subject, type, task_id, time, data) VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			_ = tx.Rollback()
			return 0, err
		}
		for _, s := range evs[i:end] {
			e := s.Event
			pos := int64(s.Seq)<<16 | int64(s.Index)
			if _, err := st.ExecContext(ctx, pos, s.Subject, e.Type, e.TaskID, e.Time.UTC().Format(time.RFC3339Nano), []byte(e.Data)); err != nil {
				_ = tx.Rollback()
				return 0, err
			}
		}
		_ = st.Close()
		if err := tx.Commit(); err != nil {
			return 0, err
		}
		i = end
	}
	return float64(len(evs)) / time.Since(t0).Seconds(), nil
}

// batchEnd is the end of the batch of about n events from evs[i]: it
// holds whole messages (DB.Apply takes a message's events together), so
// it may run past n to the end of the message it would split.
func batchEnd(evs []bus.Stored, i, n int) int {
	end := min(i+n, len(evs))
	for end < len(evs) && evs[end].Seq == evs[end-1].Seq {
		end++
	}
	return end
}

// projectionApply applies evs to a new projection database with DB.Apply,
// batch events per transaction (the projector's default); it returns
// events per second. DB.Apply prepares (decoding, checks, blame) on other
// goroutines while it writes, as the projector prepares on its reader
// goroutine: the rate is what the projector's writer sustains when the
// events are there, the network aside. The WAL checkpoints run beside the
// writer too (projections/checkpoint.go), while the raw insert's run in
// its commits, as SQLite does by default.
func projectionApply(ctx context.Context, path string, evs []bus.Stored, batch int) (float64, error) {
	db, err := projections.Open(ctx, path, nil)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	t0 := time.Now()
	for i := 0; i < len(evs); {
		end := batchEnd(evs, i, batch)
		st, err := db.Apply(ctx, evs[i:end])
		i = end
		if err != nil {
			return 0, err
		}
		if st.Rejected > 0 {
			return 0, fmt.Errorf("projection rejected %d events of a batch", st.Rejected)
		}
	}
	return float64(len(evs)) / time.Since(t0).Seconds(), nil
}

// benchApply: the raw SQLite insert limit and the projection apply rate,
// on the same events (the first ApplyEvents of the history), 500 per
// transaction, one after the other (the order alternates between
// repetitions).
func benchApply(ctx context.Context, h *Harness, rep int) error {
	hist, err := h.projectionHistory(ctx)
	if err != nil {
		return err
	}
	dir, err := h.dir("sqlite-")
	if err != nil {
		return err
	}
	batch := projections.DefaultBatchSize
	var raw, ours float64
	runRaw := func() error {
		raw, err = rawInsert(ctx, filepath.Join(dir, "raw.db"), hist.first, batch)
		return err
	}
	runOurs := func() error {
		ours, err = projectionApply(ctx, filepath.Join(dir, "proj.db"), hist.first, batch)
		return err
	}
	order := []func() error{runRaw, runOurs}
	if rep%2 == 1 {
		order[0], order[1] = order[1], order[0]
	}
	for _, f := range order {
		if err := f(); err != nil {
			return err
		}
	}
	h.add("limit.sqlite", raw)
	h.add("ours.apply", ours)
	return nil
}

// benchRebuild: projections.Build from stream sequence 1 up to each size of
// the series (the largest only in the first RebuildLargeReps repetitions),
// each into a new file; also the peak live Go heap (sampled after each GC)
// above what it was before the build.
func benchRebuild(ctx context.Context, h *Harness, rep int) error {
	hist, err := h.projectionHistory(ctx)
	if err != nil {
		return err
	}
	dir, err := h.dir("rebuild-")
	if err != nil {
		return err
	}
	sizes := h.cfg.RebuildSizes
	if rep >= h.cfg.RebuildLargeReps && len(sizes) > 1 {
		sizes = sizes[:len(sizes)-1]
	}
	for _, s := range sizes {
		if uint64(s) > hist.events {
			return fmt.Errorf("history has %d events, want %d", hist.events, s)
		}
		runtime.GC()
		base, gc0 := liveHeap(), gcCycles()
		peak := newPeakSampler(liveHeap, 10*time.Millisecond)
		t0 := time.Now()
		bc := &projections.BuildConfig{To: uint64(s), Logger: h.quiet}
		if h.cfg.MemProfile != "" && s == sizes[len(sizes)-1] {
			// A heap profile nine tenths of the way through the largest
			// rebuild: what is live then (the embedded nats-server serving
			// the reads is in this process too).
			profiled := false
			bc.Progress = func(applied, to uint64) {
				if !profiled && applied*10 >= to*9 {
					profiled = true
					if err := writeHeapProfile(h.cfg.MemProfile + ".rebuild"); err != nil {
						h.logf("heap profile: %v", err)
					}
				}
			}
		}
		st, err := projections.Build(ctx, hist.b, filepath.Join(dir, "p"+strconv.Itoa(s)+".db"), bc)
		el := time.Since(t0)
		top := peak.stop()
		if err != nil {
			return err
		}
		// s counts stored messages (stream sequences); a phase message
		// holds several events, so the build applies at least s.
		if st.LastSeq != uint64(s) || st.Events < s {
			return fmt.Errorf("rebuild to sequence %d stopped at %d with %d events", s, st.LastSeq, st.Events)
		}
		key := "rebuild." + strconv.Itoa(s)
		h.add(key, el.Seconds())
		h.add(key+".rate", float64(st.Events)/el.Seconds())
		// The live heap is known only after a GC: without a few during
		// the build, there is no peak to report.
		if gcCycles()-gc0 >= 3 {
			h.add(key+".heap", float64(max(0, int64(top)-int64(base)))/(1<<20))
		}
	}
	return nil
}

// liveHeap is the Go heap live after the last GC.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// gcCycles is how many GC cycles have completed.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// peakSampler records the largest value of f, sampled every interval.
type peakSampler struct {
	mu   sync.Mutex
	peak uint64
	quit chan struct{}
	done chan struct{}
}

func newPeakSampler(f func() uint64, interval time.Duration) *peakSampler {
	p := &peakSampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			v := f()
			p.mu.Lock()
			p.peak = max(p.peak, v)
			p.mu.Unlock()
			select {
			case <-p.quit:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *peakSampler) stop() uint64 {
	close(p.quit)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// benchReplay: replay.Run of bench-mut-0's recorded invocations against a
// candidate of the same plugin, in process (Candidate.Spec) and as its own
// process in a replay namespace (Candidate.Command running
// bench/internal/echoplugin), at replay's default concurrency. The rate is
// steady state, from the first result to the last; the start-up (the
// replay namespace's server and the candidate process) is reported apart.
func benchReplay(ctx context.Context, h *Harness, rep int) error {
	hist, err := h.replayHistory(ctx)
	if err != nil {
		return err
	}
	bins, err := h.binaries()
	if err != nil {
		return err
	}
	spec := kwMutator(0)
	cands := []struct {
		key  string
		cand replay.Candidate
	}{
		{"replay.inproc", replay.Candidate{Spec: &spec}},
		{"replay.proc", replay.Candidate{Command: &replay.Command{Path: bins["echoplugin"], Args: []string{
			"--nats-url", "{nats_url}", "--name", "{plugin}", "--trigger", events.TaskExecutorArgsReplace,
			"--merge", `{"kw":{"x0":0}}`,
		}}}},
	}
	for _, c := range cands {
		var first, last time.Time
		var n int
		t0 := time.Now()
		rp, err := replay.Run(ctx, hist.b, mutatorPlugin, replay.Filter{}, replay.Options{
			Candidate: c.cand, Logger: h.quiet,
			OnResult: func(replay.Result) {
				now := time.Now()
				if n == 0 {
					first = now
				}
				last = now
				n++
			},
		})
		if err != nil {
			return fmt.Errorf("%s: %w", c.key, err)
		}
		if rp.Totals.Invocations != h.cfg.ReplayTasks || rp.Totals.Identical != rp.Totals.Invocations {
			return fmt.Errorf("%s: %d invocations replayed, %d identical; want %d identical", c.key,
				rp.Totals.Invocations, rp.Totals.Identical, h.cfg.ReplayTasks)
		}
		if n > 1 {
			h.add(c.key, float64(n-1)/last.Sub(first).Seconds())
		}
		h.add(c.key+".start", first.Sub(t0).Seconds())
	}
	return nil
}
