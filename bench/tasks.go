package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

const (
	recordAll       = "all"
	recordLifecycle = "lifecycle"
)

// noopArgs is the no-op task's input in every end-to-end run, ours and the
// peers': two numbers, which the task adds.
type noopArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

// finalWatch follows final task records on the task bucket's subjects (a
// KV put is a message core subscribers see too) and closes done when want
// distinct tasks are final. Any status but success is an error.
type finalWatch struct {
	mu    sync.Mutex
	seen  map[string]bool
	want  int
	done  chan struct{}
	bad   atomic.Value
	sub   *nats.Subscription
	count atomic.Int64
}

func watchFinal(nc *nats.Conn) (*finalWatch, error) {
	w := &finalWatch{seen: map[string]bool{}, done: make(chan struct{})}
	sub, err := nc.Subscribe("$KV."+bus.BucketTasks+".>", func(m *nats.Msg) {
		if !mayBeFinal(m.Data) {
			return // new or process: not decoded, the watch's own CPU
		}
		var t struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(m.Data, &t) != nil {
			return
		}
		switch t.Status {
		case events.StatusSuccess:
		case events.StatusError, events.StatusCancel, events.StatusRetry:
			w.bad.CompareAndSwap(nil, fmt.Sprintf("task %s ended %s: %s", t.ID, t.Status, t.Error))
		default:
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.seen[t.ID] {
			w.seen[t.ID] = true
			w.count.Add(1)
			if w.want > 0 && len(w.seen) == w.want {
				close(w.done)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	w.sub = sub
	return w, nil
}

// expect resets the watch to wait for want new final tasks.
func (w *finalWatch) expect(want int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.seen)
	w.count.Store(0)
	w.want = want
	w.done = make(chan struct{})
}

func (w *finalWatch) wait(ctx context.Context, timeout time.Duration) error {
	w.mu.Lock()
	done := w.done
	w.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		w.mu.Lock()
		n := len(w.seen)
		w.mu.Unlock()
		return fmt.Errorf("%d of %d tasks final after %v", n, w.want, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	if v := w.bad.Load(); v != nil {
		return fmt.Errorf("%v", v)
	}
	return nil
}

func (w *finalWatch) stop() { _ = w.sub.Unsubscribe() }

// submitAll submits n tasks from the given number of goroutines with
// submit(i); it returns how long each submission took, and the first error.
func submitAll(ctx context.Context, n, goroutines int, submit func(ctx context.Context, i int) error) ([]time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	lat := make([]time.Duration, n)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := submit(ctx, i); err != nil {
					errs <- err
					return
				}
				lat[i-1] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
		return lat, nil
	}
}

// oursTasks is tasks per second end to end: submit N no-op tasks from
// Config.Submitters goroutines and wait until every task record is final
// (success), with one worker in this process, mutators as in-process
// plugins (plugins.Local) on task_executor_args_replace each answering with
// a small merge patch, and the given record mode. defaults runs the worker
// at executor.DefaultConcurrency instead of Config.Concurrency.
func oursTasks(record string, mutators int, defaults bool) func(context.Context, *Harness, int) error {
	return func(ctx context.Context, h *Harness, rep int) error {
		cfg := bus.Config{Record: bus.RecordAll}
		if record == recordLifecycle {
			cfg.Record = bus.RecordLifecycle
		}
		b, err := h.openBus(ctx, cfg)
		if err != nil {
			return err
		}
		defer b.Close()
		conc := h.cfg.Concurrency
		if defaults {
			conc = executor.DefaultConcurrency
		}
		w := newFinishedCount()
		app, err := executor.New(b, &executor.Config{Concurrency: conc, GracePeriod: 10 * time.Second, Logger: h.quiet, Metrics: w})
		if err != nil {
			return err
		}
		executor.MustRegister(app, "noop", func(_ context.Context, in noopArgs) (int, error) { return in.A + in.B, nil }, nil)
		for i := range mutators {
			r, err := plugins.Local(ctx, b, kwMutator(i))
			if err != nil {
				return err
			}
			defer func() { _ = r.Stop(context.Background()) }()
		}
		if got := len(b.Registry().Chain(events.TaskExecutorArgsReplace)); got != mutators {
			return fmt.Errorf("chain of %s has %d mutators, want %d", events.TaskExecutorArgsReplace, got, mutators)
		}
		if err := app.Start(ctx); err != nil {
			return err
		}
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
			_ = app.Stop(sctx)
			c()
		}()
		submit := func(ctx context.Context, i int) error {
			_, err := app.Submit(ctx, "noop", noopArgs{A: i, B: 1}, nil)
			return err
		}
		// Warm up: the worker's consumer, the chain, the connections.
		w.expect(20)
		if _, err := submitAll(ctx, 20, 4, submit); err != nil {
			return err
		}
		if err := w.wait(ctx, wait); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		before, err := settledMsgs(ctx, b)
		if err != nil {
			return err
		}
		n := h.cfg.Tasks
		var tap *wiretap
		if h.cfg.Count && mutators == 0 {
			if tap, err = startWiretap(b); err != nil {
				return err
			}
		}
		w.expect(n)
		cpu0 := selfCPU()
		t0 := time.Now()
		lat, err := submitAll(ctx, n, h.cfg.Submitters, submit)
		if err != nil {
			return err
		}
		submitted := time.Since(t0)
		finalAtSubmitted := w.done()
		if err := w.wait(ctx, 5*time.Minute); err != nil {
			return err
		}
		el := time.Since(t0)
		cpu := selfCPU() - cpu0
		if h.cfg.Verbose {
			h.logf("    submitted %d in %.2fs (%d final by then), all final after %.2fs", n, submitted.Seconds(), finalAtSubmitted, el.Seconds())
		}
		if h.cfg.MemProfile != "" {
			if err := writeHeapProfile(h.cfg.MemProfile); err != nil {
				return err
			}
		}
		after, err := settledMsgs(ctx, b)
		if err != nil {
			return err
		}
		if tap != nil {
			tap.report(h, "tasks/"+record, n)
		}
		key := fmt.Sprintf("tasks.%s.m%d", map[string]string{recordAll: "all", recordLifecycle: "life"}[record], mutators)
		if defaults {
			key += ".c10"
		}
		h.add(key, float64(n)/el.Seconds())
		h.add(key+".cpu", cpuPerTask(cpu, n))
		addLatency(h, key+".submit", lat)
		if mutators == 0 && !defaults {
			h.add(key+".events", float64(after-before)/float64(n))
		}
		return nil
	}
}

// addLatency records the p50 and p99 of lat in µs under key.p50, key.p99.
func addLatency(h *Harness, key string, lat []time.Duration) {
	p50, p99 := percentiles(lat)
	h.add(key+".p50", p50)
	h.add(key+".p99", p99)
}

// writeHeapProfile writes a heap profile of this process after a GC.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}

// kwMutator is in-process mutator i of the end-to-end runs: it adds
// kw.x<i> = i.
func kwMutator(i int) plugins.Spec {
	key := "x" + strconv.Itoa(i)
	return plugins.Spec{
		Name: "bench-mut-" + strconv.Itoa(i), Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"kw": map[string]any{key: i}})
		}),
	}
}

// settledMsgs waits until the event log stops growing (the last facts of
// the last runs follow their final records) and returns its message count.
func settledMsgs(ctx context.Context, b *bus.Bus) (uint64, error) {
	var last uint64
	stable := 0
	for stable < 3 {
		info, err := b.EventStream().Info(ctx)
		if err != nil {
			return 0, err
		}
		if info.State.Msgs == last {
			stable++
		} else {
			stable, last = 0, info.State.Msgs
		}
		if err := sleepCtx(ctx, 30*time.Millisecond); err != nil {
			return 0, err
		}
	}
	return last, nil
}

// mayBeFinal reports whether a task record (json.Marshal's bytes: no space
// after a colon) may have a status the watch looks for. Two of a task's
// three records are not final (created, claimed): decoding them only to
// drop them is CPU of the watch that the floors, which count in their
// worker, do not spend.
func mayBeFinal(rec []byte) bool {
	for _, s := range finalStatuses {
		if bytes.Contains(rec, s) {
			return true
		}
	}
	return false
}

var finalStatuses = [][]byte{
	[]byte(`"status":"` + events.StatusSuccess + `"`), []byte(`"status":"` + events.StatusError + `"`),
	[]byte(`"status":"` + events.StatusCancel + `"`), []byte(`"status":"` + events.StatusRetry + `"`),
}
