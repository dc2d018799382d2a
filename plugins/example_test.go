package plugins_test

import (
	"context"
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// A mutator on task_executor_run_task doubles every task's result: it
// answers the invocation with a JSON Patch of /result, which the executor
// applies before the task's record is final. Local runs it in this
// process, on an embedded server; Start would run it as durable consumers,
// as a plugin in a process of its own does.
func ExampleLocal() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{Port: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	double := plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
		var p struct {
			Result float64 `json:"result"`
		}
		if err := c.Decode(&p); err != nil {
			return nil, err
		}
		return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: p.Result * 2})
	})
	r, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "double", Version: "1",
		Triggers: []string{events.TaskExecutorRunTask}, Plugin: double,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = r.Stop(context.WithoutCancel(ctx)) }()

	app, err := executor.New(b, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	executor.MustRegister(app, "add", func(_ context.Context, in struct{ A, B int }) (int, error) { return in.A + in.B, nil }, nil)
	if err := app.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = app.Stop(context.WithoutCancel(ctx)) }()
	sub, err := app.Submit(ctx, "add", map[string]int{"A": 2, "B": 3}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	task, err := app.Wait(ctx, sub.ID)
	fmt.Println(task.Status, string(task.Result), err)
	// Output: success 10 <nil>
}
