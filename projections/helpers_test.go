package projections_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// waitLimit bounds every wait: generous for a loaded two-core machine under
// -race, never reached when all is well.
const waitLimit = 60 * time.Second

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// startProjector runs a projector of path until the test ends.
func startProjector(t *testing.T, b *bus.Bus, path string, cfg *projections.ProjectorConfig) *projections.Projector {
	t.Helper()
	var c projections.ProjectorConfig
	if cfg != nil {
		c = *cfg
	}
	c.Path = path
	if c.Logger == nil {
		c.Logger = bustest.Logger(t)
	}
	p, err := projections.NewProjector(b, c)
	require.NoError(t, err)
	require.NoError(t, p.Start(ctxFor(t)))
	t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })
	return p
}

// build builds a projection from sequence 1 up to to (0: the log's end) in
// a new file and opens it.
func build(t *testing.T, b *bus.Bus, to uint64) *projections.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rebuilt.db")
	_, err := projections.Build(ctxFor(t), b, path, &projections.BuildConfig{To: to})
	require.NoError(t, err)
	return openDB(t, path, true)
}

func openDB(t *testing.T, path string, readOnly bool) *projections.DB {
	t.Helper()
	db, err := projections.Open(ctxFor(t), path, &projections.Options{ReadOnly: readOnly})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func requireEqual(t *testing.T, a, b *projections.DB) {
	t.Helper()
	eq, diff, err := projections.Equal(ctxFor(t), a, b)
	require.NoError(t, err)
	require.True(t, eq, "projections differ at %s", diff)
}

// logEnd is the last stream sequence of the event log.
func logEnd(t *testing.T, b *bus.Bus) uint64 {
	t.Helper()
	info, err := b.EventStream().Info(ctxFor(t))
	require.NoError(t, err)
	return info.State.LastSeq
}

func newApp(t *testing.T, b *bus.Bus) *executor.App {
	t.Helper()
	app, err := executor.New(b, &executor.Config{AckWait: 5 * time.Second, GracePeriod: 5 * time.Second, Logger: bustest.Logger(t)})
	require.NoError(t, err)
	return app
}

func startApp(t *testing.T, app *executor.App) {
	t.Helper()
	require.NoError(t, app.Start(ctxFor(t)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, app.Stop(ctx))
	})
}

func startPlugin(t *testing.T, b *bus.Bus, spec plugins.Spec) {
	t.Helper()
	r, err := plugins.Start(ctxFor(t), b, spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Stop(ctx))
	})
}

func submitAndWait(t *testing.T, app *executor.App, name string, kw any, opts *executor.SubmitOptions) events.Task {
	t.Helper()
	ctx := ctxFor(t)
	sub, err := app.Submit(ctx, name, kw, opts)
	require.NoError(t, err)
	got, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	return got
}

type addArgs struct{ A, B int }

// scenario is a run with every kind of ending: successes, a plain error, a
// retried task that succeeds on its second attempt, a task that raises the
// plugin trigger error (handled by a plugin), a cancelled task and a task
// no worker knows; two mutators change the arguments of every task, and a
// shadow plugin shadows one of them.
type scenario struct {
	app   *executor.App
	tasks map[string]events.Task // by label
}

func runScenario(t *testing.T, b *bus.Bus) *scenario {
	t.Helper()
	app := newApp(t, b)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil },
		&executor.TaskOptions{Tags: []string{"math"}})
	executor.MustRegister(app, "fail", func(context.Context, struct{}) (int, error) { return 0, errors.New("boom") }, nil)
	var flaky atomic.Int32
	executor.MustRegister(app, "flaky", func(context.Context, struct{}) (string, error) {
		if flaky.Add(1) == 1 {
			return "", errors.New("first attempt fails")
		}
		return "ok", nil
	}, &executor.TaskOptions{Retry: 2, Tags: []string{"flaky", "math"}})
	executor.MustRegister(app, "helpme", func(ctx context.Context, _ struct{}) (int, error) {
		return 0, executor.PluginError(ctx, "need help", map[string]any{"k": 1})
	}, nil)
	executor.MustRegister(app, "cancelme", func(context.Context, struct{}) (int, error) {
		return 0, executor.Cancel("not today")
	}, nil)

	// Two mutators of the arguments, in chain order: scale doubles a, tag
	// adds kw.tagged and replaces b.
	startPlugin(t, b, plugins.Spec{
		Name: "scale", Version: "1.0", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct {
				Kw map[string]any `json:"kw"`
			}
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			a, ok := p.Kw["A"].(float64)
			if !ok {
				return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
			}
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"A": a * 2}})
		}),
	})
	startPlugin(t, b, plugins.Spec{
		Name: "tagger", Version: "2.1", Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			if c.TaskName != "add" {
				return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
			}
			return plugins.JSONPatch(plugins.Op{Op: "add", Path: "/kw/tagged", Value: true},
				plugins.Op{Op: "replace", Path: "/kw/B", Value: 100})
		}),
	})
	startPlugin(t, b, plugins.Spec{
		Name: "scale-next", Version: "1.1", Mode: plugins.Shadow, ShadowOf: "scale",
		Triggers: []string{events.TaskExecutorArgsReplace},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"A": 0}})
		}),
	})
	startPlugin(t, b, plugins.Spec{
		Name: "helper", Version: "1", Triggers: []string{events.TaskExecutorRunTaskTriggerError},
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"result": 42})
		}),
	})
	startApp(t, app)

	s := &scenario{app: app, tasks: map[string]events.Task{}}
	for i := range 3 {
		s.tasks["add"+string(rune('0'+i))] = submitAndWait(t, app, "add", addArgs{A: i, B: 1}, nil)
	}
	s.tasks["fail"] = submitAndWait(t, app, "fail", nil, nil)
	s.tasks["flaky"] = submitAndWait(t, app, "flaky", nil, &executor.SubmitOptions{Tags: []string{"extra-tag"}})
	s.tasks["helpme"] = submitAndWait(t, app, "helpme", nil, nil)
	s.tasks["cancelme"] = submitAndWait(t, app, "cancelme", nil, nil)
	s.tasks["unknown"] = submitAndWait(t, app, "nosuchtask", nil, nil)

	require.Equal(t, events.StatusSuccess, s.tasks["add0"].Status, s.tasks["add0"].Error)
	require.Equal(t, events.StatusError, s.tasks["fail"].Status)
	require.Equal(t, events.StatusSuccess, s.tasks["flaky"].Status, s.tasks["flaky"].Error)
	require.Equal(t, 2, s.tasks["flaky"].Attempt)
	require.Equal(t, events.StatusSuccess, s.tasks["helpme"].Status, s.tasks["helpme"].Error)
	require.Equal(t, events.StatusCancel, s.tasks["cancelme"].Status)
	require.Equal(t, events.StatusError, s.tasks["unknown"].Status)
	return s
}

// stop stops the scenario's worker: its stop facts are the last events.
func (s *scenario) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, s.app.Stop(ctxFor(t)))
}
