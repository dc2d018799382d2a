package console

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/projections"
)

// appendTaskListEnd, after the tasks, writes what json.Marshal writes for
// a TaskList.
func TestTaskListJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 17, 4, 5, 123456789, time.UTC)
	tasks := []projections.Task{
		{
			ID: "a", Name: "add", Queue: "default", Status: "success", Attempt: 1, KwSubmitted: json.RawMessage(`{"a":1}`),
			Result: json.RawMessage(`3`), Tags: []string{"x", "<y>"}, CreatedAt: at, FinishedAt: at, FirstSeq: 1, LastSeq: 27,
		},
		{ID: "b", Name: "naïve", Queue: "q", Status: "error", Error: "boom \"quoted\"", CreatedAt: at},
	}
	for _, tl := range []TaskList{
		{TaskPage: projections.TaskPage{Tasks: []projections.Task{}}},
		{TaskPage: projections.TaskPage{Tasks: tasks[:1]}, Projection: Projection{Applied: 10, LogLast: 12, Lag: 2}},
		{TaskPage: projections.TaskPage{Tasks: tasks, Next: "AAECAwQ_-w"}, Projection: Projection{Applied: 1 << 40, LogLast: 1 << 40}},
	} {
		want, err := json.Marshal(tl)
		require.NoError(t, err)
		tasks, err := json.Marshal(tl.Tasks) // as projections.DB.AppendTasksJSON writes them (TestAppendTasksJSON)
		require.NoError(t, err)
		got := appendTaskListEnd(append([]byte(`{"tasks":`), tasks...), tl.Next, tl.Projection)
		require.Equal(t, string(want), string(got))
	}
}
