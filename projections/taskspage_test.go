package projections_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/projections"
)

// AppendTasksJSON writes what json.Marshal writes for the tasks of the
// page Tasks returns, byte for byte, and the same Next: on rows as the
// projector writes them and on rows it would not write but a projection
// could hold (times in other forms or none, a day that does not exist,
// the zero time, JSON columns not compact or with characters json.Marshal
// escapes, tags), page after page.
func TestAppendTasksJSON(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	path := filepath.Join(t.TempDir(), "tasks.db")
	db, err := projections.Open(ctx, path, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	raw, err := sql.Open("sqlite3", projections.DSN(path))
	require.NoError(t, err)
	defer raw.Close()
	times := []any{
		"2026-11-01T00:00:00.000000000Z", "2026-11-01T00:00:00.120000000Z", "2026-11-01T00:00:00.123456789Z",
		"2024-02-29T23:59:59.000000001Z", nil, "", "2026-02-30T00:00:00.000000000Z", "0001-01-01T00:00:00.000000000Z",
		"2026-11-01T01:00:00+01:00", "2026-11-01T00:00:00.5Z", "garbage", "0000-01-01T00:00:00.000000000Z",
	}
	jsons := []any{nil, `[]`, `{"a":1,"b":[true,null]}`, ` { "a" : "<b>" } `, `"\u2028"`, `3`}
	tags := []any{nil, `[]`, `["t1","<t2>"]`, `["x"]`}
	for i := range 60 {
		at := func(k int) any { return times[(i+k)%len(times)] }
		js := func(k int) any { return jsons[(i*7+k)%len(jsons)] }
		id := fmt.Sprintf("task-%02d", i)
		_, err := raw.ExecContext(ctx, `INSERT INTO task_keys (key, id) VALUES (?, ?)`, i+1, id)
		require.NoError(t, err)
		_, err = raw.ExecContext(ctx, `INSERT INTO tasks (key, id, name, queue, priority, status, attempt, retries_left,
			args_submitted, kw_submitted, args_executed, kw_executed, result, error, reason, worker, tags, extra,
			created_at, queued_at, started_at, executed_at, finished_at, updated_at, first_seq, last_seq)
			VALUES (?, ?, ?, ?, ?, ?, 1, 0, ?, ?, ?, ?, ?, ?, '', 'node-1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			i+1, id, []string{"add", "naïve", "<b>"}[i%3], []string{"default", "mail"}[i%2], i%5-2,
			[]string{"success", "error", "new"}[i%3], js(0), js(1), js(2), js(3), js(4), []string{"", `boom "x"`}[i%2],
			tags[i%len(tags)], js(5), at(0), at(1), at(2), at(3), at(4), at(5), i*10+1, i*10+9)
		require.NoError(t, err)
	}
	view := openDB(t, path, true)
	for _, f := range []projections.TaskFilter{
		{}, {Limit: 1}, {Limit: 7}, {Limit: 60}, {Limit: 61}, {Status: "error", Limit: 4}, {Queue: "mail", Limit: 9},
	} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			t.Parallel()
			seen := 0
			for {
				page, err := view.Tasks(ctx, f)
				require.NoError(t, err)
				want, err := json.Marshal(page.Tasks)
				require.NoError(t, err)
				got, next, err := view.AppendTasksJSON(ctx, []byte("prefix"), f)
				require.NoError(t, err)
				require.Equal(t, "prefix"+string(want), string(got))
				require.Equal(t, page.Next, next)
				seen += len(page.Tasks)
				if next == "" {
					break
				}
				f.Cursor = next
			}
			require.Positive(t, seen)
		})
	}
	_, _, err = view.AppendTasksJSON(ctx, nil, projections.TaskFilter{Cursor: "not a cursor!"})
	require.ErrorIs(t, err, projections.ErrBadCursor)
}
