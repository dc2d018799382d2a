package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/console"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// apiLimit bounds every wait of the API tests.
const apiLimit = 60 * time.Second

// apiEnv is the console over a real bus, executor, plugins and projector,
// all in this process.
type apiEnv struct {
	b    *bus.Bus
	app  *executor.App
	proj *projections.Projector
	view *projections.DB
	srv  *httptest.Server
}

func apiCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiLimit)
	t.Cleanup(cancel)
	return ctx
}

// newAPIEnv starts a bus, an executor with the task n (returns its
// argument N; fails when N is negative), a projector and the console.
func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	ctx := apiCtx(t)
	b := bustest.Open(t, nil)
	app, err := executor.New(b, &executor.Config{AckWait: 5 * time.Second, GracePeriod: 5 * time.Second, Logger: bustest.Logger(t)})
	require.NoError(t, err)
	executor.MustRegister(app, "n", func(_ context.Context, in struct{ N int }) (int, error) {
		if in.N < 0 {
			return 0, errNegative
		}
		return in.N, nil
	}, nil)
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, app.Stop(sctx))
	})
	path := filepath.Join(t.TempDir(), "p.db")
	proj, err := projections.NewProjector(b, projections.ProjectorConfig{Path: path, Logger: bustest.Logger(t)})
	require.NoError(t, err)
	require.NoError(t, proj.Start(ctx))
	t.Cleanup(func() { require.NoError(t, proj.Stop(context.Background())) })
	view, err := projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = view.Close() })
	srv := httptest.NewServer(console.New(console.Config{Bus: b, Projection: view, Applied: proj.LastSeq, Operator: app, Logger: bustest.Logger(t)}))
	t.Cleanup(srv.Close)
	return &apiEnv{b: b, app: app, proj: proj, view: view, srv: srv}
}

type negativeError struct{}

func (negativeError) Error() string { return "negative" }

var errNegative error = negativeError{}

// startPlugin runs spec until the test ends.
func (e *apiEnv) startPlugin(t *testing.T, spec plugins.Spec) {
	t.Helper()
	r, err := plugins.Start(apiCtx(t), e.b, spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Stop(ctx))
	})
}

// run submits task n with argument n and waits for its end.
func (e *apiEnv) run(t *testing.T, n int) events.Task {
	t.Helper()
	ctx := apiCtx(t)
	sub, err := e.app.Submit(ctx, "n", map[string]int{"N": n}, nil)
	require.NoError(t, err)
	got, err := e.app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	return got
}

// catchUp waits until the projection holds the whole log.
func (e *apiEnv) catchUp(t *testing.T) {
	t.Helper()
	require.NoError(t, e.proj.CatchUp(apiCtx(t)))
}

// get reads path from the API, checks its answer against the OpenAPI
// document and decodes it into v (when not nil).
func (e *apiEnv) get(t *testing.T, path string, v any) int {
	t.Helper()
	return e.do(t, http.MethodGet, path, "", "", v)
}

// do sends a request, checks the answer against the OpenAPI document and
// decodes it into v (when not nil).
func (e *apiEnv) do(t *testing.T, method, path, contentType, body string, v any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(apiCtx(t), method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "%s %s: %s", method, path, out)
	if v != nil {
		require.NoError(t, json.Unmarshal(out, v), string(out))
	}
	return resp.StatusCode
}

// A live plugin and a shadow of it, called on every task: the shadows
// endpoint lists the shadow under the live plugin it shadows, with its
// calls, outcomes and latency, and how often its patch differed from the
// live plugin's.
func TestShadowsAPI(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	plus := func(differs, fails func(int) bool) plugins.Plugin {
		return plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct{ Result int }
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			if fails(p.Result) {
				return nil, errNegative
			}
			add := 1
			if differs(p.Result) {
				add = 2
			}
			return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: p.Result + add})
		})
	}
	never := func(int) bool { return false }
	e.startPlugin(t, plugins.Spec{Name: "live", Version: "1", Triggers: []string{events.TaskExecutorRunTask}, Plugin: plus(never, never)})
	e.startPlugin(t, plugins.Spec{Name: "cand", Version: "2", Mode: plugins.Shadow, ShadowOf: "live",
		Triggers: []string{events.TaskExecutorRunTask},
		Plugin:   plus(func(n int) bool { return n%4 == 0 }, func(n int) bool { return n == 5 })})
	const tasks = 12
	for i := range tasks {
		got := e.run(t, i)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	}
	e.catchUp(t)

	var sl console.ShadowList
	require.Equal(t, http.StatusOK, e.get(t, "/api/v1/shadows", &sl))
	require.Len(t, sl.Shadows, 1)
	sh := sl.Shadows[0]
	require.Equal(t, "cand", sh.Name)
	require.Equal(t, "live", sh.ShadowOf)
	require.Len(t, sh.Stats, 1)
	require.Equal(t, "2", sh.Stats[0].Version)
	require.Equal(t, tasks, sh.Stats[0].Calls)
	require.True(t, sh.Stats[0].Shadow)
	// 0, 4 and 8 differ; 5 fails; the rest agree.
	d := sh.Divergence
	require.Equal(t, []int{tasks, tasks, 3, 1, 0, 8, 0}, []int{d.Calls, d.Compared, d.Different, d.Errors, d.Timeouts, d.Identical, d.Unpaired})
	require.InDelta(t, 4.0/tasks, d.Rate, 1e-12)
	require.Equal(t, 1, sh.Stats[0].Outcomes[string(events.OutcomeError)], "%v", sh.Stats[0].Outcomes)

	// The same figures as qtasks-replay shadow reads from the whole log.
	want, err := e.view.ShadowStats(apiCtx(t), "cand", "live", time.Time{})
	require.NoError(t, err)
	require.Equal(t, want, d)

	require.Equal(t, http.StatusOK, e.get(t, "/api/v1/shadows?of=live", &sl))
	require.Len(t, sl.Shadows, 1)
	require.Equal(t, http.StatusOK, e.get(t, "/api/v1/shadows?of=other", &sl))
	require.Empty(t, sl.Shadows)
	var bad console.Error
	require.Equal(t, http.StatusBadRequest, e.get(t, "/api/v1/shadows?of=a.b", &bad))
	require.Contains(t, bad.Error, "not a plugin name")
}
