package retry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/retry"
)

// registerFlaky registers the task flaky, which fails attempts before until.
func registerFlaky(app *executor.App, until int, opts *executor.TaskOptions) {
	executor.MustRegister(app, "flaky", func(ctx context.Context, _ struct{}) (string, error) {
		if n := executor.TaskFromContext(ctx).Attempt; n < until {
			return "", fmt.Errorf("attempt %d: %w", n, &fs.PathError{Op: "open", Path: "/flaky", Err: fs.ErrNotExist})
		}
		return "ok", nil
	}, opts)
}

// A task fails twice and then succeeds, with the backoff [100ms, 200ms]:
// each next attempt starts no earlier than the previous failure plus its
// delay, read from the recorded facts (the failure time is the final
// record's updated_at; an attempt's start is the time of its first fact).
func TestFailsTwiceThenSucceeds(t *testing.T) {
	t.Parallel()
	for _, local := range []bool{true, false} {
		name := map[bool]string{true: "Local", false: "Consumer"}[local]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, nil)
			app := newApp(t, b)
			registerFlaky(app, 3, &executor.TaskOptions{Retry: 2})
			p, err := retry.New(retry.Config{Backoff: retry.List{100 * time.Millisecond, 200 * time.Millisecond}})
			require.NoError(t, err)
			runPlugin(t, b, p.Spec(), local)
			startApp(t, app)

			got := submitAndWait(t, app, "flaky")
			require.Equal(t, events.StatusSuccess, got.Status, got.Error)
			require.Equal(t, 3, got.Attempt)

			finals := finalModels(t, b, got.ID, 3)
			delays := []int64{100, 200}
			for i, m := range finals {
				require.Equal(t, i+1, m.Attempt)
				if i == 2 {
					require.Equal(t, events.StatusSuccess, m.Status)
					require.Equal(t, got.ID+"#2", m.RetryParent)
					require.Empty(t, m.RetryChild)
					break
				}
				require.Equal(t, events.StatusRetry, m.Status)
				require.Equal(t, delays[i], m.DelayMS, "attempt %d", i+1)
				require.Equal(t, 1-i, m.Retry, "retries left after attempt %d", i+1)
				require.Equal(t, fmt.Sprintf("%s#%d", got.ID, i+2), m.RetryChild)
				if i > 0 {
					require.Equal(t, fmt.Sprintf("%s#%d", got.ID, i), m.RetryParent)
				}
			}

			all := taskFacts(t, b, got.ID)
			for n := 2; n <= 3; n++ {
				prev := finals[n-2]
				earliest := prev.UpdatedAt.Add(time.Duration(prev.DelayMS) * time.Millisecond)
				// not_before is left out when the delay had passed by the
				// time the attempt was queued (a slow machine).
				if nb := finals[n-1].NotBefore; !nb.IsZero() {
					require.Equal(t, earliest, nb.UTC(), "attempt %d's not_before", n)
				}
				seen := 0
				for _, f := range all {
					if f.Event.Attempt != n {
						continue
					}
					seen++
					require.False(t, f.Event.Time.Before(earliest),
						"attempt %d: %s at %v, before the failure of attempt %d (%v) + %dms",
						n, f.Event.Trigger, f.Event.Time, n-1, prev.UpdatedAt, prev.DelayMS)
				}
				require.Positive(t, seen, "facts of attempt %d", n)
			}

			// The retry facts record the plugin's call and its patch.
			retries := factsOf(t, b, got.ID, events.FactSubject(events.WorkerTaskErrorRetry, "*"))
			require.Len(t, retries, 2)
			for i, f := range retries {
				require.Equal(t, i+1, f.Event.Attempt)
				require.Empty(t, f.Fact.Failed)
				require.Len(t, f.Fact.Calls, 1)
				c := f.Fact.Calls[0]
				require.Equal(t, retry.DefaultName, c.Plugin)
				require.Equal(t, retry.Version, c.Version)
				require.Equal(t, events.OutcomeApplied, c.Outcome)
				require.Equal(t, events.ContentTypeMergePatch, c.ContentType)
				require.JSONEq(t, fmt.Sprintf(`{"model":{"delay_ms":%d}}`, delays[i]), string(c.Patch))
				require.Equal(t, delays[i], model(t, f.Fact.Output).DelayMS)
				require.Equal(t, events.StatusRetry, model(t, f.Fact.Input).Status)
			}
		})
	}
}

// The error chain of the retry payload: every error errors.Unwrap and
// errors.Join reach, outermost first, with its %T type.
func TestErrorChainInPayload(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b)
	executor.MustRegister(app, "load", func(context.Context, struct{}) (int, error) {
		return 0, errors.Join(fmt.Errorf("loading: %w", &fs.PathError{Op: "open", Path: "/nope", Err: fs.ErrNotExist}),
			errors.New("also this"))
	}, &executor.TaskOptions{Retry: 1})
	startApp(t, app)
	got := submitAndWait(t, app, "load")
	require.Equal(t, events.StatusError, got.Status)

	f := factsOf(t, b, got.ID, events.FactSubject(events.WorkerTaskErrorRetry, "*"))
	require.Len(t, f, 1)
	var in struct {
		Error  string               `json:"error"`
		Errors []retry.ChainedError `json:"errors"`
	}
	require.NoError(t, json.Unmarshal(f[0].Fact.Input, &in))
	require.Equal(t, "loading: open /nope: file does not exist\nalso this", in.Error)
	require.Equal(t, []retry.ChainedError{
		{Type: "*errors.joinError", Message: "loading: open /nope: file does not exist\nalso this"},
		{Type: "*fmt.wrapError", Message: "loading: open /nope: file does not exist"},
		{Type: "*fs.PathError", Message: "open /nope: file does not exist"},
		{Type: "*errors.errorString", Message: "file does not exist"},
		{Type: "*errors.errorString", Message: "also this"},
	}, in.Errors)
}

// An error the plugin is configured not to retry ends the task at once,
// and so does one the task's own RetryOn does not match (then the trigger
// does not even fire).
func TestNotRetryable(t *testing.T) {
	t.Parallel()

	t.Run("VetoedByPlugin", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		app := newApp(t, b)
		registerFlaky(app, 99, &executor.TaskOptions{Retry: 2})
		p, err := retry.New(retry.Config{
			Backoff:    retry.Fixed(time.Second),
			NeverRetry: []retry.Match{{Type: "*fs.PathError"}},
		})
		require.NoError(t, err)
		runPlugin(t, b, p.Spec(), true)
		startApp(t, app)

		got := submitAndWait(t, app, "flaky")
		require.Equal(t, events.StatusError, got.Status)
		require.Equal(t, 1, got.Attempt, "no second attempt")
		require.Equal(t, 2, got.Retry, "the retries are left unused")
		require.Equal(t, "attempt 1: open /flaky: file does not exist", got.Error)
		require.Equal(t, "retry vetoed on worker_task_error_retry", got.Reason)
		require.Empty(t, got.RetryChild)

		finals := finalModels(t, b, got.ID, 1)
		require.Equal(t, events.StatusError, finals[0].Status)
		f := factsOf(t, b, got.ID, events.FactSubject(events.WorkerTaskErrorRetry, "*"))
		require.Len(t, f, 1)
		require.Len(t, f[0].Fact.Calls, 1)
		require.Equal(t, events.OutcomeApplied, f[0].Fact.Calls[0].Outcome)
		require.JSONEq(t, `{"model":{"status":"error"}}`, string(f[0].Fact.Calls[0].Patch))
		require.Equal(t, events.StatusError, model(t, f[0].Fact.Output).Status)
	})

	t.Run("AllowedByPluginType", func(t *testing.T) {
		t.Parallel()
		// The same error, allowed by type: the *fs.PathError sits inside
		// a wrap, as errors.As would find it.
		b := bustest.Open(t, nil)
		app := newApp(t, b)
		registerFlaky(app, 99, &executor.TaskOptions{Retry: 2})
		p, err := retry.New(retry.Config{RetryOn: []retry.Match{{Type: "*fs.PathError"}}})
		require.NoError(t, err)
		runPlugin(t, b, p.Spec(), true)
		startApp(t, app)

		got := submitAndWait(t, app, "flaky")
		require.Equal(t, events.StatusError, got.Status)
		require.Equal(t, 3, got.Attempt, "1 + Retry attempts")
		require.Empty(t, got.Reason, "out of retries, not vetoed")
		require.Len(t, factsOf(t, b, got.ID, events.FactSubject(events.WorkerTaskErrorRetry, "*")), 2)
	})

	t.Run("NotMatchingTaskRetryOn", func(t *testing.T) {
		t.Parallel()
		b := bustest.Open(t, nil)
		app := newApp(t, b)
		errTransient := errors.New("transient")
		executor.MustRegister(app, "picky", func(context.Context, struct{}) (int, error) {
			return 0, errors.New("permanent")
		}, &executor.TaskOptions{Retry: 2, RetryOn: []error{errTransient}})
		p, err := retry.New(retry.Config{Backoff: retry.Fixed(time.Second)})
		require.NoError(t, err)
		runPlugin(t, b, p.Spec(), true)
		startApp(t, app)

		got := submitAndWait(t, app, "picky")
		require.Equal(t, events.StatusError, got.Status)
		require.Equal(t, 1, got.Attempt)
		require.Equal(t, "permanent", got.Error)
		finalModels(t, b, got.ID, 1)
		require.Empty(t, factsOf(t, b, got.ID, events.FactSubject(events.WorkerTaskErrorRetry, "*")),
			"the executor decides in-process: the plugin is never asked")
	})
}

// A patch before the retry plugin that leaves a wrongly typed delay_ms
// ("soon") is rejected by the patch contract (types are part of it), and
// under its ignore policy the retry plugin decides on the payload as it
// was. (The plugin's own error on an odd payload is in decide_test.go: the
// executor can no longer hand it one.)
func TestWrongTypedPatchBeforeRetryIsRejected(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b)
	registerFlaky(app, 2, &executor.TaskOptions{Retry: 2})
	spoil := plugins.Spec{
		Name: "spoil", Version: "1", Triggers: []string{events.WorkerTaskErrorRetry}, Policy: events.PolicyIgnore,
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.JSONPatch(plugins.Op{Op: "add", Path: "/model/delay_ms", Value: "soon"})
		}),
	}
	runPlugin(t, b, spoil, true) // first in the chain
	p, err := retry.New(retry.Config{Backoff: retry.Fixed(10 * time.Millisecond)})
	require.NoError(t, err)
	runPlugin(t, b, p.Spec(), true)
	startApp(t, app)

	got := submitAndWait(t, app, "flaky")
	require.Equal(t, events.StatusSuccess, got.Status, got.Reason)
	require.Equal(t, 2, got.Attempt)

	f := factsOf(t, b, got.ID, events.FactSubject(events.WorkerTaskErrorRetry, "*"))
	require.Len(t, f, 1)
	require.Len(t, f[0].Fact.Calls, 2)
	c := f[0].Fact.Calls[0]
	require.Equal(t, "spoil", c.Plugin)
	require.Equal(t, events.OutcomeRejected, c.Outcome)
	require.Contains(t, c.Reason, `"/model/delay_ms": delay_ms must be an integer >= 0, not a string`)
	c = f[0].Fact.Calls[1]
	require.Equal(t, retry.DefaultName, c.Plugin)
	require.Equal(t, events.OutcomeApplied, c.Outcome, c.Reason)
	require.Empty(t, f[0].Fact.Failed)
}
