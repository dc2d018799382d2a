package retry_test

import (
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins/retry"
)

// The delays a backoff gives after each failed attempt.
func ExampleParseBackoff() {
	b, err := retry.ParseBackoff("exponential:base=100ms,factor=3,max=2s")
	if err != nil {
		panic(err)
	}
	for n := 1; n <= 5; n++ {
		fmt.Printf("after attempt %d: wait %v\n", n, b.Delay(n))
	}
	// Output:
	// after attempt 1: wait 100ms
	// after attempt 2: wait 300ms
	// after attempt 3: wait 900ms
	// after attempt 4: wait 2s
	// after attempt 5: wait 2s
}

// What the plugin decides for a failed attempt, given the error chain the
// executor sends with worker_task_error_retry.
func ExamplePlugin_Decide() {
	p, err := retry.New(retry.Config{
		Backoff:    retry.List{time.Second, 5 * time.Second},
		NeverRetry: []retry.Match{{Type: "*json.SyntaxError"}},
	})
	if err != nil {
		panic(err)
	}
	d := p.Decide(retry.Payload{
		Model:  &events.Task{Status: events.StatusRetry, Attempt: 2},
		Errors: []retry.ChainedError{{Type: "*net.OpError", Message: "dial tcp: connection refused"}},
	})
	fmt.Println(d.Retry, d.Delay)
	d = p.Decide(retry.Payload{
		Model: &events.Task{Status: events.StatusRetry, Attempt: 1},
		Errors: []retry.ChainedError{
			{Type: "*fmt.wrapError", Message: "decoding: invalid character 'x'"},
			{Type: "*json.SyntaxError", Message: "invalid character 'x'"},
		},
	})
	fmt.Println(d.Retry, d.Reason)
	// Output:
	// true 5s
	// false error *json.SyntaxError ("invalid character 'x'") matches NeverRetry *json.SyntaxError
}
