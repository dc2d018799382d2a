// Command quickstart is README's Go example, complete: an embedded server
// whose data stays in ./qtasks-data, a worker with one task, a plugin, and
// the projection that qtasks-replay reads. Run it, then look at what it did:
//
//	go run ./examples/quickstart
//	go run ./cmd/qtasks-replay history TASK_ID   # the id it printed
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	_ "github.com/qtasks/qtasks-go/bus/embedded" // bus.Open starts an embedded server
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// AddArgs are the task's keyword arguments.
type AddArgs struct{ A, B, X int }

func main() {
	dataDir := "qtasks-data" // where qtasksd and qtasks-replay look by default
	if len(os.Args) > 1 {
		dataDir = os.Args[1]
	}
	if err := run(context.Background(), dataDir); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run returns the first error, joined with those of the deferred Stops
// (each ends its component's work; an error there is an error of the run).
func run(ctx context.Context, dataDir string) (err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// An embedded server that keeps its data in dataDir (without DataDir it
	// would use a temporary directory, removed on Close). Port -1: any free
	// one, so that a running qtasksd is no obstacle.
	b, err := bus.Open(ctx, bus.Config{DataDir: dataDir, Port: -1})
	if err != nil {
		return err
	}
	defer b.Close()

	// The projection qtasks-replay reads, kept up to date from the log.
	proj, err := projections.NewProjector(b, projections.ProjectorConfig{Path: filepath.Join(dataDir, "qtasks.db")})
	if err != nil {
		return err
	}
	if err := proj.Start(ctx); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, proj.Stop(context.Background())) }()

	app, err := executor.New(b, nil)
	if err != nil {
		return err
	}
	if err := executor.Register(app, "add", func(_ context.Context, in AddArgs) (int, error) {
		return in.A + in.B + in.X, nil
	}, &executor.TaskOptions{Retry: 2, MaxTime: 10 * time.Second}); err != nil {
		return err
	}

	// A plugin: named for task_executor_args_replace, it sets kw.X = 1 (AddArgs has no json tags: its keys are A, B, X).
	p, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "add-x", Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"X": 1}})
		}),
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.Stop(context.Background())) }()

	if err := app.Start(ctx); err != nil { // a worker
		return err
	}
	defer func() { err = errors.Join(err, app.Stop(context.Background())) }()
	t, err := app.Submit(ctx, "add", AddArgs{A: 1, B: 2}, nil)
	if err != nil {
		return err
	}
	if t, err = app.Wait(ctx, t.ID); err != nil {
		return err
	}
	sum, err := executor.Result[int](t)
	if err != nil {
		return fmt.Errorf("task %s ended in %s: %w", t.ID, t.Status, err)
	}
	// Everything the task did is in the projection before we say so.
	if err := proj.CatchUp(ctx); err != nil {
		return err
	}
	fmt.Printf("task %s: %s, 1 + 2 + x = %d\n", t.ID, t.Status, sum)
	fmt.Printf("see its history: go run ./cmd/qtasks-replay history %s --db %s\n", t.ID, filepath.Join(dataDir, "qtasks.db"))
	return nil
}
