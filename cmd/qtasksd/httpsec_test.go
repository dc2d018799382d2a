package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// httpBundle is an executor with the demo tasks and a "block" task (which
// runs until release is closed), served over HTTP as qtasksd serves it.
type httpBundle struct {
	b       *bus.Bus
	srv     *httptest.Server
	started chan string
	release chan struct{}
}

func setupHTTP(t *testing.T, c httpConfig) *httpBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	hb := &httpBundle{b: bustest.Open(t, nil), started: make(chan string, 16), release: make(chan struct{})}
	app, err := executor.New(hb.b, nil)
	require.NoError(t, err)
	registerDemoTasks(app)
	executor.MustRegister(app, "block", func(ctx context.Context, _ map[string]any) (int, error) {
		hb.started <- executor.TaskFromContext(ctx).ID
		select {
		case <-hb.release:
			return 1, nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}, nil)
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.WithoutCancel(ctx)) })
	h := newHTTPHandler(app, metricsHandler(newRegistry(), slog.New(slog.DiscardHandler)), c)
	hb.srv = httptest.NewUnstartedServer(h)
	hb.srv.Config = newHTTPServer(h, c)
	hb.srv.Start()
	t.Cleanup(hb.srv.Close)
	return hb
}

// do sends a request and returns its status and body.
func (hb *httpBundle) do(t *testing.T, method, path, body string, hdr map[string]string, user, pw string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, hb.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	resp, err := hb.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode == http.StatusUnauthorized {
		require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
	}
	return resp.StatusCode, string(out)
}

// logState is what a refused request must leave as it found: the event
// log's last sequence and the task records' keys.
type logState struct {
	seq   uint64
	tasks map[string]bool
}

// stored reads the log's last sequence and the task records' keys.
func (hb *httpBundle) stored(t *testing.T) logState {
	t.Helper()
	ctx := t.Context()
	s, err := hb.b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	si, err := s.Info(ctx)
	require.NoError(t, err)
	kv, err := hb.b.JetStream().KeyValue(ctx, bus.BucketTasks)
	require.NoError(t, err)
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		err = nil
	}
	require.NoError(t, err)
	st := logState{seq: si.State.LastSeq, tasks: make(map[string]bool, len(keys))}
	for _, k := range keys {
		st.tasks[k] = true
	}
	return st
}

// requireUnchanged fails unless the requests since before added no task
// record and no event of a task not already known. Tasks that were running
// when before was read may still be writing their facts (a run's facts do
// not wait on the test), so the log may have grown by theirs alone.
func (hb *httpBundle) requireUnchanged(t *testing.T, before logState, what string) {
	t.Helper()
	after := hb.stored(t)
	require.Equal(t, before.tasks, after.tasks, "%s: no task record", what)
	if after.seq == before.seq {
		return
	}
	err := hb.b.ReadLog(t.Context(), before.seq+1, nil, func(s bus.Stored) error {
		if s.Seq > after.seq {
			return nil
		}
		if s.Err != nil {
			return s.Err
		}
		if id := s.Event.TaskID; id != "" && !before.tasks[id] {
			return fmt.Errorf("event %s (seq %d) of task %s, which was not there before", s.Event.ID, s.Seq, id)
		}
		return nil
	})
	require.NoError(t, err, "%s: nothing in the log", what)
}

// With --users, every endpoint but /healthz wants credentials of the users
// file: 401 without them or with wrong ones (a plugin's user has none for
// HTTP), 403 for a role that falls short.
func TestHTTPRoles(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("hashed-pw"), bcrypt.MinCost)
	require.NoError(t, err)
	data := `{"users":[
		{"name":"root","password":"root-pw"},
		{"name":"reader","password":"reader-pw","roles":["read"]},
		{"name":"submitter","password":"$hash","roles":["submit"]},
		{"name":"operator","password":"operator-pw","roles":["operate"]},
		{"name":"scale","password":"scale-pw","plugin":{}}]}`
	data = strings.Replace(data, "$hash", string(hash), 1)
	_, err = parseUsers([]byte(data))
	require.NoError(t, err)
	auth, err := parseHTTPUsers([]byte(data))
	require.NoError(t, err)
	hb := setupHTTP(t, httpConfig{Auth: auth, Pprof: true})

	code, body := hb.do(t, http.MethodPost, "/tasks/add?wait=30s", `{"a":1,"b":2}`, nil, "root", "root-pw")
	require.Equal(t, http.StatusOK, code, "ended within the wait: %s", body)
	var task events.Task
	require.NoError(t, json.Unmarshal([]byte(body), &task))
	id := task.ID

	pw := map[string]string{"root": "root-pw", "reader": "reader-pw", "submitter": "hashed-pw", "operator": "operator-pw", "scale": "scale-pw"}
	endpoints := []struct{ method, path, body, need string }{
		{http.MethodGet, "/tasks/" + id, "", "read"},
		{http.MethodPost, "/tasks/add", `{"a":1,"b":2}`, "submit"},
		{http.MethodGet, "/metrics", "", "operate"},
		{http.MethodGet, "/debug/pprof/cmdline", "", "admin"},
	}
	rank := map[string]int{"none": 0, "read": 1, "submit": 2, "operate": 3, "admin": 4}
	roleOf := map[string]string{"root": "admin", "reader": "read", "submitter": "submit", "operator": "operate", "scale": "none"}
	for _, e := range endpoints {
		code, _ := hb.do(t, e.method, e.path, e.body, nil, "", "")
		require.Equal(t, http.StatusUnauthorized, code, "%s %s without credentials", e.method, e.path)
		code, _ = hb.do(t, e.method, e.path, e.body, nil, "root", "wrong")
		require.Equal(t, http.StatusUnauthorized, code, "%s %s with a wrong password", e.method, e.path)
		for user, r := range roleOf {
			code, body := hb.do(t, e.method, e.path, e.body, nil, user, pw[user])
			switch {
			case r == "none":
				require.Equal(t, http.StatusUnauthorized, code, "%s %s as plugin user %s", e.method, e.path, user)
			case rank[r] >= rank[e.need]:
				require.Less(t, code, 300, "%s %s as %s (%s): %s", e.method, e.path, user, r, body)
			default:
				require.Equal(t, http.StatusForbidden, code, "%s %s as %s (%s)", e.method, e.path, user, r)
				require.Contains(t, body, "needs role "+e.need)
			}
		}
	}
	code, _ = hb.do(t, http.MethodGet, "/healthz", "", nil, "", "")
	require.Equal(t, http.StatusOK, code, "/healthz is open to probes")
}

// A bad traceparent or idempotency key is a 400 (a key too large for the
// server's header limit a 431) before anything is written: no fact in the
// log, no task record. A 60 KiB traceparent once made one task write
// 2.4 MB of log; a 950 KiB key was a 400 after the task was queued.
func TestHTTPBadHeadersStoreNothing(t *testing.T) {
	t.Parallel()
	hb := setupHTTP(t, httpConfig{})
	before := hb.stored(t)
	const goodTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		path string
		want int
	}{
		{"huge traceparent", map[string]string{"traceparent": "00-" + strings.Repeat("a", 60<<10)}, "/tasks/echo", http.StatusBadRequest},
		{"malformed traceparent", map[string]string{"traceparent": "00-xyz"}, "/tasks/echo", http.StatusBadRequest},
		{"zero trace id", map[string]string{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, "/tasks/echo", http.StatusBadRequest},
		{"long key", map[string]string{"Idempotency-Key": strings.Repeat("k", 300), "traceparent": goodTP}, "/tasks/echo", http.StatusBadRequest},
		{"key with a space", map[string]string{"Idempotency-Key": "a b"}, "/tasks/echo", http.StatusBadRequest},
		{"wait too long", nil, "/tasks/echo?wait=1h", http.StatusBadRequest},
		{"bad task name", nil, "/tasks/a.b", http.StatusBadRequest},
	} {
		code, body := hb.do(t, http.MethodPost, tc.path, `{"x":1}`, tc.hdr, "", "")
		require.Equal(t, tc.want, code, "%s: %s", tc.name, body)
		if code == http.StatusBadRequest {
			require.Contains(t, body, "no task was submitted", tc.name)
		}
		hb.requireUnchanged(t, before, tc.name)
	}
	// A key past the server's header limit is refused by net/http itself
	// (431), or the connection is cut while the client still writes it.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, hb.srv.URL+"/tasks/echo", strings.NewReader(`{}`))
	require.NoError(t, err)
	req.Header.Set("Idempotency-Key", strings.Repeat("k", 950<<10))
	if resp, err := hb.srv.Client().Do(req); err == nil {
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	}
	hb.requireUnchanged(t, before, "950 KiB key")

	code, body := hb.do(t, http.MethodPost, "/tasks/echo?wait=30s", `{"x":1}`, map[string]string{"traceparent": goodTP, "Idempotency-Key": "order-1"}, "", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, goodTP)
}

// A client that sends its headers and then a body slowly (or never) is
// cut at the read timeout; nothing is submitted.
func TestHTTPSlowBodyCut(t *testing.T) {
	t.Parallel()
	hb := setupHTTP(t, httpConfig{ReadTimeout: 500 * time.Millisecond})
	before := hb.stored(t)
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", hb.srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /tasks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"x\":")
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitLimit)))
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil { // answered before closing
		_ = resp.Body.Close() // the status is what counts; the server drops the connection
		require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	} // else the connection was closed: cut as well
	require.Less(t, time.Since(start), 20*time.Second, "the body was waited on past the read timeout")
	hb.requireUnchanged(t, before, "a body cut by the read timeout")
}

// At most MaxWaits requests wait on ?wait= at once (each holds a watcher):
// another is a 429 with a reason and submits nothing; one without ?wait=
// still goes through.
func TestHTTPWaitCap(t *testing.T) {
	t.Parallel()
	hb := setupHTTP(t, httpConfig{MaxWaits: 1})
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, hb.srv.URL+"/tasks/block?wait=1m", nil)
		resp, err := hb.srv.Client().Do(req)
		if err != nil {
			done <- 0
			return
		}
		_ = resp.Body.Close() // the status is what counts (and no require off the test's goroutine)
		done <- resp.StatusCode
	}()
	select { // the slot is taken before the submission, so it is held now
	case <-hb.started:
	case <-time.After(waitLimit):
		t.Fatal("the waiting task did not start")
	}
	before := hb.stored(t)
	code, body := hb.do(t, http.MethodPost, "/tasks/echo?wait=10s", `{}`, nil, "", "")
	require.Equal(t, http.StatusTooManyRequests, code, body)
	require.Contains(t, body, "1 requests are waiting")
	hb.requireUnchanged(t, before, "a request past the waits' cap") // the blocked task may still be writing its facts
	code, body = hb.do(t, http.MethodPost, "/tasks/echo", `{}`, nil, "", "")
	require.Equal(t, http.StatusCreated, code, body)
	close(hb.release)
	select {
	case code := <-done:
		require.Equal(t, http.StatusOK, code, "released: it ended within the wait")
	case <-time.After(waitLimit):
		t.Fatal("the waiting request did not end")
	}
	code, body = hb.do(t, http.MethodPost, "/tasks/echo?wait=10s", `{}`, nil, "", "")
	require.Equal(t, http.StatusOK, code, "the slot is free again: %s", body)
}
