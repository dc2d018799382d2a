package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

// POST /tasks/{name}: 201 for a task made, 200 for the key's existing one,
// 409 for the key with other arguments (unless ?on_conflict=existing);
// unique options in the query; bad ones are a 400 that submits nothing.
func TestHTTPDuplicateAndConflict(t *testing.T) {
	t.Parallel()
	hb := setupHTTP(t, httpConfig{})
	// Bad unique options: a 400 that writes nothing (checked before any
	// task runs, whose facts would grow the log).
	before := hb.stored(t)
	for _, q := range []string{"unique=color", "unique_period=1ms", "unique=", "on_conflict=maybe"} {
		code, body := hb.do(t, http.MethodPost, "/tasks/add?"+q, `{}`, nil, "", "")
		require.Equal(t, http.StatusBadRequest, code, "%s: %s", q, body)
	}
	hb.requireUnchanged(t, before, "bad unique options")

	key := map[string]string{"Idempotency-Key": "http-1"}
	code, body := hb.do(t, http.MethodPost, "/tasks/add", `{"a":1,"b":2}`, key, "", "")
	require.Equal(t, http.StatusCreated, code, body)
	var first events.Task
	require.NoError(t, json.Unmarshal([]byte(body), &first))

	code, body = hb.do(t, http.MethodPost, "/tasks/add", `{"b":2, "a":1}`, key, "", "")
	require.Equal(t, http.StatusOK, code, body)
	code, body = hb.do(t, http.MethodPost, "/tasks/add", `{"a":1,"b":3}`, key, "", "")
	require.Equal(t, http.StatusConflict, code, body)
	var conflict struct {
		TaskID  string   `json:"task_id"`
		Differs []string `json:"differs"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &conflict), body)
	require.Equal(t, first.ID, conflict.TaskID)
	require.Equal(t, []string{"kw"}, conflict.Differs)
	code, body = hb.do(t, http.MethodPost, "/tasks/add?on_conflict=existing", `{"a":1,"b":3}`, key, "", "")
	require.Equal(t, http.StatusOK, code, body)

	code, body = hb.do(t, http.MethodPost, "/tasks/add?unique=args&unique_period=1h", `{"a":5,"b":5}`, nil, "", "")
	require.Equal(t, http.StatusCreated, code, body)
	code, body = hb.do(t, http.MethodPost, "/tasks/add?unique=args&unique_period=1h", `{"a":5,"b":5}`, nil, "", "")
	require.Equal(t, http.StatusOK, code, body)
}

// POST /tasks: a batch, one result per entry with the status it would
// have alone; bad entries fail alone.
func TestHTTPBatch(t *testing.T) {
	t.Parallel()
	hb := setupHTTP(t, httpConfig{})
	var entries []string
	for i := range 50 {
		entries = append(entries, fmt.Sprintf(`{"name":"add","kw":{"a":%d,"b":1}}`, i))
	}
	entries = append(entries,
		`{"name":"add","kw":{"a":1},"key":"b-1"}`, // 50: created
		`{"name":"add","kw":{"a":1},"key":"b-1"}`, // 51: duplicate
		`{"name":"add","kw":{"a":2},"key":"b-1"}`, // 52: conflict
		`{"name":"a.b"}`,                          // 53: bad name
		`{"name":"add","kw":[1]}`,                 // 54: kw not an object
		`{"name":"add","colour":"blue"}`,          // 55: unknown field
		`"add"`,                                   // 56: not an object
		`{"name":"add","unique":{"by":["args"]}}`, // 57: unique, created
	)
	code, body := hb.do(t, http.MethodPost, "/tasks", "["+strings.Join(entries, ",")+"]", nil, "", "")
	require.Equal(t, http.StatusOK, code, body)
	var out struct {
		Results []batchResult `json:"results"`
		batchSummary
	}
	require.NoError(t, json.Unmarshal([]byte(body), &out))
	require.Len(t, out.Results, len(entries))
	want := map[int]int{50: 201, 51: 200, 52: 409, 53: 400, 54: 400, 55: 400, 56: 400, 57: 201}
	for i, r := range out.Results {
		w, ok := want[i]
		if !ok {
			w = http.StatusCreated
		}
		require.Equal(t, w, r.Status, "entry %d: %+v", i, r)
		if w < 300 {
			require.NotNil(t, r.Task, "entry %d", i)
		} else {
			require.NotEmpty(t, r.Error, "entry %d", i)
		}
	}
	require.True(t, out.Results[51].Duplicate)
	require.Equal(t, out.Results[50].Task.ID, out.Results[51].Task.ID)
	require.Equal(t, []string{"kw"}, out.Results[52].Differs)
	require.Equal(t, batchSummary{Created: 52, Duplicates: 1, Failed: 5}, out.batchSummary)

	code, body = hb.do(t, http.MethodPost, "/tasks", `{"name":"add"}`, nil, "", "")
	require.Equal(t, http.StatusBadRequest, code, body)
}
