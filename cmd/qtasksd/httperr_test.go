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
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/executor"
)

// faultyServer serves qtasksd's HTTP handler over a bus that reaches its
// NATS server through a proxy the test controls.
func faultyServer(t *testing.T) (h *httptest.Server, p *bustest.Proxy, b *bus.Bus) {
	t.Helper()
	srv := bustest.Open(t, nil) // the server's own bus, which the proxy does not touch
	p = bustest.NewProxy(t, srv.ClientURL())
	b = bustest.Open(t, &bus.Config{URL: p.URL(), PublishTimeout: time.Second})
	app, err := executor.New(b, nil)
	require.NoError(t, err)
	registerDemoTasks(app)
	reg := newRegistry()
	registerConnMetrics(reg, b)
	h = httptest.NewServer(newHTTPHandler(app, metricsHandler(reg, slog.Default()), httpConfig{}))
	t.Cleanup(h.Close)
	return h, p, b
}

func do(t *testing.T, method, url, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(out)
}

// /healthz said 200 while JetStream took no writes (4-10 s of failed
// submissions in a leader election), and a submission that failed for the
// bus's sake was answered 400. Here the server's replies stop coming while
// the connection stays up.
func TestHTTPWhenJetStreamDoesNotAnswer(t *testing.T) {
	t.Parallel()
	h, p, _ := faultyServer(t)
	code, _, body := do(t, http.MethodGet, h.URL+"/healthz", "")
	require.Equal(t, http.StatusOK, code, body)
	code, hdr, body := do(t, http.MethodPost, h.URL+"/tasks/echo", `{"x":1}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.True(t, strings.HasPrefix(hdr.Get("Idempotency-Key"), executor.GeneratedKeyPrefix))

	code, _, body = do(t, http.MethodPost, h.URL+"/tasks/a.b", `{}`)
	require.Equal(t, http.StatusBadRequest, code, "a bad task name is the request's fault: %s", body)

	p.Hold()
	defer p.Release()
	bustest.WaitFor(t, waitLimit, "/healthz to answer 503", func() bool {
		code, _, _ := do(t, http.MethodGet, h.URL+"/healthz", "")
		return code == http.StatusServiceUnavailable // once the cached 200 has aged
	})
	code, _, body = do(t, http.MethodPost, h.URL+"/tasks/echo", `{"x":1}`, "Idempotency-Key", "k-503")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
}

// A submission whose task message may have been stored is answered 503
// with "outcome": "unknown", the task id and the key to retry with; the
// retry gets the task, queued.
func TestHTTPOutcomeUnknown(t *testing.T) {
	t.Parallel()
	h, p, _ := faultyServer(t)
	// From the moment the task message is sent, the server's replies are
	// held: the task message's ack is lost.
	p.HoldOn("qtasks.run.")
	code, hdr, body := do(t, http.MethodPost, h.URL+"/tasks/echo", `{"x":1}`)
	p.Release()
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	var unknown map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &unknown), body)
	require.Equal(t, "unknown", unknown["outcome"])
	require.NotEmpty(t, unknown["task_id"])
	require.Equal(t, unknown["idempotency_key"], hdr.Get("Idempotency-Key"))

	code, _, body = do(t, http.MethodPost, h.URL+"/tasks/echo", `{"x":1}`, "Idempotency-Key", unknown["idempotency_key"])
	require.Equal(t, http.StatusOK, code, "the retry finds the task: a duplicate: %s", body)
	var task struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &task))
	require.Equal(t, unknown["task_id"], task.ID)
}

// The connection metrics follow a loss and a reconnection.
func TestNATSConnectionMetrics(t *testing.T) {
	t.Parallel()
	h, p, b := faultyServer(t)
	metric := func(name string) string {
		_, _, body := do(t, http.MethodGet, h.URL+"/metrics", "")
		for l := range strings.SplitSeq(body, "\n") {
			if after, ok := strings.CutPrefix(l, name+" "); ok {
				return after
			}
		}
		return ""
	}
	require.Equal(t, "1", metric("qtasks_nats_connected"))
	require.Equal(t, "0", metric("qtasks_nats_disconnects_total"))
	p.Refuse()
	p.Cut()
	bustest.WaitFor(t, waitLimit, "the loss to be seen", func() bool { return metric("qtasks_nats_connected") == "0" })
	require.Equal(t, "1", metric("qtasks_nats_disconnects_total"))
	code, _, body := do(t, http.MethodGet, h.URL+"/healthz", "")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	p.Accept()
	bustest.WaitFor(t, waitLimit, "the reconnection", func() bool { return b.ConnStats().Reconnects == 1 })
	require.Equal(t, "1", metric("qtasks_nats_connected"))
	require.Equal(t, "1", metric("qtasks_nats_reconnects_total"))
}
