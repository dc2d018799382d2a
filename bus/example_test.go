package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	_ "github.com/qtasks/qtasks-go/bus/embedded" // Open starts an embedded server
	"github.com/qtasks/qtasks-go/events"
)

// Open with no URL starts an embedded JetStream server (package
// bus/embedded, imported for that; without DataDir, in a temporary
// directory removed on Close) and provisions qtasks' streams and buckets on
// it. A task record is stored once: creating it again is an
// idempotent resubmission that returns the stored record.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{Port: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	task := events.Task{
		ID: "t1", Name: "add", Queue: "default", Status: events.StatusNew, Attempt: 1,
		Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":1,"b":2}`),
	}
	rec, created, err := b.CreateTask(ctx, task)
	fmt.Println(created, rec.Task.Name, rec.Task.Status, err)
	task.Kw = json.RawMessage(`{"a":5}`)
	rec, created, err = b.CreateTask(ctx, task)
	fmt.Println(created, string(rec.Task.Kw), err)
	got, err := b.GetTask(ctx, "t1")
	fmt.Println(got.Task.ID, got.Revision == rec.Revision, err)
	// Output:
	// true add new <nil>
	// false {"a":1,"b":2} <nil>
	// t1 true <nil>
}
