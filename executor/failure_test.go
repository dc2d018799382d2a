package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
)

// A mutator on task_executor_args_replace that fails (a patch outside the
// trigger's paths, a patch that is not JSON, a patch that does not apply, no
// answer in time, an error) ends the task in error under policy fail, with
// the reason in the log, and leaves it unpatched under policy ignore. A
// task of another name running at the same time is not touched either way.
func TestPluginFailure(t *testing.T) {
	t.Parallel()

	// The short timeout is the point of the timeout case only; the others
	// answer at once.
	const shortTimeout = 300 * time.Millisecond
	cases := []struct {
		name    string
		timeout time.Duration
		answer  func(ctx context.Context) (*plugins.Patch, error)
		outcome events.Outcome
		reason  string // in the call's reason
	}{
		{
			name: "PathNotAllowed",
			answer: func(context.Context) (*plugins.Patch, error) {
				return plugins.MergePatch(map[string]any{"task_name": "x"})
			},
			outcome: events.OutcomeRejected, reason: `does not allow: "/task_name"`,
		},
		{
			name: "NotJSON",
			answer: func(context.Context) (*plugins.Patch, error) {
				return &plugins.Patch{ContentType: events.ContentTypeJSONPatch, Body: json.RawMessage("{not json")}, nil
			},
			outcome: events.OutcomeRejected, reason: "not JSON",
		},
		{
			name: "NotAPatch",
			answer: func(context.Context) (*plugins.Patch, error) {
				return &plugins.Patch{ContentType: events.ContentTypeJSONPatch, Body: json.RawMessage(`{"op":"add","path":"/kw/z","value":1}`)}, nil
			},
			outcome: events.OutcomeRejected, reason: "not a JSON Patch array",
		},
		{
			name: "DoesNotApply",
			answer: func(context.Context) (*plugins.Patch, error) {
				return &plugins.Patch{ContentType: events.ContentTypeJSONPatch, Body: json.RawMessage(`[{"op":"remove","path":"/kw/missing"}]`)}, nil
			},
			outcome: events.OutcomeRejected, reason: events.ErrBadPatch.Error(),
		},
		{
			// Types are part of the contract: the patch is rejected, and
			// the policy decides, instead of the task failing on "bad task
			// arguments" with no plugin named.
			name: "WrongType",
			answer: func(context.Context) (*plugins.Patch, error) {
				return plugins.MergePatch(map[string]any{"kw": "oops"})
			},
			outcome: events.OutcomeRejected, reason: `"/kw": kw must be an object (or null), not a string`,
		},
		{
			name:    "Timeout",
			timeout: shortTimeout,
			answer: func(ctx context.Context) (*plugins.Patch, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			outcome: events.OutcomeTimeout, reason: "no patch within 300ms",
		},
		{
			name: "Error",
			answer: func(context.Context) (*plugins.Patch, error) {
				return nil, errors.New("plugin broke")
			},
			outcome: events.OutcomeError, reason: "plugin broke",
		},
	}
	for _, local := range []bool{false, true} {
		for _, tc := range cases {
			for _, policy := range []string{events.PolicyFail, events.PolicyIgnore} {
				if local && policy == events.PolicyIgnore {
					continue // the policy is applied the same way for both
				}
				name := map[bool]string{false: "Consumer", true: "Local"}[local] + "/" + tc.name + "/" + policy
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					testPluginFailure(t, local, policy, tc.timeout, tc.answer, tc.outcome, tc.reason)
				})
			}
		}
	}
}

// testPluginFailure runs a task "victim", whose args_replace plugin answers
// with answer, beside a task "other" that the plugin leaves alone.
func testPluginFailure(t *testing.T, local bool, policy string, timeout time.Duration,
	answer func(ctx context.Context) (*plugins.Patch, error), outcome events.Outcome, reason string,
) {
	t.Helper()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	victimGot := make(chan xy, 1)
	executor.MustRegister(app, "victim", func(_ context.Context, in xy) (int, error) {
		victimGot <- in
		return in.X + in.Y, nil
	}, nil)
	otherGot := make(chan xy, 1)
	executor.MustRegister(app, "other", func(_ context.Context, in xy) (int, error) {
		otherGot <- in
		return in.X * in.Y, nil
	}, nil)
	spec := plugins.Spec{
		Name: "flaky", Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
		Policy: policy, Timeout: timeout,
		Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
			if c.TaskName != "victim" {
				return nil, nil //nolint:nilnil // no patch (leaves other tasks alone): the Plugin contract's "no change"
			}
			return answer(ctx)
		}),
	}
	if local {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		r, err := plugins.Local(ctx, b, spec)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, r.Stop(context.Background())) })
	} else {
		startPlugin(t, b, spec)
	}
	start(t, app)

	victim := submit(t, app, "victim", xy{X: 2, Y: 3}, nil)
	other := submit(t, app, "other", xy{X: 4, Y: 5}, nil)
	gotVictim := waitTask(t, app, victim.ID)
	gotOther := waitTask(t, app, other.ID)

	// The other task ran untouched.
	require.Equal(t, events.StatusSuccess, gotOther.Status, gotOther.Error)
	require.JSONEq(t, `20`, string(gotOther.Result))
	require.Equal(t, xy{X: 4, Y: 5}, recv(t, otherGot, "the other task's call"))
	of := oneFact(t, b, events.TaskExecutorArgsReplace, other.ID)
	require.Empty(t, of.Failed)
	require.Len(t, of.Calls, 1)
	require.Equal(t, events.OutcomeNoChange, of.Calls[0].Outcome)
	require.JSONEq(t, string(of.Input), string(of.Output))

	// The victim's args_replace fact records the failed call.
	vf := oneFact(t, b, events.TaskExecutorArgsReplace, victim.ID)
	require.Len(t, vf.Calls, 1)
	call := vf.Calls[0]
	require.Equal(t, "flaky", call.Plugin)
	require.Equal(t, policy, call.Policy)
	require.Equal(t, outcome, call.Outcome)
	require.Contains(t, call.Reason, reason)
	require.True(t, call.Failed())
	require.JSONEq(t, `{"args":[],"kw":{"x":2,"y":3}}`, string(vf.Output), "the payload stays unpatched")

	final := finalModels(t, b, victim.ID, 1)[0]
	if policy == events.PolicyIgnore {
		require.Empty(t, vf.Failed)
		require.Equal(t, events.StatusSuccess, gotVictim.Status, gotVictim.Error)
		require.JSONEq(t, `5`, string(gotVictim.Result))
		require.Equal(t, xy{X: 2, Y: 3}, recv(t, victimGot, "the victim's call"))
		require.Equal(t, events.StatusSuccess, final.Status)
		return
	}
	require.NotEmpty(t, vf.Failed)
	require.Contains(t, vf.Failed, reason)
	require.Equal(t, events.StatusError, gotVictim.Status)
	require.Contains(t, gotVictim.Error, "flaky")
	require.Contains(t, gotVictim.Error, string(outcome))
	require.Contains(t, gotVictim.Reason, reason)
	require.Equal(t, events.StatusError, final.Status)
	require.Equal(t, gotVictim.Error, final.Error)
	require.Equal(t, gotVictim.Reason, final.Reason)
	select {
	case in := <-victimGot:
		t.Fatalf("the victim's function ran with %+v", in)
	default:
	}
	// Execution stops at the failed step.
	w := workerTriggers(t, b, victim.ID)
	require.NotContains(t, w, events.TaskExecutorBeforeExecute)
	require.NotContains(t, w, events.TaskExecutorRunTask)
	require.Contains(t, w, events.TaskExecutorTaskClose)
}
