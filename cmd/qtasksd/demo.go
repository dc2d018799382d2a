package main

import (
	"context"
	"errors"
	"fmt"
	"iter"
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

func registerDemoTasks(app *executor.App) {
	executor.MustRegister(app, "echo", func(_ context.Context, in map[string]any) (map[string]any, error) {
		return in, nil
	}, &executor.TaskOptions{Description: "returns its keyword arguments"})
	executor.MustRegister(app, "add", func(_ context.Context, in addInput) (float64, error) {
		return in.A + in.B, nil
	}, &executor.TaskOptions{Description: "adds a and b"})
	executor.MustRegister(app, "greet", func(_ context.Context, in greetInput) (string, error) {
		if in.Name == "" {
			in.Name = "world"
		}
		return "hello, " + in.Name, nil
	}, &executor.TaskOptions{Description: "greets name"})
	executor.MustRegister(app, "sleep", func(ctx context.Context, in sleepInput) (int, error) {
		t := time.NewTimer(time.Duration(in.MS) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return in.MS, nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}, &executor.TaskOptions{Description: "sleeps ms milliseconds"})
	executor.MustRegister(app, "fail", func(_ context.Context, in failInput) (any, error) {
		if in.Message == "" {
			in.Message = "failed on purpose"
		}
		return nil, errors.New(in.Message)
	}, &executor.TaskOptions{Description: "fails with message"})
	executor.MustRegister(app, "flaky", func(ctx context.Context, in flakyInput) (string, error) {
		if in.Until == 0 {
			in.Until = 3
		}
		n := executor.TaskFromContext(ctx).Attempt
		if n < in.Until {
			return "", fmt.Errorf("flaky: attempt %d of %d failed", n, in.Until)
		}
		return fmt.Sprintf("succeeded on attempt %d", n), nil
	}, &executor.TaskOptions{Retry: 2, Description: "fails until attempt until (default 3); 2 retries"})
	if err := executor.RegisterSeq(app, "count", func(_ context.Context, in countInput) iter.Seq2[int, error] {
		return func(yield func(int, error) bool) {
			for i := 1; i <= in.N; i++ {
				if !yield(i, nil) {
					return
				}
			}
		}
	}, &executor.TaskOptions{Description: "yields 1..n"}); err != nil {
		panic(err)
	}
}
