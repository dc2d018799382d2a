package projections_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// The projection is built from the event log alone: after a task ran under
// a plugin that changed its result, it has the task's final record and,
// per field, the plugin that last changed it (blame). Build writes a new
// SQLite file from sequence 1; a Projector keeps one up to date instead.
func ExampleBuild() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{Port: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	id, err := runTask(ctx, b)
	if err != nil {
		fmt.Println(err)
		return
	}

	dir, err := os.MkdirTemp("", "projection-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "qtasks.db")
	if _, err := projections.Build(ctx, b, path, nil); err != nil {
		fmt.Println(err)
		return
	}
	db, err := projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	task, err := db.Task(ctx, id)
	fmt.Println(task.Name, task.Status, string(task.Result), err)
	blame, err := db.Blame(ctx, id)
	for _, bl := range blame {
		fmt.Println(bl.Path, bl.Plugin, bl.Version, bl.Trigger, bl.Op, string(bl.Value))
	}
	fmt.Println(err)
	// Output:
	// add success 50 <nil>
	// /result scale 1 task_executor_run_task replace 50
	// <nil>
}

// runTask runs add(2, 3) under a plugin, scale, that multiplies results by
// ten, and returns the task's id.
func runTask(ctx context.Context, b *bus.Bus) (string, error) {
	r, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "scale", Version: "1", Triggers: []string{events.TaskExecutorRunTask},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct {
				Result float64 `json:"result"`
			}
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: p.Result * 10})
		}),
	})
	if err != nil {
		return "", err
	}
	defer func() { _ = r.Stop(context.WithoutCancel(ctx)) }()
	app, err := executor.New(b, nil)
	if err != nil {
		return "", err
	}
	executor.MustRegister(app, "add", func(_ context.Context, in struct{ A, B int }) (int, error) { return in.A + in.B, nil }, nil)
	if err := app.Start(ctx); err != nil {
		return "", err
	}
	defer func() { _ = app.Stop(context.WithoutCancel(ctx)) }()
	sub, err := app.Submit(ctx, "add", map[string]int{"A": 2, "B": 3}, nil)
	if err != nil {
		return "", err
	}
	_, err = app.Wait(ctx, sub.ID)
	return sub.ID, err
}
