package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	checkSchema(t, method, path, resp.StatusCode, out)
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
	e.startPlugin(t, plugins.Spec{
		Name: "cand", Version: "2", Mode: plugins.Shadow, ShadowOf: "live",
		Triggers: []string{events.TaskExecutorRunTask},
		Plugin:   plus(func(n int) bool { return n%4 == 0 }, func(n int) bool { return n == 5 }),
	})
	const tasks = 12
	var ids []string
	for i := range tasks {
		got := e.run(t, i)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
		ids = append(ids, got.ID)
	}
	e.catchUp(t)
	for _, id := range ids[4:6] { // firings with shadows, one diverging
		e.requireTimelineJSON(t, id)
	}

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

	// Again after more firings: the facts compared before are counted as
	// they were (RecentShadowStats keeps what each added), the new ones
	// compared.
	for i := tasks; i < tasks+4; i++ {
		got := e.run(t, i)
		require.Equal(t, events.StatusSuccess, got.Status, got.Error)
	}
	e.catchUp(t)
	require.Equal(t, http.StatusOK, e.get(t, "/api/v1/shadows", &sl))
	require.Len(t, sl.Shadows, 1)
	want, err = e.view.ShadowStats(apiCtx(t), "cand", "live", time.Time{})
	require.NoError(t, err)
	require.Equal(t, want, sl.Shadows[0].Divergence)
	require.Equal(t, tasks+4, want.Calls)
	require.Equal(t, 4, want.Different, "12 differs too")

	require.Equal(t, http.StatusOK, e.get(t, "/api/v1/shadows?of=live", &sl))
	require.Len(t, sl.Shadows, 1)
	require.Equal(t, http.StatusOK, e.get(t, "/api/v1/shadows?of=other", &sl))
	require.Empty(t, sl.Shadows)
	var bad console.Error
	require.Equal(t, http.StatusBadRequest, e.get(t, "/api/v1/shadows?of=a.b", &bad))
	require.Contains(t, bad.Error, "not a plugin name")
}

// logLast is the event log's last sequence.
// requireTimelineJSON checks that the timeline the API writes by hand
// (projections.DB.AppendTimelineJSON and the projection spliced in) is
// what json.Marshal writes for a console.TimelineDetail, byte for byte.
func (e *apiEnv) requireTimelineJSON(t *testing.T, id string) {
	t.Helper()
	ctx := apiCtx(t)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/v1/tasks/"+id+"/timeline", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var got console.TimelineDetail
	require.NoError(t, json.Unmarshal(body, &got))
	shadows := map[string]string{}
	for _, p := range e.b.Registry().List() {
		if p.Mode == events.ModeShadow {
			shadows[p.Name] = p.ShadowOf
		}
	}
	tl, err := e.view.TimelineOf(ctx, id, func(s string) string { return shadows[s] })
	require.NoError(t, err)
	want, err := json.Marshal(console.TimelineDetail{Timeline: tl, Projection: got.Projection})
	require.NoError(t, err)
	require.Equal(t, string(want), string(body))
}

func (e *apiEnv) logLast(t *testing.T) uint64 {
	t.Helper()
	info, err := e.b.EventStream().Info(apiCtx(t))
	require.NoError(t, err)
	return info.State.LastSeq
}

// Every endpoint of the API answers as docs/openapi.json says, success and
// refusal alike (each answer is checked against the document by do), and
// every bad request gets a 4xx with a reason and changes nothing: not the
// log, not the task, not the queue.
func TestAPIMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	e.startPlugin(t, plugins.Spec{
		Name: "live", Version: "1", Triggers: []string{events.TaskExecutorRunTask},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct{ Result int }
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: p.Result * 10})
		}),
	})
	e.startPlugin(t, plugins.Spec{
		Name: "cand", Version: "2", Mode: plugins.Shadow, ShadowOf: "live",
		Triggers: []string{events.TaskExecutorRunTask}, Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})
	ok := e.run(t, 4)
	require.Equal(t, events.StatusSuccess, ok.Status, ok.Error)
	failed := e.run(t, -1)
	require.Equal(t, events.StatusError, failed.Status)
	e.catchUp(t)

	// Reads.
	var tl console.TaskList
	require.Equal(t, 200, e.get(t, "/api/v1/status", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/tasks?limit=1", &tl))
	require.Len(t, tl.Tasks, 1)
	require.NotEmpty(t, tl.Next)
	require.Equal(t, 200, e.get(t, "/api/v1/tasks?limit=1&cursor="+url.QueryEscape(tl.Next), &tl))
	require.Equal(t, 200, e.get(t, "/api/v1/tasks?status=error&name=n&queue=default&since=1h&until="+url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), &tl))
	require.Len(t, tl.Tasks, 1)
	require.Equal(t, 200, e.get(t, "/api/v1/tasks?tag=none", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/tasks/"+ok.ID, nil))
	var td console.TimelineDetail
	require.Equal(t, 200, e.get(t, "/api/v1/tasks/"+ok.ID+"/timeline", &td))
	require.NotEmpty(t, td.Entries)
	e.requireTimelineJSON(t, ok.ID)
	require.Equal(t, 200, e.get(t, "/api/v1/tasks/"+ok.ID+"/blame", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/calls?plugin=live&limit=10", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/calls?task="+ok.ID+"&outcome=applied&trigger="+events.TaskExecutorRunTask+"&version=1", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/plugins", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/shadows", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/queues", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/throughput?window=10m&step=1m", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/rejected?after=0&limit=5", nil))
	require.Equal(t, 200, e.get(t, "/api/v1/deadletters?before=1000&limit=5", nil))

	// Bad reads: 4xx, each with a reason naming what is wrong.
	for path, want := range map[string]string{
		"/api/v1/tasks?status=done":              "status",
		"/api/v1/tasks?limit=1001":               "limit",
		"/api/v1/tasks?limit=x":                  "limit",
		"/api/v1/tasks?since=yesterday":          "since",
		"/api/v1/tasks?until=-5m":                "until",
		"/api/v1/tasks?cursor=forged":            "cursor",
		"/api/v1/calls?limit=-1":                 "limit",
		"/api/v1/calls?cursor=forged":            "cursor",
		"/api/v1/shadows?of=a.b":                 "of",
		"/api/v1/throughput?window=1y":           "window",
		"/api/v1/throughput?step=1ms":            "step",
		"/api/v1/throughput?window=168h&step=1s": "buckets",
		"/api/v1/rejected?after=-1":              "after",
		"/api/v1/deadletters?before=x":           "before",
		"/api/v1/deadletters?limit=5000":         "limit",
	} {
		var er console.Error
		require.Equal(t, 400, e.get(t, path, &er), path)
		require.Contains(t, er.Error, want, path)
	}
	var er console.Error
	require.Equal(t, 404, e.get(t, "/api/v1/tasks/nosuch", &er))
	require.Equal(t, 404, e.get(t, "/api/v1/tasks/nosuch/timeline", &er))
	require.Equal(t, 404, e.get(t, "/api/v1/tasks/nosuch/blame", &er))
	require.Equal(t, 404, e.get(t, "/api/v1/nosuch", &er))
	require.Contains(t, er.Error, "no such API endpoint")

	// Bad actions change nothing: the log, the tasks and the queue stay as
	// they were.
	before := e.logLast(t)
	long := `{"reason":"` + strings.Repeat("x", 1025) + `"}`
	for _, c := range []struct {
		path, ct, body string
		code           int
		want           string
	}{
		{"/api/v1/tasks/" + failed.ID + "/retry", "", `{}`, 415, "Content-Type"},
		{"/api/v1/tasks/" + failed.ID + "/retry", "text/plain", `{}`, 415, "Content-Type"},
		{"/api/v1/tasks/" + failed.ID + "/retry", "application/json", `{"reason":`, 400, "body"},
		{"/api/v1/tasks/" + failed.ID + "/retry", "application/json", `{"why":"x"}`, 400, "unknown field"},
		{"/api/v1/tasks/" + failed.ID + "/retry", "application/json", long, 400, "reason"},
		{"/api/v1/tasks/" + ok.ID + "/retry", "application/json", `{}`, 409, ""},
		{"/api/v1/tasks/" + ok.ID + "/cancel", "application/json", `{}`, 409, ""},
		{"/api/v1/tasks/nosuch/cancel", "application/json", `{}`, 404, ""},
		{"/api/v1/tasks/nosuch/retry", "application/json", `{}`, 404, ""},
		{"/api/v1/queues/a.b/pause", "application/json", `{}`, 400, ""},
		{"/api/v1/queues/default/pause", "application/json", long, 400, "reason"},
	} {
		var er console.Error
		require.Equal(t, c.code, e.do(t, "POST", c.path, c.ct, c.body, &er), "%s %s", c.path, c.body)
		require.NotEmpty(t, er.Error)
		require.Contains(t, er.Error, c.want, c.path)
	}
	require.Equal(t, before, e.logLast(t), "a refused action wrote to the log")
	e.catchUp(t)
	var tdet console.TaskDetail
	require.Equal(t, 200, e.get(t, "/api/v1/tasks/"+failed.ID, &tdet))
	require.Equal(t, 1, tdet.Task.Attempt)
	require.Equal(t, events.StatusError, tdet.Task.Status)
	var ql struct{ Queues []console.Queue }
	require.Equal(t, 200, e.get(t, "/api/v1/queues", &ql))
	for _, q := range ql.Queues {
		require.Nil(t, q.Paused, q.Name)
	}

	// Actions: pause, a queued task cancelled, resume, retry.
	require.Equal(t, 200, e.do(t, "POST", "/api/v1/queues/default/pause", "application/json", `{"reason":"maintenance"}`, nil))
	sub, err := e.app.Submit(apiCtx(t), "n", map[string]int{"N": 1}, nil)
	require.NoError(t, err)
	var ar console.ActionResult
	require.Equal(t, 200, e.do(t, "POST", "/api/v1/tasks/"+sub.ID+"/cancel", "application/json", `{"reason":"not now"}`, &ar))
	require.Equal(t, sub.ID, ar.Task.ID)
	require.Equal(t, 200, e.do(t, "POST", "/api/v1/queues/default/resume", "application/json", ``, nil))
	require.Equal(t, 201, e.do(t, "POST", "/api/v1/tasks/"+failed.ID+"/retry", "application/json", `{"reason":"once more"}`, &ar))
	require.Equal(t, 2, ar.Task.Attempt)

	// Every operation of the document was exercised with its success code.
	seen := seenAnswers()
	for tpl, ops := range openAPI.doc.Paths {
		for op := range ops {
			code := 200
			if strings.HasSuffix(tpl, "/retry") {
				code = 201
			}
			key := fmt.Sprintf("%s %s %d", strings.ToUpper(op), tpl, code)
			require.True(t, seen[key], "no test got %s", key)
		}
	}
}

// Without a projection (qtasksd --no-projection), the shadows endpoint
// still lists the registered shadows, with empty statistics, so that the
// plugins page works.
func TestShadowsWithoutProjection(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	e := &apiEnv{b: b}
	e.startPlugin(t, plugins.Spec{
		Name: "cand", Version: "2", Mode: plugins.Shadow, ShadowOf: "live",
		Triggers: []string{events.TaskExecutorRunTask}, Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})
	e.srv = httptest.NewServer(console.New(console.Config{Bus: b, Logger: bustest.Logger(t)}))
	t.Cleanup(e.srv.Close)
	var sl console.ShadowList
	bustest.WaitFor(t, apiLimit, "the shadow to be listed", func() bool {
		require.Equal(t, http.StatusOK, e.get(t, "/api/v1/shadows", &sl))
		return len(sl.Shadows) == 1
	})
	require.Equal(t, "cand", sl.Shadows[0].Name)
	require.Equal(t, "live", sl.Shadows[0].Divergence.ShadowOf)
	require.Empty(t, sl.Shadows[0].Stats)
	require.Zero(t, sl.Shadows[0].Divergence.Calls)
}

// A pause key that no executor wrote (a publish ack a plugin had the
// server store there: internal/attack's TestAttackControlEcho) pauses no
// worker, and the queues page lists the queue as running rather than
// failing for every queue.
func TestQueuesIgnoreAForgedPause(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	_, err := e.b.JetStream().Publish(apiCtx(t), "$KV."+bus.BucketControl+".pause.default", []byte(`{"stream":"QTASKS_EVENTS","seq":7}`))
	require.NoError(t, err)
	_, err = e.b.Paused(apiCtx(t), "default")
	require.ErrorIs(t, err, bus.ErrNotMark)
	var ql struct{ Queues []console.Queue }
	require.Equal(t, 200, e.get(t, "/api/v1/queues", &ql))
	require.NotEmpty(t, ql.Queues)
	for _, q := range ql.Queues {
		require.Nil(t, q.Paused, q.Name)
	}
}
