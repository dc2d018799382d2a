package main

import (
	"context"
	"errors"
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
