package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/jsonout"
)

func contextWithTimeout(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d)
}

func (m *Main) submit(ctx context.Context, args []string) error {
	var conn connFlags
	fs := newFlagSet("qtasksd submit", m.Stderr, "qtasksd submit NAME [flags]")
	conn.register(fs, DefaultClientURL)
	kw := fs.String("kw", "{}", "keyword arguments, a JSON object")
	posArgs := fs.String("args", "", "positional arguments, a JSON array")
	priority := fs.Int("priority", 0, "priority (lower runs first); default: the task's")
	key := fs.String("key", "", "idempotency key: a second submit with it returns the first task (exit 8)")
	queue := fs.String("queue", executor.DefaultQueue, "queue")
	wait := fs.Bool("wait", false, "wait for the task to finish and print its final record")
	timeout := fs.Duration("timeout", 60*time.Second, "how long --wait waits")
	uniqueBy := fs.String("unique", "", "make the task unique by args, queue or both (comma separated); see --unique-period")
	uniquePeriod := fs.Duration("unique-period", 0, "make the task unique within periods of this length (e.g. 1h, aligned on the Unix epoch)")
	onConflict := fs.String("on-conflict", "error", "a --key that names a task submitted with other arguments: error (exit 9) or existing (that task, exit 8)")
	runAt := fs.String("run-at", "", "run the task at this time (RFC 3339, e.g. 2026-12-24T18:00:00+01:00), not before")
	runIn := fs.Duration("run-in", 0, "run the task this long from now, not before")
	name, rest := "", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, rest = args[0], args[1:]
	}
	if err := parse(fs, rest, "qtasksd submit add --kw '{\"a\":1,\"b\":2}' --wait"); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		return &usageError{Msg: "submit needs a task name", Hint: "qtasksd submit add --kw '{\"a\":1,\"b\":2}' --wait"}
	}
	// Checked here rather than by the server so that a typo is exit 2,
	// before anything is sent.
	if !events.ValidToken(name) {
		return &usageError{Msg: fmt.Sprintf("task name %q: must be one NATS subject token (no '.', '*', '>' or spaces; at most 128 bytes)", name), Hint: "qtasksd submit add"}
	}
	if !events.ValidToken(*queue) {
		return &usageError{Msg: fmt.Sprintf("--queue %q: must be one NATS subject token (no '.', '*', '>' or spaces; at most 128 bytes)", *queue), Hint: "qtasksd submit add --queue default"}
	}
	if err := events.CheckIdempotencyKey(*key); err != nil {
		return &usageError{Msg: "--key: " + err.Error(), Hint: "qtasksd submit add --key order-42"}
	}
	if *wait && *timeout <= 0 {
		return &usageError{Msg: fmt.Sprintf("--timeout %v: must be positive", *timeout), Hint: "qtasksd submit add --wait --timeout 1m"}
	}
	var uniqueSet bool
	fs.Visit(func(f *flag.Flag) { uniqueSet = uniqueSet || f.Name == "unique" || f.Name == "unique-period" })
	period := ""
	if *uniquePeriod != 0 {
		period = uniquePeriod.String()
	}
	unique, err := parseUnique(*uniqueBy, period, uniqueSet)
	if err != nil {
		return &usageError{Msg: "--unique: " + err.Error(), Hint: "qtasksd submit add --unique args,queue --unique-period 1h"}
	}
	if unique != nil && *key != "" {
		return &usageError{Msg: "--unique and --key: give one or the other", Hint: "qtasksd submit add --unique args"}
	}
	allowConflict, err := parseOnConflict(*onConflict)
	if err != nil {
		return &usageError{Msg: "--on-conflict: " + err.Error(), Hint: "qtasksd submit add --key order-42 --on-conflict existing"}
	}
	var kwv map[string]any
	if err := json.Unmarshal([]byte(*kw), &kwv); err != nil {
		return &usageError{Msg: "--kw must be a JSON object: " + err.Error(), Hint: "--kw '{\"a\":1}'"}
	}
	opts := &executor.SubmitOptions{IdempotencyKey: *key, Queue: *queue, Unique: unique, AllowKeyConflict: allowConflict, RunIn: *runIn}
	if *runAt != "" {
		at, err := time.Parse(time.RFC3339Nano, *runAt)
		if err != nil {
			return &usageError{Msg: "--run-at: want an RFC 3339 time: " + err.Error(), Hint: "--run-at 2026-12-24T18:00:00Z"}
		}
		opts.RunAt = at
	}
	if !opts.RunAt.IsZero() && opts.RunIn != 0 || opts.RunIn < 0 {
		return &usageError{Msg: "--run-at and --run-in: give at most one, and --run-in not negative", Hint: "qtasksd submit add --run-in 10m"}
	}
	if *posArgs != "" {
		if err := json.Unmarshal([]byte(*posArgs), &opts.Args); err != nil {
			return &usageError{Msg: "--args must be a JSON array: " + err.Error(), Hint: "--args '[1,2]'"}
		}
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "priority" {
			opts.Priority = priority
		}
	})
	b, err := openClient(ctx, &conn, false)
	if err != nil {
		return err
	}
	defer b.Close()
	app, err := executor.New(b, &executor.Config{Queue: *queue})
	if err != nil {
		return err
	}
	res, err := app.SubmitOne(ctx, name, kwv, opts)
	t := res.Task
	if errors.Is(err, executor.ErrOutcomeUnknown) {
		return &exitError{Code: exitUnknown, Err: err}
	}
	if errors.Is(err, executor.ErrKeyConflict) {
		return &exitError{Code: exitConflict, Err: err}
	}
	if err != nil {
		return err
	}
	if *wait {
		wctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		done, err := app.Wait(wctx, t.ID)
		if done.ID != "" {
			t = done
		} // else Wait saw no record before the deadline: the submitted one says which task it was
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				_ = m.printJSON(t)
				return &exitError{Code: exitTimeout, Err: fmt.Errorf("task %s still %s after %v", t.ID, t.Status, *timeout)}
			}
			return err
		}
	}
	if err := m.printJSON(t); err != nil {
		return err
	}
	if t.Status == events.StatusError || t.Status == events.StatusCancel {
		return &exitError{Code: exitTask, Err: fmt.Errorf("task %s ended in %s: %s", t.ID, t.Status, t.Error)}
	}
	if res.Duplicate {
		return &exitError{Code: exitDuplicate, Err: fmt.Errorf("task %s existed already (idempotency key %s): nothing new was queued", t.ID, t.IdempotencyKey)}
	}
	return nil
}

func (m *Main) status(ctx context.Context, args []string) error {
	var conn connFlags
	fs := newFlagSet("qtasksd status", m.Stderr, "qtasksd status ID [flags]")
	conn.register(fs, DefaultClientURL)
	id, rest := "", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		id, rest = args[0], args[1:]
	}
	if err := parse(fs, rest, "qtasksd status TASK_ID"); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if id == "" {
		return &usageError{Msg: "status needs a task id", Hint: "qtasksd status TASK_ID"}
	}
	b, err := openClient(ctx, &conn, true)
	if err != nil {
		return err
	}
	defer b.Close()
	rec, err := b.GetTask(ctx, id)
	if errors.Is(err, bus.ErrTaskNotFound) {
		// A replica may lag: only the leader's "not found" is believed.
		rec, err = b.GetTaskLatest(ctx, id)
	}
	if errors.Is(err, bus.ErrTaskNotFound) {
		return &exitError{Code: exitNotFound, Err: err}
	}
	if err != nil {
		return err
	}
	return m.printJSON(rec.Task)
}

func (m *Main) plugins(ctx context.Context, args []string) error {
	var conn connFlags
	fs := newFlagSet("qtasksd plugins", m.Stderr, "qtasksd plugins [flags]")
	conn.register(fs, DefaultClientURL)
	if err := parse(fs, args, "qtasksd plugins"); err != nil {
		return err
	}
	b, err := openClient(ctx, &conn, true)
	if err != nil {
		return err
	}
	defer b.Close()
	list := b.Registry().List()
	if len(list) == 0 {
		// [] alone reads as a failure to a newcomer: say what it means.
		fmt.Fprintln(m.Stderr, "qtasksd: no plugin is registered; run one (e.g. go run ./plugins/retry/cmd/qtasks-retry --nats-url URL), README \"Built-in plugins\" lists the ones shipped; docs/PROTOCOL.md §14 writes one in any language")
	}
	return m.printJSON(list)
}

func (m *Main) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return jsonout.Write(m.Stdout, b)
}
