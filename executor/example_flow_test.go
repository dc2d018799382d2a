package executor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/executor"
)

// A chain of three steps, each given the previous result as its last
// positional argument (QTasks' AsyncTaskUtils.chain(add(2, 2), add(4),
// add(8))), and shared state a step writes.
func ExampleApp_Chain() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "qtasks-example-")
	defer os.RemoveAll(dir)
	b, err := bus.Open(ctx, bus.Config{DataDir: dir})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	app, err := executor.New(b, nil)
	if err != nil {
		panic(err)
	}
	executor.MustRegister(app, "add", func(ctx context.Context, in []int) (int, error) {
		sum := 0
		for _, x := range in {
			sum += x
		}
		// Count the additions in state every worker shares.
		st := executor.State(ctx, "stats")
		for {
			var n int
			rev, err := st.Get(ctx, "adds", &n)
			if err != nil && !errors.Is(err, executor.ErrStateNotFound) {
				return 0, err
			}
			if _, err := st.CAS(ctx, "adds", n+1, rev); err == nil {
				return sum, nil
			} else if !errors.Is(err, executor.ErrStateConflict) {
				return 0, err
			}
		}
	}, nil)
	if err := app.Start(ctx); err != nil {
		panic(err)
	}
	defer func() {
		if err := app.Stop(context.Background()); err != nil {
			panic(err)
		}
	}()

	c, err := app.Chain(ctx, executor.Step("add", 2, 2), executor.Step("add", 4), executor.Step("add", 8))
	if err != nil {
		panic(err)
	}
	last, err := app.WaitChain(ctx, c.ID)
	if err != nil {
		panic(err)
	}
	sum, err := executor.Result[int](last)
	var adds int
	_, _ = app.State("stats").Get(ctx, "adds", &adds)
	fmt.Println(sum, err, adds)
	// Output: 16 <nil> 3
}
