package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

// The status of an answer says what its record is (issue #16: a task that
// had ended in error was answered 202 Accepted): 202 a task that has not
// ended (no ?wait=, or one that ran out), with Location to poll; 200 a task
// that ended within ?wait=, in success, error or cancel alike (its status
// and error say how); GET /tasks/{id} 200 for any task it has, 404 for
// none.
func TestHTTPSubmitStatusCodes(t *testing.T) {
	t.Parallel()
	hb := setupHTTP(t, httpConfig{})
	record := func(body string) events.Task {
		t.Helper()
		var task events.Task
		require.NoError(t, json.Unmarshal([]byte(body), &task), body)
		return task
	}

	code, body := hb.do(t, http.MethodPost, "/tasks/add?wait=30s", `{"a":1,"b":2}`, nil, "", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, events.StatusSuccess, record(body).Status)

	code, body = hb.do(t, http.MethodPost, "/tasks/fail?wait=30s", `{"message":"boom"}`, nil, "", "")
	require.Equal(t, http.StatusOK, code, "a task that ended in error within the wait: %s", body)
	failed := record(body)
	require.Equal(t, events.StatusError, failed.Status)
	require.Contains(t, failed.Error, "boom")

	code, body = hb.do(t, http.MethodPost, "/tasks/nosuchtask?wait=30s", `{}`, nil, "", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, events.StatusError, record(body).Status, "no worker knows it: it ends in error at once")

	// Made by this request, without a wait: 201, with where to look.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, hb.srv.URL+"/tasks/block", nil)
	require.NoError(t, err)
	resp, err := hb.srv.Client().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.Regexp(t, `^/tasks/[0-9a-f-]{36}$`, resp.Header.Get("Location"))
	require.Equal(t, "false", resp.Header.Get("Qtasks-Duplicate"))
	blocked := hb.waitStarted(t)

	// A wait that runs out before the task ends: 202 and the record as
	// last seen (running).
	start := time.Now()
	code, body = hb.do(t, http.MethodPost, "/tasks/block?wait=200ms", `{}`, nil, "", "")
	require.Equal(t, http.StatusAccepted, code, body)
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	running := record(body)
	hb.waitStarted(t)
	require.Contains(t, []string{events.StatusNew, events.StatusProcess}, running.Status)

	// Reads: 200 for a task in any state, 404 for none.
	for _, id := range []string{failed.ID, blocked, running.ID} {
		code, body = hb.do(t, http.MethodGet, "/tasks/"+id, "", nil, "", "")
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, id, record(body).ID)
	}
	code, body = hb.do(t, http.MethodGet, "/tasks/nosuch", "", nil, "", "")
	require.Equal(t, http.StatusNotFound, code, body)
	close(hb.release)
}

// waitStarted returns the id of the next block task to start.
func (hb *httpBundle) waitStarted(t *testing.T) string {
	t.Helper()
	select {
	case id := <-hb.started:
		return id
	case <-time.After(waitLimit):
		t.Fatal("the block task did not start")
		return ""
	}
}
