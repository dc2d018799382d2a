package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A task that always fails, with Retry 2, under the retry plugin running as
// a process of its own; the worker process is SIGKILLed right after each
// of the first two attempts' retry facts is written, and a new one started.
// However the kills fall (before or after the attempt's final fact, before
// or after the next attempt was queued), the task gets at most 1 + Retry
// attempts, one final fact per attempt, and exactly one final status that
// is not retry.
func TestRetriesSurviveWorkerKills(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	plugin := startProc(t, "qtasks-retry", "--nats-url", b.ClientURL(), "--backoff", "list:700ms", "--log-level", "warn")
	plugin.WaitLine("ready", 30*time.Second)
	require.NoError(t, b.Registry().WaitFor(ctx, "retry", ""))

	// Retry facts as they are written: captured by the stream, they reach
	// core subscribers too.
	retryFacts := make(chan *nats.Msg, 16)
	sub, err := b.Conn().ChanSubscribe(events.SubjectTrigger+"."+events.WorkerTaskErrorRetry+".>", retryFacts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, b.Conn().Flush())

	// The submitter's registration decides the retry count (as qtasksd's
	// demo task flaky: Retry 2); the worker processes run the function.
	app := client(t, b)
	executor.MustRegister(app, "flaky", func(context.Context, struct{}) (string, error) {
		return "", fmt.Errorf("not run here")
	}, &executor.TaskOptions{Retry: 2})
	task, err := app.Submit(ctx, "flaky", map[string]any{"until": 99}, nil)
	require.NoError(t, err)

	workerArgs := []string{
		"--demo", "--nats-url", b.ClientURL(), "--ack-wait", "2s", "--concurrency", "1", "--http", "",
		"--no-projection", "--log-level", "warn",
	}
	worker := startProc(t, "qtasksd", workerArgs...)
	for attempt := 1; attempt <= 2; attempt++ {
		waitRetryFact(t, retryFacts, task.ID, attempt)
		worker.Signal(syscall.SIGKILL)
		worker.Wait(procLimit)
		worker = startProc(t, "qtasksd", workerArgs...)
	}
	final, err := app.Wait(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusError, final.Status)
	require.Equal(t, 3, final.Attempt)
	require.Equal(t, 0, final.Retry)
	require.Equal(t, task.ID+"#2", final.RetryParent)
	require.Equal(t, "flaky: attempt 3 of 99 failed", final.Error)

	// The log: attempts 1..3 only, one final fact each.
	attempts := map[int]bool{}
	var finals []events.Task
	resumed := 0
	for _, s := range bustest.EventsOf(t, b, task.ID, events.SubjectTrigger+".>") {
		require.NoError(t, s.Err)
		attempts[s.Event.Attempt] = true
		if s.Event.Trigger == events.BrokerRunningOlderTasks {
			resumed++ // a kill landed before the attempt's final fact
		}
		if s.Event.Trigger == events.StorageRemoveFinishedTask {
			var f events.Fact
			require.NoError(t, json.Unmarshal(s.Event.Data, &f))
			var in struct {
				Model events.Task `json:"model"`
			}
			require.NoError(t, json.Unmarshal(f.Input, &in))
			finals = append(finals, in.Model)
		}
		if s.Event.Trigger == events.WorkerTaskErrorRetry {
			// Every retry fact carries the plugin process's backoff.
			var f events.Fact
			require.NoError(t, json.Unmarshal(s.Event.Data, &f))
			require.Len(t, f.Calls, 1)
			require.Equal(t, events.OutcomeApplied, f.Calls[0].Outcome)
			require.JSONEq(t, `{"model":{"delay_ms":700}}`, string(f.Calls[0].Patch))
		}
	}
	require.Equal(t, map[int]bool{1: true, 2: true, 3: true}, attempts, "attempts never exceed 1 + Retry")
	require.Len(t, finals, 3, "one final fact per attempt")
	notRetry := 0
	for i, m := range finals {
		require.Equal(t, i+1, m.Attempt)
		if m.Status != events.StatusRetry {
			notRetry++
			require.Equal(t, events.StatusError, m.Status)
			require.Equal(t, 3, m.Attempt)
		} else {
			require.Equal(t, int64(700), m.DelayMS)
			require.Equal(t, fmt.Sprintf("%s#%d", task.ID, i+2), m.RetryChild)
		}
	}
	require.Equal(t, 1, notRetry, "exactly one final status that is not retry")
	t.Logf("attempts resumed after a kill: %d", resumed)

	// No attempt 4 is queued behind the scenes: the task queue drains.
	bustest.WaitFor(t, 30*time.Second, "the task queue to drain", func() bool {
		s, err := b.JetStream().Stream(ctx, "QTASKS_TASKS")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})

	plugin.Signal(syscall.SIGTERM)
	require.Equal(t, 0, plugin.Wait(procLimit))
}

// waitRetryFact waits for the retry fact of attempt of task id.
func waitRetryFact(t *testing.T, ch <-chan *nats.Msg, id string, attempt int) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m := <-ch:
			ev, err := events.Decode(events.Headers(m.Header), m.Data)
			require.NoError(t, err)
			if ev.TaskID == id && ev.Attempt == attempt {
				return
			}
		case <-deadline:
			t.Fatalf("no retry fact for attempt %d of %s", attempt, id)
		}
	}
}

// The validation plugin as a process of its own, with a schema file for
// qtasksd's demo task add: coerced arguments reach the worker process; bad
// ones are refused at submission with the field and the reason.
func TestValidatePluginProcess(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	schema := filepath.Join(t.TempDir(), "add.json")
	require.NoError(t, os.WriteFile(schema, []byte(`{"type":"object","required":["a","b"],"additionalProperties":false,
		"properties":{"a":{"type":"number"},"b":{"type":"number","default":0}}}`), 0o600))
	plugin := startProc(t, "qtasks-validate", "--nats-url", b.ClientURL(), "--schema", "add="+schema, "--log-level", "warn")
	plugin.WaitLine("ready", 30*time.Second)
	require.NoError(t, b.Registry().WaitFor(ctx, "validate", ""))
	startProc(t, "qtasksd", "--demo", "--nats-url", b.ClientURL(), "--http", "", "--no-projection", "--log-level", "warn")

	app := client(t, b)
	task, err := app.Submit(ctx, "add", map[string]any{"a": "2.5"}, nil)
	require.NoError(t, err)
	final, err := app.Wait(ctx, task.ID)
	require.NoError(t, err)
	sum, err := executor.Result[float64](final)
	require.NoError(t, err)
	require.InDelta(t, 2.5, sum, 0)

	_, err = app.Submit(ctx, "add", map[string]any{"a": "two", "b": 1}, nil)
	require.ErrorContains(t, err, "plugin validate failed on qtasks_add_task_before_broker (error): "+
		"invalid arguments for task add: /kw/a: got string, want number")

	plugin.Signal(syscall.SIGTERM)
	require.Equal(t, 0, plugin.Wait(procLimit))

	// A schema that does not compile is bad usage.
	bad := filepath.Join(t.TempDir(), "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"type":"integr"}`), 0o600))
	p := startProc(t, "qtasks-validate", "--nats-url", b.ClientURL(), "--schema", "add="+bad)
	require.Equal(t, 2, p.Wait(procLimit))
	require.Contains(t, p.Output(), `schema of task "add"`)
	r := startProc(t, "qtasks-retry", "--nats-url", b.ClientURL(), "--backoff", "list:")
	require.Equal(t, 2, r.Wait(procLimit))
	require.Contains(t, r.Output(), "list backoff: empty")
}
