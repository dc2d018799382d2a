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

// A key's second submission is a duplicate of its first; the same key with
// other arguments is refused; unique options make the key; a batch answers
// each of its submissions.
func ExampleApp_SubmitOne() {
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
	key := &executor.SubmitOptions{IdempotencyKey: "invoice-42"}
	first, _ := app.SubmitOne(ctx, "bill", map[string]int{"cents": 1200}, key)
	again, _ := app.SubmitOne(ctx, "bill", map[string]int{"cents": 1200}, key)
	fmt.Println(first.Duplicate, again.Duplicate, again.Task.ID == first.Task.ID)

	_, err = app.SubmitOne(ctx, "bill", map[string]int{"cents": 9900}, key)
	var conflict *executor.KeyConflictError
	fmt.Println(errors.As(err, &conflict), conflict.Differs)

	unique := &executor.SubmitOptions{Unique: &executor.UniqueOpts{ByArgs: true}}
	res, err := app.SubmitMany(ctx, []executor.SubmitRequest{
		{Name: "report", Input: map[string]string{"day": "monday"}, Options: unique},
		{Name: "report", Input: map[string]string{"day": "monday"}, Options: unique},
		{Name: "report", Input: map[string]string{"day": "tuesday"}, Options: unique},
	})
	fmt.Println(err, res[0].Duplicate, res[1].Duplicate, res[2].Duplicate)
	// Output:
	// false true true
	// true [kw]
	// <nil> false true false
}
