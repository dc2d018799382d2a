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

// A client's deeply nested kw comes back about as large as it went in: the
// record used to be indented all the way down, which grows with the square
// of the depth (a 40 KB kw made an 800 MB response and 1.8 GB of heap).
func TestHTTPDeepRecord(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	b := bustest.Open(t, nil)
	app, err := executor.New(b, nil)
	require.NoError(t, err)
	registerDemoTasks(app)
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.WithoutCancel(ctx)) })
	srv := httptest.NewServer(newHTTPHandler(app, metricsHandler(newRegistry(), slog.Default()), http.NotFoundHandler()))
	t.Cleanup(srv.Close)

	const depth = 3000
	kw := `{"x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
	get := func(method, path, body string) []byte {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Less(t, resp.StatusCode, 300, string(out))
		return out
	}
	out := get(http.MethodPost, "/tasks/echo?wait=30s", kw)
	require.Less(t, len(out), 10*len(kw), "json.Indent wrote some 2 * depth^2 bytes per copy")
	var task events.Task
	require.NoError(t, json.Unmarshal(out, &task))
	require.Equal(t, events.StatusSuccess, task.Status)
	require.JSONEq(t, kw, string(task.Kw))

	out = get(http.MethodGet, "/tasks/"+task.ID, "")
	require.Less(t, len(out), 10*len(kw))
	require.NoError(t, json.Unmarshal(out, &task))
	require.JSONEq(t, kw, string(task.Result), "echo returns its kw")
}
