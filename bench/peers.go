package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	_ "modernc.org/sqlite" // the SQLite driver River tests riversqlite with
)

// The peers run the same no-op task end to end as ours: submit N (one at a
// time, from Config.Submitters goroutines), run all, wait until every one
// is recorded complete. Timing starts at the first submission and ends
// when the last completion is observed.

// pollInterval is the tuned runs' check interval for new work when a queue
// is empty (Asynq's TaskCheckInterval, River's FetchPollInterval).
const pollInterval = 5 * time.Millisecond

// asynqBench runs the no-op task on Asynq with a Redis started by the
// harness. Defaults: asynq.Config{} (Concurrency = CPUs, TaskCheckInterval
// 1 s). Tuned: Concurrency = Config.Concurrency and TaskCheckInterval 5 ms,
// the knobs Asynq documents for throughput. A task is complete when its
// handler returned and Asynq no longer holds it (no pending or active task
// in the queue).
func asynqBench(tuned bool) func(context.Context, *Harness, int) error {
	return func(ctx context.Context, h *Harness, rep int) error {
		rs, err := h.redisServer()
		if err != nil {
			return err
		}
		opt := asynq.RedisClientOpt{Addr: rs.addr}
		rc := redis.NewClient(&redis.Options{Addr: rs.addr})
		defer rc.Close()
		if err := rc.FlushAll(ctx).Err(); err != nil {
			return fmt.Errorf("flushing redis: %w", err)
		}
		cfg := asynq.Config{Logger: nopLogger{}, LogLevel: asynq.FatalLevel}
		key := "asynq.default"
		if tuned {
			cfg.Concurrency, cfg.TaskCheckInterval, key = h.cfg.Concurrency, pollInterval, "asynq.tuned"
		}
		var done atomic.Int64
		var want atomic.Int64
		finished := make(chan struct{}, 1)
		mux := asynq.NewServeMux()
		mux.HandleFunc("noop", func(_ context.Context, t *asynq.Task) error {
			var in noopArgs
			if err := json.Unmarshal(t.Payload(), &in); err != nil {
				return err
			}
			_ = in.A + in.B
			if done.Add(1) == want.Load() {
				select {
				case finished <- struct{}{}:
				default:
				}
			}
			return nil
		})
		srv := asynq.NewServer(opt, cfg)
		if err := srv.Start(mux); err != nil {
			return err
		}
		defer srv.Shutdown()
		client := asynq.NewClient(opt)
		defer client.Close()
		insp := asynq.NewInspector(opt)
		defer insp.Close()

		submit := func(ctx context.Context, i int) error {
			payload, _ := json.Marshal(noopArgs{A: i, B: 1})
			_, err := client.EnqueueContext(ctx, asynq.NewTask("noop", payload))
			return err
		}
		var lat []time.Duration
		round := func(n int) (time.Duration, time.Duration, error) {
			done.Store(0)
			want.Store(int64(n))
			cpu0 := selfCPU() + pidCPU(rs.cmd.Process.Pid)
			t0 := time.Now()
			var err error
			if lat, err = submitAll(ctx, n, h.cfg.Submitters, submit); err != nil {
				return 0, 0, err
			}
			select {
			case <-finished:
			case <-time.After(5 * time.Minute):
				return 0, 0, fmt.Errorf("asynq: %d of %d tasks done", done.Load(), n)
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			}
			// The handler returned; Asynq marks the task done right after.
			for {
				qi, err := insp.GetQueueInfo("default")
				if err != nil {
					return 0, 0, err
				}
				if qi.Pending == 0 && qi.Active == 0 {
					break
				}
				if err := sleepCtx(ctx, time.Millisecond); err != nil {
					return 0, 0, err
				}
			}
			el := time.Since(t0)
			return el, selfCPU() + pidCPU(rs.cmd.Process.Pid) - cpu0, nil
		}
		if _, _, err := round(20); err != nil { // warm up
			return err
		}
		el, cpu, err := round(h.cfg.Tasks)
		if err != nil {
			return err
		}
		h.add(key, float64(h.cfg.Tasks)/el.Seconds())
		h.add(key+".cpu", cpuPerTask(cpu, h.cfg.Tasks))
		addLatency(h, key+".submit", lat)
		return nil
	}
}

type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}

// riverArgs is the no-op job of River.
type riverArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

func (riverArgs) Kind() string { return "noop" }

type riverWorker struct {
	river.WorkerDefaults[riverArgs]
}

func (riverWorker) Work(_ context.Context, j *river.Job[riverArgs]) error {
	_ = j.Args.A + j.Args.B
	return nil
}

// riverBench runs the no-op job on River with riversqlite on a new SQLite
// file (modernc.org/sqlite, the driver River tests riversqlite with; WAL,
// synchronous NORMAL, one connection as riversqlite's documentation asks),
// migrated with rivermigrate. Defaults: River's defaults with MaxWorkers
// 100 (River requires a value; 100 is its documentation's). Tuned:
// FetchCooldown 1 ms (its minimum), FetchPollInterval 5 ms, MaxWorkers =
// Config.Concurrency: the knobs River documents for throughput. A job is
// complete when River emits its EventKindJobCompleted (after the completer
// recorded it).
func riverBench(tuned bool) func(context.Context, *Harness, int) error {
	return func(ctx context.Context, h *Harness, rep int) error {
		dir, err := h.dir("river-")
		if err != nil {
			return err
		}
		dsn := "file:" + filepath.Join(dir, "river.db") +
			"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)"
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		drv := riversqlite.New(db)
		mig, err := rivermigrate.New(drv, &rivermigrate.Config{Logger: h.quiet})
		if err != nil {
			return err
		}
		if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
			return fmt.Errorf("river migrations: %w", err)
		}
		workers := river.NewWorkers()
		river.AddWorker(workers, &riverWorker{})
		cfg := &river.Config{
			Logger:  h.quiet,
			Workers: workers,
			Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}},
		}
		key := "river.default"
		if tuned {
			cfg.FetchCooldown, cfg.FetchPollInterval = time.Millisecond, pollInterval
			cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: h.cfg.Concurrency}}
			key = "river.tuned"
		}
		client, err := river.NewClient(drv, cfg)
		if err != nil {
			return err
		}
		completed, cancelSub := client.SubscribeConfig(&river.SubscribeConfig{
			ChanSize: h.cfg.Tasks + 1000, Kinds: []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed},
		})
		defer cancelSub()
		if err := client.Start(ctx); err != nil {
			return err
		}
		defer func() {
			sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
			_ = client.Stop(sctx)
			c()
		}()
		submit := func(ctx context.Context, i int) error {
			_, err := client.Insert(ctx, riverArgs{A: i, B: 1}, nil)
			return err
		}
		var lat []time.Duration
		round := func(n int) (time.Duration, time.Duration, error) {
			cpu0 := selfCPU()
			t0 := time.Now()
			errc := make(chan error, 1)
			go func() {
				var err error
				lat, err = submitAll(ctx, n, h.cfg.Submitters, submit)
				errc <- err
			}()
			timeout := time.After(5 * time.Minute)
			for got := 0; got < n; {
				select {
				case ev := <-completed:
					if ev.Kind != river.EventKindJobCompleted {
						return 0, 0, fmt.Errorf("river: job %d %s", ev.Job.ID, ev.Kind)
					}
					got++
				case err := <-errc:
					if err != nil {
						return 0, 0, err
					}
					errc = nil
				case <-timeout:
					return 0, 0, fmt.Errorf("river: %d of %d jobs completed", got, n)
				case <-ctx.Done():
					return 0, 0, ctx.Err()
				}
			}
			el := time.Since(t0)
			cpu := selfCPU() - cpu0
			if errc != nil {
				if err := <-errc; err != nil {
					return 0, 0, err
				}
			}
			return el, cpu, nil
		}
		if _, _, err := round(20); err != nil { // warm up
			return err
		}
		el, cpu, err := round(h.cfg.Tasks)
		if err != nil {
			return err
		}
		h.add(key, float64(h.cfg.Tasks)/el.Seconds())
		h.add(key+".cpu", cpuPerTask(cpu, h.cfg.Tasks))
		addLatency(h, key+".submit", lat)
		return nil
	}
}
