package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/executor"
)

// submitTasks is how many tasks each way of submitting sends in one
// repetition of benchSubmit: twice an end-to-end run's.
func submitTasks(h *Harness) int { return 2 * h.cfg.Tasks }

// benchSubmit measures submission alone (no worker runs the tasks, which
// wait in their queue), the same number of no-op tasks four ways in one
// run: executor.App.SubmitMany in one call; Submit one after another from
// one goroutine; Submit from Config.Submitters goroutines; and Asynq's
// Client.EnqueueContext from Config.Submitters goroutines (Asynq has no
// batch API: concurrent enqueues are its fastest documented way), plus
// EnqueueContext one after another. Ours record every trigger
// (bus.RecordAll, the default). Each way starts on a new bus (ours) or an
// emptied Redis (Asynq). Figures: tasks/s, and CPU per task (ours: this
// process, which holds the embedded server; Asynq: this process and
// redis-server).
func benchSubmit(ctx context.Context, h *Harness, rep int) error {
	n := submitTasks(h)
	ours := func(key string, submit func(ctx context.Context, app *executor.App, n int) error) error {
		b, err := h.openBus(ctx, bus.Config{Record: bus.RecordAll})
		if err != nil {
			return err
		}
		defer b.Close()
		app, err := executor.New(b, &executor.Config{Logger: h.quiet})
		if err != nil {
			return err
		}
		// Warm up: the connection, the streams' first writes.
		if err := submit(ctx, app, 20); err != nil {
			return fmt.Errorf("%s warm-up: %w", key, err)
		}
		m0, err := storedMsgs(ctx, b)
		if err != nil {
			return err
		}
		cpu0 := selfCPU()
		t0 := time.Now()
		if err := submit(ctx, app, n); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		el := time.Since(t0)
		cpu := selfCPU() - cpu0
		m1, err := storedMsgs(ctx, b)
		if err != nil {
			return err
		}
		h.add(key, float64(n)/el.Seconds())
		h.add(key+".cpu", cpuPerTask(cpu, n))
		// Stored messages per second: the figure to set beside the raw
		// publish rate of the same run (limit.publish).
		h.add(key+".msgs", float64(m1-m0)/el.Seconds())
		h.add(key+".msgspertask", float64(m1-m0)/float64(n))
		return nil
	}
	if err := ours("submit.many", func(ctx context.Context, app *executor.App, n int) error {
		reqs := make([]executor.SubmitRequest, n)
		for i := range reqs {
			reqs[i] = executor.SubmitRequest{Name: "noop", Input: noopArgs{A: i, B: 1}}
		}
		res, err := app.SubmitMany(ctx, reqs)
		if err != nil {
			return err
		}
		if len(res) != n {
			return fmt.Errorf("%d results for %d submissions", len(res), n)
		}
		return nil
	}); err != nil {
		return err
	}
	one := func(ctx context.Context, app *executor.App, i int) error {
		_, err := app.Submit(ctx, "noop", noopArgs{A: i, B: 1}, nil)
		return err
	}
	if err := ours("submit.one", func(ctx context.Context, app *executor.App, n int) error {
		for i := range n {
			if err := one(ctx, app, i); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := ours("submit.conc", func(ctx context.Context, app *executor.App, n int) error {
		_, err := submitAll(ctx, n, h.cfg.Submitters, func(ctx context.Context, i int) error { return one(ctx, app, i) })
		return err
	}); err != nil {
		return err
	}

	rs, err := h.redisServer()
	if err != nil {
		return err
	}
	opt := asynq.RedisClientOpt{Addr: rs.addr}
	rc := redis.NewClient(&redis.Options{Addr: rs.addr})
	defer rc.Close()
	client := asynq.NewClient(opt)
	defer client.Close()
	enqueue := func(ctx context.Context, i int) error {
		payload, _ := json.Marshal(noopArgs{A: i, B: 1})
		_, err := client.EnqueueContext(ctx, asynq.NewTask("noop", payload))
		return err
	}
	asynqWay := func(key string, goroutines int) error {
		if err := rc.FlushAll(ctx).Err(); err != nil {
			return fmt.Errorf("flushing redis: %w", err)
		}
		if _, err := submitAll(ctx, 20, goroutines, enqueue); err != nil {
			return err
		}
		cpu0 := selfCPU() + pidCPU(rs.cmd.Process.Pid)
		t0 := time.Now()
		if _, err := submitAll(ctx, n, goroutines, enqueue); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		el := time.Since(t0)
		h.add(key, float64(n)/el.Seconds())
		h.add(key+".cpu", cpuPerTask(selfCPU()+pidCPU(rs.cmd.Process.Pid)-cpu0, n))
		return nil
	}
	if err := asynqWay("submit.asynq", h.cfg.Submitters); err != nil {
		return err
	}
	return asynqWay("submit.asynq.one", 1)
}

// storedMsgs is how many messages a submission can store hold in total:
// the event log, the task queue and the task bucket.
func storedMsgs(ctx context.Context, b *bus.Bus) (uint64, error) {
	var total uint64
	for _, name := range []string{bus.StreamEvents, bus.StreamTasks, "KV_" + bus.BucketTasks} {
		st, err := b.JetStream().Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		total += info.State.Msgs
	}
	return total, nil
}
