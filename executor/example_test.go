package executor_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

type greetArgs struct {
	Name     string `json:"name"`
	Greeting string `json:"greeting"`
}

// A task, an in-process mutator that fills in a default argument, a worker,
// and the audit trail of the patch in the log.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "qtasks-example-")
	defer os.RemoveAll(dir)

	b, err := bus.Open(ctx, bus.Config{DataDir: dir}) // an embedded JetStream
	if err != nil {
		panic(err)
	}
	defer b.Close()
	app, err := executor.New(b, nil)
	if err != nil {
		panic(err)
	}
	executor.MustRegister(app, "greet", func(_ context.Context, in greetArgs) (string, error) {
		return in.Greeting + ", " + in.Name + "!", nil
	}, nil)

	// Named for task_executor_args_replace: it sees the arguments just before
	// the call and may patch them.
	_, err = plugins.Local(ctx, b, plugins.Spec{
		Name: "default-greeting", Version: "1.0.0", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct {
				Kw greetArgs `json:"kw"`
			}
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			if p.Kw.Greeting != "" {
				return nil, nil //nolint:nilnil // no patch (nothing to change): the Plugin contract's "no change"
			}
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"greeting": "Hello"}})
		}),
	})
	if err != nil {
		panic(err)
	}
	if err := app.Start(ctx); err != nil {
		panic(err)
	}
	defer func() {
		if err := app.Stop(context.Background()); err != nil {
			panic(err)
		}
	}()

	t, err := app.Submit(ctx, "greet", greetArgs{Name: "Ada"}, nil)
	if err != nil {
		panic(err)
	}
	t, err = app.Wait(ctx, t.ID)
	if err != nil {
		panic(err)
	}
	greeting, err := executor.Result[string](t)
	fmt.Println(t.Status, greeting, err)

	// The patch is in the log, on the subject of its plugin, trigger and task.
	err = b.ReadLog(ctx, 1, []string{events.PatchSubject("default-greeting", events.TaskExecutorArgsReplace)},
		func(s bus.Stored) error {
			fmt.Println(s.Event.Plugin, s.Event.PluginVersion, s.Event.DataContentType, string(s.Event.Data))
			return nil
		})
	if err != nil {
		panic(err)
	}
	// Output:
	// success Hello, Ada! <nil>
	// default-greeting 1.0.0 application/merge-patch+json {"kw":{"greeting":"Hello"}}
}
