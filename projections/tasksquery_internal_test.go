package projections

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTasksQueryPlans: the tasks list's statement, whose parameters are
// written +? so that SQLite does not plan it again on every call
// (tasksQuery), has the plan the same statement with "?" has, for every
// combination of filters, on a projection with statistics (ANALYZE): the
// plus hides a value from the planner, and this holds it changes nothing
// else. (Session 7 also pointed it at the console benchmark's projection,
// 1M tasks: the same plans.)
func TestTasksQueryPlans(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := Open(ctx, filepath.Join(t.TempDir(), "p.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	_, err = d.w.ExecContext(ctx, `
		WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
		INSERT INTO task_keys (key, id) SELECT i, printf('id-%06d', i) FROM n`)
	require.NoError(t, err)
	_, err = d.w.ExecContext(ctx, `
		INSERT INTO tasks (key, id, name, queue, status, created_at, first_seq, last_seq)
		SELECT key, id, 'task-' || (key % 7), CASE WHEN key % 50 = 0 THEN 'reports' ELSE 'default' END,
			CASE WHEN key % 100 = 0 THEN 'error' WHEN key % 10 = 0 THEN 'new' ELSE 'success' END,
			strftime('%Y-%m-%dT%H:%M:%fZ', '2026-12-01', '+' || key || ' seconds'), key, key
		FROM task_keys`)
	require.NoError(t, err)
	_, err = d.w.ExecContext(ctx, `INSERT INTO task_tags (tag, task_key) SELECT 'urgent', key FROM task_keys WHERE key % 20 = 0`)
	require.NoError(t, err)
	_, err = d.w.ExecContext(ctx, `ANALYZE`)
	require.NoError(t, err)
	checkTasksQueryPlans(ctx, t, d)
}

func checkTasksQueryPlans(ctx context.Context, t *testing.T, d *DB) {
	t.Helper()
	since := time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)
	cursor := encodeCursor("2026-12-01T03:00:00.000Z", "id-010800")
	for mask := range 1 << 7 {
		f := TaskFilter{}
		if mask&1 != 0 {
			f.Tag = "urgent"
		}
		if mask&2 != 0 {
			f.Status = "error"
		}
		if mask&4 != 0 {
			f.Name = "task-3"
		}
		if mask&8 != 0 {
			f.Queue = "reports"
		}
		if mask&16 != 0 {
			f.Since = since
		}
		if mask&32 != 0 {
			f.Until = since.Add(4 * time.Hour)
		}
		if mask&64 != 0 {
			f.Cursor = cursor
		}
		q, args, err := tasksQuery(f, DefaultLimit)
		require.NoError(t, err)
		plain := strings.ReplaceAll(q, "+?", "?")
		require.NotEqual(t, plain, q)
		require.Equal(t, queryPlan(ctx, t, d, plain, args), queryPlan(ctx, t, d, q, args), "filters %07b: %s", mask, q)
	}
}

// queryPlan is EXPLAIN QUERY PLAN's details of q with args, one line each
// (the ids are opcode addresses, which the plus moves).
func queryPlan(ctx context.Context, t *testing.T, d *DB, q string, args []any) string {
	t.Helper()
	rows, err := d.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
		out = append(out, detail)
	}
	require.NoError(t, rows.Err())
	return strings.Join(out, "\n")
}
