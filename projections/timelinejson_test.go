package projections_test

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/projections"
)

// AppendTimelineJSON writes what json.Marshal writes for TimelineOf's
// Timeline, byte for byte: on rows as the projector writes them and on
// rows it would not write but a projection could hold (data that is not
// compact or holds characters json.Marshal escapes, escaped strings in a
// call, diffs stored by an older version, calls without their sequences,
// a shadow of a live plugin, several attempts, operators' actions).
func TestAppendTimelineJSON(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	path := filepath.Join(t.TempDir(), "timeline.db")
	db, err := projections.Open(ctx, path, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	raw, err := sql.Open("sqlite3", projections.DSN(path))
	require.NoError(t, err)
	defer raw.Close()
	changes, err := projections.Diff([]byte(`{"result":3}`), []byte(`{"result":30}`))
	require.NoError(t, err)
	diffs, err := json.Marshal([][]projections.Change{changes, nil})
	require.NoError(t, err)
	for _, q := range []string{
		`INSERT INTO task_keys (key, id) VALUES (1, 'a'), (2, 'b'), (3, 'c')`,
		`INSERT INTO tasks (key, id, name, queue, priority, status, attempt, retries_left, args_submitted, kw_submitted,
			args_executed, kw_executed, result, error, worker, tags, extra, created_at, queued_at, finished_at, updated_at, first_seq, last_seq)
			VALUES (1, 'a', 'add', 'default', 2, 'error', 2, 0, '[]', '{ "a" : "<b>" }', '[]', '{"a":1}', NULL, 'boom "x"', 'node-1',
			'["t1","<t2>"]', '{"x":"y z"}', '2026-11-01T00:00:00.000000000Z', '2026-11-01T00:00:00.100000000Z',
			'2026-11-01T00:00:01.000000000Z', '2026-11-01T00:00:01.000000000Z', 1, 40),
			(2, 'b', 'add', 'default', 0, 'new', 1, 0, '[]', '{}', NULL, NULL, NULL, '', '', NULL, NULL,
			'2026-11-01T00:00:02.000000000Z', NULL, NULL, NULL, 41, 41)`,
		`INSERT INTO attempts (task_key, attempt, status, worker, runs, queued_at, started_at, finished_at, result, error, retry_child, final_seq)
			VALUES (1, 1, 'error', 'node-1', 1, '2026-11-01T00:00:00.100000000Z', '2026-11-01T00:00:00.200000000Z',
			'2026-11-01T00:00:00.300000000Z', NULL, 'first', '', 20),
			(1, 2, 'error', 'node-2', 2, '2026-11-01T00:00:00.400000000Z', NULL, '2026-11-01T00:00:01.000000000Z', '[1, 2]', 'boom "x"', '', NULL)`,
		// A fact of a phase message (idx 1), a fact with two calls (the
		// second without a patch, its sequences in plugin_events), one
		// with a shadow of a live plugin, a failed one, a replayed one.
		`INSERT INTO facts (pos, seq, idx, task_key, trigger, component, attempt, run, time, event_id, source, data, replay, diffs) VALUES
			(1, 5, 0, 1, 'qtasks_add_task_before_broker', 'client', 1, 1, '2026-11-01T00:00:00.000000000Z', 'a:1', 'qtasks/c',
				'{"input": {"kw" : {"a":"<b>"}} ,"output":{"kw":{"a":"\u003cb>"}}}', NULL, NULL),
			(2, 6, 1, 1, 'task_executor_run_task', 'task_executor', 1, 1, '2026-11-01T00:00:00.200000000Z', 'a:2', 'qtasks/n',
				'{"input":{"result":3},"output":{"result":30},"calls":[{"plugin":"scale","version":"1","invocation":"i1",
				"outcome":"applied","content_type":"application/json-patch+json","patch":[ {"op":"replace","path":"/result","value":30} ],
				"latency_us":300,"invoke_seq":3,"patch_seq":4},{"plugin":"sl\u00f6w","invocation":"i2","outcome":"timeout",
				"policy":"ignore","reason":"no patch within 5ms <&>","latency_us":5000}]}', NULL, '` + string(diffs) + `'),
			(3, 7, 0, 1, 'task_executor_run_task', 'task_executor', 2, 1, '2026-11-01T00:00:00.500000000Z', 'a:3', 'qtasks/n',
				'{"input":{"result":3},"output":{"result":60},"calls":[
				{"plugin":"scale","outcome":"applied","content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":30}],"latency_us":1,"invoke_seq":8,"patch_seq":9},
				{"plugin":"double","outcome":"applied","content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":60}],"latency_us":2,"invoke_seq":10,"patch_seq":11},
				{"plugin":"scale-next","outcome":"shadow","shadow":true,"content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":36}],"latency_us":3,"invoke_seq":12,"patch_seq":13}]}',
				NULL, '[[{"op":"replace","path":"/result","old":3,"new":30}],[{"op":"replace","path":"/result","old":30,"new":60}],[{"op":"replace","path":"/result","old":60,"new":36}]]'),
			(4, 14, 0, 1, 'task_executor_task_error', 'task_executor', 2, 1, NULL, 'a:4', 'qtasks/n',
				'{"input":{"error":"boom"},"failed":"boom \"x\""}', 'replay-1', NULL),
			(5, 15, 0, 1, 'storage_remove_finished_task', 'storage', 2, 1, '2026-11-01T00:00:01.000000000Z', 'a:5', 'qtasks/n',
				'{"calls":[]}', NULL, NULL)`,
		`INSERT INTO plugin_events (seq, kind, task_key, invocation, plugin, trigger) VALUES
			(16, 'invoke', 1, 'i2', 'slöw', 'task_executor_run_task'), (17, 'invoke', 1, 'i2', 'slöw', 'task_executor_run_task'),
			(18, 'invoke', 2, 'i2', 'other', 'task_executor_run_task')`,
		`INSERT INTO operator_actions (seq, task_key, action, attempt, queue, by_whom, reason, time) VALUES
			(20, 1, 'retry', 1, 'default', 'http:1.2.3.4', 'try <again>', '2026-11-01T00:00:00.350000000Z'),
			(21, NULL, 'pause', 0, 'default', 'ops', '', NULL)`,
	} {
		_, err := raw.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	view := openDB(t, path, true)
	for _, tc := range []struct {
		name     string
		id       string
		shadowOf func(string) string
	}{
		{"Registry", "a", func(s string) string { return map[string]string{"scale-next": "scale"}[s] }},
		{"NoRegistry", "a", nil},
		{"NoFacts", "b", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tl, err := view.TimelineOf(ctx, tc.id, tc.shadowOf)
			require.NoError(t, err)
			want, err := json.Marshal(tl)
			require.NoError(t, err)
			got, err := view.AppendTimelineJSON(ctx, []byte("prefix"), tc.id, tc.shadowOf)
			require.NoError(t, err)
			require.Equal(t, "prefix"+string(want), string(got))
		})
	}
	tl, err := view.TimelineOf(ctx, "a", nil)
	require.NoError(t, err)
	require.Len(t, tl.Entries, 5)
	require.Equal(t, uint64(16), tl.Entries[1].Calls[1].InvokeSeq, "from plugin_events")
	require.Equal(t, uint64(3), tl.Entries[1].Calls[0].InvokeSeq, "from the fact")
	require.Len(t, tl.Task.Attempts, 2)
	require.Len(t, tl.Actions, 1)

	for _, id := range []string{"c", "nosuch"} { // c has a key but no task row
		_, err = view.AppendTimelineJSON(ctx, nil, id, nil)
		require.ErrorIs(t, err, projections.ErrNotFound)
	}
}
