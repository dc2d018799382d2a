package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"reflect"
	"time"

	"github.com/qtasks/qtasks-go/events"
)

// TaskOptions are the QTasks task options that make sense in Go. The zero
// value is a task of priority 0, no retries and no time limit.
type TaskOptions struct {
	// Priority is the default priority of submissions; lower runs first, as
	// in QTasks.
	Priority int
	// Retry is how many more attempts a failed task gets.
	Retry int
	// RetryOn lists errors that are retried, matched with errors.Is; empty
	// with RetryIf nil means every error is retried (while Retry lasts).
	RetryOn []error
	// RetryIf decides retries for errors RetryOn does not match; use
	// RetryOnType for errors.As matching.
	RetryIf func(error) bool
	// MaxTime bounds one run of the function (QTasks' max_time). Zero: no
	// bound.
	MaxTime time.Duration
	// Tags and Description are metadata, recorded with the task.
	Tags        []string
	Description string
	// Queue the task runs on. Defaults to the app's queue.
	Queue string
	// Decode turns the result's JSON into what is stored (QTasks' decode).
	Decode func(result json.RawMessage) (json.RawMessage, error)
	// MiddlewaresBefore run before arguments are replaced; an error fails
	// the task. MiddlewaresAfter run after the result is replaced, and may
	// change it.
	MiddlewaresBefore []MiddlewareBefore
	MiddlewaresAfter  []MiddlewareAfter
	// Extra is metadata passed to plugins with the task (QTasks' **kwargs).
	Extra map[string]any
}

// MiddlewareBefore runs before a task's arguments are replaced.
type MiddlewareBefore func(ctx context.Context, tc *TaskContext) error

// MiddlewareAfter runs after a task's result is replaced; it returns the
// result to keep.
type MiddlewareAfter func(ctx context.Context, tc *TaskContext, result json.RawMessage) (json.RawMessage, error)

// RetryOnType returns a RetryIf that retries errors matching E with errors.As.
func RetryOnType[E error]() func(error) bool {
	return func(err error) bool {
		var e E
		return errors.As(err, &e)
	}
}

// Input gives a task both of QTasks' argument forms, undecoded.
type Input struct {
	Args []json.RawMessage
	Kw   map[string]json.RawMessage
}

// taskFunc runs a task on its replaced args and kw and returns the result as
// JSON; for a sequence task, results holds every item.
type taskFunc func(ctx context.Context, args, kw json.RawMessage) (result json.RawMessage, results []json.RawMessage, err error)

type taskDef struct {
	name string
	opts TaskOptions
	seq  bool
	run  taskFunc
}

func (d *taskDef) retryable(err error) bool {
	if len(d.opts.RetryOn) == 0 && d.opts.RetryIf == nil {
		return true
	}
	for _, e := range d.opts.RetryOn {
		if errors.Is(err, e) {
			return true
		}
	}
	return d.opts.RetryIf != nil && d.opts.RetryIf(err)
}

// Register adds a task function under name. T is decoded from the task's
// args or kw (see the package documentation), R is encoded as the result.
func Register[T, R any](app *App, name string, fn func(ctx context.Context, in T) (R, error), opts *TaskOptions) error {
	if fn == nil {
		return fmt.Errorf("registering task %q: nil function", name)
	}
	return app.addTask(name, opts, false, func(ctx context.Context, args, kw json.RawMessage) (json.RawMessage, []json.RawMessage, error) {
		in, err := decodeInput[T](args, kw)
		if err != nil {
			return nil, nil, err
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, nil, err
		}
		res, err := json.Marshal(out)
		if err != nil {
			return nil, nil, fmt.Errorf("encoding result: %w", err)
		}
		return res, nil, nil
	})
}

// RegisterSeq adds a task that yields a sequence of results (QTasks'
// generator tasks). The task's result is the list of items; an error stops
// the sequence and fails the task.
func RegisterSeq[T, R any](app *App, name string, fn func(ctx context.Context, in T) iter.Seq2[R, error], opts *TaskOptions) error {
	if fn == nil {
		return fmt.Errorf("registering task %q: nil function", name)
	}
	return app.addTask(name, opts, true, func(ctx context.Context, args, kw json.RawMessage) (json.RawMessage, []json.RawMessage, error) {
		in, err := decodeInput[T](args, kw)
		if err != nil {
			return nil, nil, err
		}
		results := []json.RawMessage{}
		for item, err := range fn(ctx, in) {
			if err != nil {
				return nil, results, err
			}
			b, err := json.Marshal(item)
			if err != nil {
				return nil, results, fmt.Errorf("encoding result item %d: %w", len(results), err)
			}
			results = append(results, b)
			if ctx.Err() != nil {
				return nil, results, context.Cause(ctx)
			}
		}
		return nil, results, nil
	})
}

// MustRegister is Register that panics on error, for wiring at start-up.
func MustRegister[T, R any](app *App, name string, fn func(ctx context.Context, in T) (R, error), opts *TaskOptions) {
	if err := Register(app, name, fn, opts); err != nil {
		panic(err)
	}
}

var inputType = reflect.TypeFor[Input]()

// ErrBadArguments wraps a failure to decode a task's arguments.
var ErrBadArguments = errors.New("bad task arguments")

func decodeInput[T any](args, kw json.RawMessage) (T, error) {
	var in T
	t := reflect.TypeFor[T]()
	if t == inputType {
		var x Input
		if len(args) > 0 {
			if err := json.Unmarshal(args, &x.Args); err != nil {
				return in, fmt.Errorf("%w: args: %w", ErrBadArguments, err)
			}
		}
		if len(kw) > 0 {
			if err := json.Unmarshal(kw, &x.Kw); err != nil {
				return in, fmt.Errorf("%w: kw: %w", ErrBadArguments, err)
			}
		}
		return any(x).(T), nil
	}
	src, what := kw, "kw"
	k := t.Kind()
	if k == reflect.Pointer {
		k = t.Elem().Kind()
	}
	var list []json.RawMessage
	if len(args) > 0 && string(args) != "[]" {
		if err := json.Unmarshal(args, &list); err != nil {
			return in, fmt.Errorf("%w: args is not a JSON array: %w", ErrBadArguments, err)
		}
	}
	switch {
	case k == reflect.Slice || k == reflect.Array:
		src, what = args, "args"
	case len(list) == 1 && isEmptyObject(kw):
		// A single positional argument stands for the whole input.
		src, what = list[0], "args[0]"
	case len(list) > 0:
		return in, fmt.Errorf("%w: %d positional arguments given, but the task takes %s from kw", ErrBadArguments, len(list), t)
	}
	if len(src) == 0 {
		return in, nil
	}
	if err := json.Unmarshal(src, &in); err != nil {
		return in, fmt.Errorf("%w: decoding %s into %s: %w", ErrBadArguments, what, t, err)
	}
	return in, nil
}

func isEmptyObject(b json.RawMessage) bool {
	var m map[string]json.RawMessage
	return len(b) == 0 || string(b) == "null" || (json.Unmarshal(b, &m) == nil && len(m) == 0)
}

// TaskContext describes the running task; TaskFromContext returns it inside
// a task function, a middleware or Decode.
type TaskContext struct {
	ID      string
	Name    string
	Attempt int
	// Run numbers this run of the attempt: never reused for the attempt,
	// increasing, may skip (PROTOCOL.md §5).
	Run      int
	Priority int
	Queue    string
	Tags     []string
	Extra    map[string]json.RawMessage
	// Logger carries the task's id and name.
	Logger *slog.Logger

	app *App      // for State and TaskState (executor/state.go)
	own *ownState // the task's own state writes, for its record (executor/state.go)
}

type taskCtxKey struct{}

// TaskFromContext returns the running task, or nil outside a task.
func TaskFromContext(ctx context.Context) *TaskContext {
	tc, _ := ctx.Value(taskCtxKey{}).(*TaskContext)
	return tc
}

// CancelError ends a task with status cancel. Return Cancel(reason) from a
// task function.
type CancelError struct{ Reason string }

func (e *CancelError) Error() string { return "task cancelled: " + e.Reason }

// Cancel returns the error that cancels the running task with reason (QTasks'
// ctx.cancel). An empty reason becomes "<task name>.cancel".
func Cancel(reason string) error { return &CancelError{Reason: reason} }

// TaskPluginTriggerError asks the plugins of
// task_executor_run_task_trigger_error to decide the task's result (QTasks'
// TaskPluginTriggerError). Kw is passed to them.
type TaskPluginTriggerError struct {
	Reason string
	Kw     map[string]any
}

func (e *TaskPluginTriggerError) Error() string { return "plugin trigger error: " + e.Reason }

// PluginError returns a TaskPluginTriggerError with reason (QTasks'
// ctx.plugin_error). ctx is the task's context; it is accepted for symmetry
// with QTasks and for future use by tracing.
func PluginError(_ context.Context, reason string, kw ...map[string]any) error {
	e := &TaskPluginTriggerError{Reason: reason}
	if len(kw) > 0 {
		e.Kw = kw[0]
	}
	return e
}

// TaskError is the error of a task that ended in error or cancel.
type TaskError struct {
	ID      string
	Name    string
	Status  string
	Message string
	Reason  string
}

func (e *TaskError) Error() string {
	s := fmt.Sprintf("task %s (%s) ended in %s: %s", e.ID, e.Name, e.Status, e.Message)
	if e.Reason != "" && e.Reason != e.Message {
		s += " (" + e.Reason + ")"
	}
	return s
}

// Result decodes the result of a finished task. A task that ended in error
// or cancel returns a *TaskError.
func Result[R any](t events.Task) (R, error) {
	var r R
	switch t.Status {
	case events.StatusSuccess:
	case events.StatusError, events.StatusCancel:
		return r, &TaskError{ID: t.ID, Name: t.Name, Status: t.Status, Message: t.Error, Reason: t.Reason}
	default:
		return r, fmt.Errorf("task %s is not finished: status %s", t.ID, t.Status)
	}
	if len(t.Result) == 0 {
		return r, nil
	}
	if err := json.Unmarshal(t.Result, &r); err != nil {
		return r, fmt.Errorf("decoding result of task %s: %w", t.ID, err)
	}
	return r, nil
}
