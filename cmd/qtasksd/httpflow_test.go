package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// TestHTTPChains starts a passing and a failing chain over HTTP, reads
// them back, and reads a state scope.
func TestHTTPChains(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	b := bustest.Open(t, nil)
	app, err := executor.New(b, nil)
	require.NoError(t, err)
	registerDemoTasks(app)
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.WithoutCancel(ctx)) })
	srv := httptest.NewServer(newHTTPHandler(app, metricsHandler(newRegistry(), slog.Default()), httpConfig{}))
	t.Cleanup(srv.Close)
	do := func(method, path, body string, want int) chainStatus {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, want, resp.StatusCode, string(out))
		var st chainStatus
		if want < 300 {
			require.NoError(t, json.Unmarshal(out, &st))
		}
		return st
	}
	// echo(x=1), then echo given that result: it returns it again.
	st := do(http.MethodPost, "/chains?wait=30s", `{"steps":[{"name":"echo","kw":{"x":1}},{"name":"echo"}]}`, http.StatusCreated)
	require.Equal(t, events.StatusSuccess, st.Status)
	require.Equal(t, 2, st.Steps)
	require.Len(t, st.Tasks, 2)
	require.JSONEq(t, `{"x":1}`, string(st.Tasks[1].Result))
	again := do(http.MethodGet, "/chains/"+st.ID, "", http.StatusOK)
	require.Equal(t, st.Status, again.Status)

	st = do(http.MethodPost, "/chains?wait=30s", `{"steps":[{"name":"echo"},{"name":"fail","kw":{"message":"no"}},{"name":"echo"}]}`, http.StatusCreated)
	require.Equal(t, events.StatusError, st.Status)
	require.Len(t, st.Tasks, 2, "the step after the failed one never ran")

	do(http.MethodPost, "/chains", `{"steps":[]}`, http.StatusBadRequest)
	do(http.MethodPost, "/chains", `{"steps":[{"name":"a.b"}]}`, http.StatusBadRequest)
	do(http.MethodPost, "/chains", `nope`, http.StatusBadRequest)
	do(http.MethodGet, "/chains/chain-none", "", http.StatusNotFound)

	_, err = app.State("shop").Set(ctx, "stock", 3)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/state/shop", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var sv struct {
		Scope  string                     `json:"scope"`
		Values map[string]json.RawMessage `json:"values"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&sv))
	require.JSONEq(t, "3", string(sv.Values["stock"]))
}

// TestChainCommand runs "qtasksd chain" against a daemon: a passing chain
// (exit 0, its status printed), a failing one (exit 4), a bad step (exit 2).
func TestChainCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, url := startDaemon(t, dir)
	code, out := runCmd(t, dir, "chain", `{"name":"echo","kw":{"x":1}}`, "echo", "--wait", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var st chainStatus
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, events.StatusSuccess, st.Status)
	require.Len(t, st.Tasks, 2)
	require.JSONEq(t, `{"x":1}`, string(st.Tasks[1].Result))

	code, out = runCmd(t, dir, "chain", "echo", `{"name":"fail"}`, "echo", "--wait", "--nats-url", url)
	require.Equal(t, exitTask, code, out)
	code, out = runCmd(t, dir, "chain", "a.b", "--nats-url", url)
	require.Equal(t, exitUsage, code, out)
	code, out = runCmd(t, dir, "chain", "--nats-url", url)
	require.Equal(t, exitUsage, code, out)
}
