package main

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/executor"
)

// The demo tasks a fresh qtasksd runs, so that a newcomer can submit
// something at once.

type addInput struct {
	A float64 `json:"a"`
	B float64 `json:"b"`
}

type greetInput struct {
	Name string `json:"name"`
}

type sleepInput struct {
	MS int `json:"ms"`
}

type failInput struct {
	Message string `json:"message"`
}

type countInput struct {
	N int `json:"n"`
}

type flakyInput struct {
	// Until is the attempt that succeeds; earlier ones fail. Defaults to 3,
	// the last attempt flaky's two retries allow.
	Until int `json:"until"`
}

// demoTask is one demo task: its registration and what "qtasksd tasks"
// says of it, from one place.
type demoTask struct {
	name string
	// input is the task's input type, for its argument schema.
	input    reflect.Type
	opts     executor.TaskOptions
	register func(app *executor.App, name string, opts *executor.TaskOptions)
}

func demo[T, R any](name string, opts executor.TaskOptions, fn func(context.Context, T) (R, error)) demoTask {
	return demoTask{name: name, input: reflect.TypeFor[T](), opts: opts, register: func(app *executor.App, name string, o *executor.TaskOptions) {
		executor.MustRegister(app, name, fn, o)
	}}
}

var demoTasks = []demoTask{
	demo("echo", executor.TaskOptions{Description: "returns its keyword arguments"}, func(_ context.Context, in map[string]any) (map[string]any, error) {
		return in, nil
	}),
	demo("add", executor.TaskOptions{Description: "adds a and b"}, func(_ context.Context, in addInput) (float64, error) {
		return in.A + in.B, nil
	}),
	demo("greet", executor.TaskOptions{Description: "greets name (default: world)"}, func(_ context.Context, in greetInput) (string, error) {
		if in.Name == "" {
			in.Name = "world"
		}
		return "hello, " + in.Name, nil
	}),
	demo("sleep", executor.TaskOptions{Description: "sleeps ms milliseconds"}, func(ctx context.Context, in sleepInput) (int, error) {
		t := time.NewTimer(time.Duration(in.MS) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return in.MS, nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}),
	demo("fail", executor.TaskOptions{Description: "fails with message"}, func(_ context.Context, in failInput) (any, error) {
		if in.Message == "" {
			in.Message = "failed on purpose"
		}
		return nil, errors.New(in.Message)
	}),
	demo("flaky", executor.TaskOptions{Retry: 2, Description: "fails until attempt until (default 3); 2 retries"}, func(ctx context.Context, in flakyInput) (string, error) {
		if in.Until == 0 {
			in.Until = 3
		}
		n := executor.TaskFromContext(ctx).Attempt
		if n < in.Until {
			return "", fmt.Errorf("flaky: attempt %d of %d failed", n, in.Until)
		}
		return fmt.Sprintf("succeeded on attempt %d", n), nil
	}),
	{
		name: "count", input: reflect.TypeFor[countInput](), opts: executor.TaskOptions{Description: "yields 1..n"},
		register: func(app *executor.App, name string, o *executor.TaskOptions) {
			if err := executor.RegisterSeq(app, name, func(_ context.Context, in countInput) iter.Seq2[int, error] {
				return func(yield func(int, error) bool) {
					for i := 1; i <= in.N; i++ {
						if !yield(i, nil) {
							return
						}
					}
				}
			}, o); err != nil {
				panic(err)
			}
		},
	},
}

func registerDemoTasks(app *executor.App) {
	for _, d := range demoTasks {
		opts := d.opts
		d.register(app, d.name, &opts)
	}
}

// taskInfo is what "qtasksd tasks" prints of a task.
type taskInfo struct {
	Name        string `json:"name"`
	Queue       string `json:"queue"`
	Description string `json:"description"`
	// Kw maps each keyword argument to its JSON type; "*" stands for any
	// keyword.
	Kw    map[string]string `json:"kw"`
	Retry int               `json:"retry"`
}

// kwSchema maps the keyword arguments of input type t to their JSON types.
func kwSchema(t reflect.Type) map[string]string {
	kw := map[string]string{}
	if t.Kind() != reflect.Struct {
		kw["*"] = jsonTypeName(t.Elem())
		return kw
	}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		kw[name] = jsonTypeName(f.Type)
	}
	return kw
}

func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	default:
		return "any"
	}
}

// tasks prints the tasks a qtasksd worker runs: their names, queue,
// keyword arguments and retries. They are compiled into qtasksd, so no
// server is needed.
func (m *Main) tasks(args []string) error {
	fs := newFlagSet("qtasksd tasks", m.Stderr, "qtasksd tasks [flags]")
	queue := fs.String("queue", envOr("QTASKS_QUEUE", executor.DefaultQueue), "the queue the daemon's worker pulls from, as given to qtasksd run (QTASKS_QUEUE)")
	if err := parse(fs, args, "qtasksd tasks"); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), Hint: "qtasksd tasks"}
	}
	out := make([]taskInfo, 0, len(demoTasks))
	for _, d := range demoTasks {
		out = append(out, taskInfo{Name: d.name, Queue: *queue, Description: d.opts.Description, Kw: kwSchema(d.input), Retry: d.opts.Retry})
	}
	return m.printJSON(out)
}
