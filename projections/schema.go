package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SchemaVersion is the schema version this package writes and reads.
const SchemaVersion = 8

// migration moves the schema from version-1 to version. Migrations run in
// order, each in its own transaction together with its schema_migrations
// row; a new database runs them all, so that a fresh database and a migrated
// one end up with the same tables and rows.
type migration struct {
	version int
	name    string
	sql     string
	// fn runs after sql, in the same transaction (data backfills).
	fn func(ctx context.Context, tx *sql.Tx) error
}

var migrations = []migration{
	{version: 1, name: "tasks, attempts, facts and the trigger history view, plugin calls and events, dead letters, rejected events", sql: schemaV1},
	{version: 2, name: "field blame (backfilled from the facts); plugin call indexes", sql: schemaV2, fn: backfillBlame},
	{version: 3, name: "tasks, task tags, attempts and field blame keyed by the task key", sql: schemaV3, fn: dropV2Tables},
	{version: 4, name: "operator actions; indexes for the console: tasks by queue, tasks by finish time", sql: schemaV4},
	{version: 5, name: "facts, plugin calls, rejected events and field blame keyed by stream sequence and index in a phase message", sql: schemaV5},
	{version: 6, name: "schedule events; the delayed_tasks view", sql: schemaV6},
	{version: 7, name: "state writes, chain events and limit waits", sql: schemaFlow},
	{version: 8, name: "plugin call diffs stored with each fact (backfilled)", sql: schemaDiffs, fn: backfillDiffs},
}

// schemaV5 keys what a fact writes by its position in the log: the stream
// sequence of its message and its index in it. Since issue #15 (design (f))
// a phase message holds several facts, each projected as it would be
// alone; a fact alone has index 0. facts keeps an integer primary key, pos
// = seq × 2^16 + idx (factPos), so that a fact is still one B-tree insert at
// the end of the table: a composite primary key (seq, idx) is an index
// beside the rows, which cost about 8% more CPU per event applied
// (BenchmarkApply; docs/ARCHITECTURE.md, "The exchange's read side").
// seq and idx stay columns of their own, for readers.
// plugin_calls (fact_idx) and rejected_events (a fact of a phase message
// may be rejected on its own) are made anew and their rows copied;
// plugin_calls no longer declares a foreign key to facts (its parent key
// would be the pair); field_blame gets fact_idx. The tables a fact does
// not write (plugin events, dead letters, operator actions) and the task
// rows' sequences (lifecycle facts travel alone) keep the sequence alone.
// The views and indexes on the tables made anew are made anew too.
const schemaV5 = `
DROP VIEW trigger_history;
DROP INDEX plugin_calls_plugin;
DROP INDEX plugin_calls_outcome;
DROP INDEX facts_task;
ALTER TABLE plugin_calls RENAME TO v4_plugin_calls;
ALTER TABLE facts RENAME TO v4_facts;
ALTER TABLE rejected_events RENAME TO v4_rejected_events;

CREATE TABLE facts (
	pos       INTEGER PRIMARY KEY,
	seq       INTEGER NOT NULL,
	idx       INTEGER NOT NULL DEFAULT 0,
	task_key  INTEGER REFERENCES task_keys (key),
	node      TEXT,
	trigger   TEXT NOT NULL,
	component TEXT NOT NULL,
	attempt   INTEGER NOT NULL,
	run       INTEGER NOT NULL,
	time      TEXT,
	event_id  TEXT NOT NULL,
	source    TEXT NOT NULL,
	data      TEXT NOT NULL,
	replay    TEXT
);
INSERT INTO facts (pos, seq, idx, task_key, node, trigger, component, attempt, run, time, event_id, source, data, replay)
	SELECT seq * 65536, seq, 0, task_key, node, trigger, component, attempt, run, time, event_id, source, data, replay FROM v4_facts ORDER BY seq;
CREATE INDEX facts_task ON facts (task_key, pos) WHERE task_key IS NOT NULL;

CREATE TABLE plugin_calls (
	fact_seq     INTEGER NOT NULL,
	fact_idx     INTEGER NOT NULL DEFAULT 0,
	idx          INTEGER NOT NULL,
	task_key     INTEGER,
	trigger      TEXT NOT NULL,
	attempt      INTEGER NOT NULL DEFAULT 0,
	plugin       TEXT NOT NULL,
	version      TEXT NOT NULL DEFAULT '',
	invocation   TEXT NOT NULL,
	outcome      TEXT NOT NULL,
	policy       TEXT NOT NULL DEFAULT '',
	reason       TEXT NOT NULL DEFAULT '',
	content_type TEXT NOT NULL DEFAULT '',
	patch        TEXT,
	latency_us   INTEGER NOT NULL DEFAULT 0,
	shadow       INTEGER NOT NULL DEFAULT 0,
	invoke_seq   INTEGER,
	patch_seq    INTEGER,
	PRIMARY KEY (fact_seq, fact_idx, idx)
) WITHOUT ROWID;
INSERT INTO plugin_calls (fact_seq, fact_idx, idx, task_key, trigger, attempt, plugin, version, invocation, outcome,
	policy, reason, content_type, patch, latency_us, shadow, invoke_seq, patch_seq)
	SELECT fact_seq, 0, idx, task_key, trigger, attempt, plugin, version, invocation, outcome,
	policy, reason, content_type, patch, latency_us, shadow, invoke_seq, patch_seq FROM v4_plugin_calls;
CREATE INDEX plugin_calls_plugin ON plugin_calls (plugin, version, outcome, fact_seq);
CREATE INDEX plugin_calls_outcome ON plugin_calls (outcome, fact_seq);

CREATE TABLE rejected_events (
	seq      INTEGER NOT NULL,
	idx      INTEGER NOT NULL DEFAULT 0,
	subject  TEXT NOT NULL,
	type     TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL DEFAULT '',
	reason   TEXT NOT NULL,
	PRIMARY KEY (seq, idx)
) WITHOUT ROWID;
INSERT INTO rejected_events (seq, idx, subject, type, event_id, reason)
	SELECT seq, 0, subject, type, event_id, reason FROM v4_rejected_events;

DROP TABLE v4_plugin_calls;
DROP TABLE v4_facts;
DROP TABLE v4_rejected_events;

ALTER TABLE field_blame ADD COLUMN fact_idx INTEGER NOT NULL DEFAULT 0;

CREATE VIEW trigger_history AS
SELECT f.seq, f.idx, k.id AS task_id, f.node, f.trigger, f.component, f.attempt, f.run, f.time, f.event_id, f.source,
	json_extract(f.data, '$.input') AS input, json_extract(f.data, '$.output') AS output,
	json_extract(f.data, '$.failed') AS failed, json_array_length(f.data, '$.calls') AS calls, f.replay
FROM facts f LEFT JOIN task_keys k ON k.key = f.task_key;
`

// schemaV6 adds the events of periodic schedules (added, removed,
// paused, resumed: by whom and why; each tick with the task it submitted;
// ticks missed), and the view delayed_tasks: each task submitted with a
// due time (SubmitOptions.RunAt), from its storage_add fact, beside its
// current status (new while it waits). A view, not a column: the write
// path stays as it was, and rebuild equals live by construction.
const schemaV6 = `
CREATE TABLE schedule_events (
	seq      INTEGER PRIMARY KEY,
	schedule TEXT NOT NULL,
	action   TEXT NOT NULL,
	by_whom  TEXT NOT NULL,
	reason   TEXT NOT NULL DEFAULT '',
	tick     TEXT,
	task_key INTEGER REFERENCES task_keys (key),
	missed   INTEGER NOT NULL DEFAULT 0,
	spec     TEXT,
	time     TEXT
);
CREATE INDEX schedule_events_schedule ON schedule_events (schedule, seq);
CREATE VIEW delayed_tasks AS
SELECT t.id, t.name, t.queue, t.status, t.attempt, t.created_at,
	json_extract(f.data, '$.input.task_status.not_before') AS due_at
FROM facts f JOIN tasks t ON t.key = f.task_key
WHERE f.trigger = 'storage_add' AND json_extract(f.data, '$.input.task_status.not_before') IS NOT NULL;
`

// schemaV4 indexes what the operator console filters and charts on: the
// tasks page by queue (newest first, keyset paging as by status or name),
// and the throughput chart by finish time. Without them both scan every
// task, which at a million tasks is a second per page load. A task's
// created_at is never NULL from now on (the empty string when a record has none), so that
// the pages can order by (created_at, id) as the indexes do: ordering by
// coalesce(created_at, "") sorted every task on each page load (9 s p50 at
// a million tasks, BenchmarkConsole).
//
// It also adds operator actions (cancel, retry, pause, resume): who did
// what to which task or queue, and why, from the log's operator events.
const schemaV4 = `
CREATE TABLE operator_actions (
	seq      INTEGER PRIMARY KEY,
	task_key INTEGER REFERENCES task_keys (key),
	action   TEXT NOT NULL,
	attempt  INTEGER NOT NULL DEFAULT 0,
	queue    TEXT NOT NULL,
	by_whom  TEXT NOT NULL,
	reason   TEXT NOT NULL DEFAULT '',
	time     TEXT
);
CREATE INDEX operator_actions_task ON operator_actions (task_key, seq) WHERE task_key IS NOT NULL;
UPDATE tasks SET created_at = '' WHERE created_at IS NULL;
CREATE INDEX tasks_queue ON tasks (queue, created_at, id);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
`

// schemaV1 is the first schema. Never edit it: a database created by it must
// keep migrating (testdata/migrate/v1 holds a database of this version).
// Times are RFC 3339 UTC text with nanoseconds, fixed width, so that they
// sort as text.
//
// The write path is lean, since every event of the log goes through it: a
// fact is one row of facts holding its data as recorded (input, output,
// calls, failed), keyed by stream sequence, with the task as an integer key
// (task_keys, assigned in order of first appearance) so that the per-task
// index grows at its end. The view trigger_history shows facts with their
// task id, input and output as columns.
const schemaV1 = `
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE task_keys (
	key INTEGER PRIMARY KEY,
	id  TEXT NOT NULL UNIQUE
);

CREATE TABLE tasks (
	id              TEXT PRIMARY KEY,
	name            TEXT NOT NULL,
	queue           TEXT NOT NULL DEFAULT '',
	priority        INTEGER NOT NULL DEFAULT 0,
	status          TEXT NOT NULL,
	attempt         INTEGER NOT NULL DEFAULT 1,
	retries_left    INTEGER NOT NULL DEFAULT 0,
	args_submitted  TEXT,
	kw_submitted    TEXT,
	args_executed   TEXT,
	kw_executed     TEXT,
	result          TEXT,
	error           TEXT NOT NULL DEFAULT '',
	reason          TEXT NOT NULL DEFAULT '',
	retry_parent    TEXT NOT NULL DEFAULT '',
	retry_child     TEXT NOT NULL DEFAULT '',
	worker          TEXT NOT NULL DEFAULT '',
	tags            TEXT,
	extra           TEXT,
	idempotency_key TEXT NOT NULL DEFAULT '',
	trace           TEXT NOT NULL DEFAULT '',
	created_at      TEXT,
	queued_at       TEXT,
	started_at      TEXT,
	executed_at     TEXT,
	finished_at     TEXT,
	updated_at      TEXT,
	first_seq       INTEGER NOT NULL,
	last_seq        INTEGER NOT NULL
);
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_status ON tasks (status, created_at, id);
CREATE INDEX tasks_name ON tasks (name, created_at, id);

CREATE TABLE task_tags (
	tag     TEXT NOT NULL,
	task_id TEXT NOT NULL REFERENCES tasks (id),
	PRIMARY KEY (tag, task_id)
) WITHOUT ROWID;

CREATE TABLE attempts (
	task_id      TEXT NOT NULL,
	attempt      INTEGER NOT NULL,
	status       TEXT NOT NULL,
	worker       TEXT NOT NULL DEFAULT '',
	runs         INTEGER NOT NULL DEFAULT 0,
	queued_at    TEXT,
	started_at   TEXT,
	executed_at  TEXT,
	finished_at  TEXT,
	result       TEXT,
	error        TEXT NOT NULL DEFAULT '',
	reason       TEXT NOT NULL DEFAULT '',
	retry_parent TEXT NOT NULL DEFAULT '',
	retry_child  TEXT NOT NULL DEFAULT '',
	final_seq    INTEGER,
	PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;

CREATE TABLE facts (
	seq       INTEGER PRIMARY KEY,
	task_key  INTEGER REFERENCES task_keys (key),
	node      TEXT,
	trigger   TEXT NOT NULL,
	component TEXT NOT NULL,
	attempt   INTEGER NOT NULL,
	run       INTEGER NOT NULL,
	time      TEXT,
	event_id  TEXT NOT NULL,
	source    TEXT NOT NULL,
	data      TEXT NOT NULL,
	replay    TEXT
);
CREATE INDEX facts_task ON facts (task_key, seq) WHERE task_key IS NOT NULL;

CREATE VIEW trigger_history AS
SELECT f.seq, k.id AS task_id, f.node, f.trigger, f.component, f.attempt, f.run, f.time, f.event_id, f.source,
	json_extract(f.data, '$.input') AS input, json_extract(f.data, '$.output') AS output,
	json_extract(f.data, '$.failed') AS failed, json_array_length(f.data, '$.calls') AS calls, f.replay
FROM facts f LEFT JOIN task_keys k ON k.key = f.task_key;

CREATE TABLE plugin_calls (
	fact_seq     INTEGER NOT NULL REFERENCES facts (seq),
	idx          INTEGER NOT NULL,
	task_key     INTEGER,
	trigger      TEXT NOT NULL,
	attempt      INTEGER NOT NULL DEFAULT 0,
	plugin       TEXT NOT NULL,
	version      TEXT NOT NULL DEFAULT '',
	invocation   TEXT NOT NULL,
	outcome      TEXT NOT NULL,
	policy       TEXT NOT NULL DEFAULT '',
	reason       TEXT NOT NULL DEFAULT '',
	content_type TEXT NOT NULL DEFAULT '',
	patch        TEXT,
	latency_us   INTEGER NOT NULL DEFAULT 0,
	shadow       INTEGER NOT NULL DEFAULT 0,
	invoke_seq   INTEGER,
	patch_seq    INTEGER,
	PRIMARY KEY (fact_seq, idx)
) WITHOUT ROWID;

CREATE TABLE plugin_events (
	seq          INTEGER PRIMARY KEY,
	kind         TEXT NOT NULL,
	task_key     INTEGER REFERENCES task_keys (key),
	invocation   TEXT NOT NULL,
	plugin       TEXT NOT NULL,
	version      TEXT NOT NULL DEFAULT '',
	trigger      TEXT NOT NULL,
	attempt      INTEGER NOT NULL DEFAULT 0,
	run          INTEGER NOT NULL DEFAULT 0,
	time         TEXT,
	timeout_ms   INTEGER,
	content_type TEXT,
	data         TEXT,
	plugin_error TEXT
);
CREATE INDEX plugin_events_task ON plugin_events (task_key, seq);

CREATE TABLE dead_letters (
	seq        INTEGER PRIMARY KEY,
	plugin     TEXT NOT NULL,
	stream     TEXT NOT NULL DEFAULT '',
	sequence   INTEGER NOT NULL DEFAULT 0,
	consumer   TEXT NOT NULL DEFAULT '',
	subject    TEXT NOT NULL DEFAULT '',
	deliveries INTEGER NOT NULL DEFAULT 0,
	reason     TEXT NOT NULL DEFAULT '',
	time       TEXT
);

CREATE TABLE rejected_events (
	seq      INTEGER PRIMARY KEY,
	subject  TEXT NOT NULL,
	type     TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL DEFAULT '',
	reason   TEXT NOT NULL
);
`

// schemaV2 adds field blame: for each task field (a JSON Pointer into the
// task record, such as /kw/a or /result), the plugin call that last changed
// it. Migration 2 backfills it from the facts already projected.
const schemaV2 = `
CREATE TABLE field_blame (
	task_id    TEXT NOT NULL,
	path       TEXT NOT NULL,
	plugin     TEXT NOT NULL,
	version    TEXT NOT NULL DEFAULT '',
	seq        INTEGER NOT NULL,
	idx        INTEGER NOT NULL,
	trigger    TEXT NOT NULL,
	attempt    INTEGER NOT NULL DEFAULT 0,
	op         TEXT NOT NULL,
	value      TEXT,
	PRIMARY KEY (task_id, path)
) WITHOUT ROWID;
CREATE INDEX plugin_calls_plugin ON plugin_calls (plugin, version, outcome, fact_seq);
CREATE INDEX plugin_calls_outcome ON plugin_calls (outcome, fact_seq);
`

// schemaV3 keys the per-task tables (tasks, task_tags, attempts,
// field_blame) by the task's integer key instead of its id. Task ids are
// random text: each of these tables had its rows (or its primary key
// index) in id order, so that every task a batch touched dirtied a page of
// each, anywhere in the file, and the commit wrote them all. Task keys
// grow in order of first appearance, so new rows go at the end. The id
// stays in tasks (listed, ordered by) and in task_keys, whose unique index
// is the one lookup by id.
const schemaV3 = `
ALTER TABLE task_tags RENAME TO v2_task_tags;
ALTER TABLE tasks RENAME TO v2_tasks;
ALTER TABLE attempts RENAME TO v2_attempts;
ALTER TABLE field_blame RENAME TO v2_field_blame;
DROP INDEX tasks_created;
DROP INDEX tasks_status;
DROP INDEX tasks_name;

CREATE TABLE tasks (
	key             INTEGER PRIMARY KEY REFERENCES task_keys (key),
	id              TEXT NOT NULL,
	name            TEXT NOT NULL,
	queue           TEXT NOT NULL DEFAULT '',
	priority        INTEGER NOT NULL DEFAULT 0,
	status          TEXT NOT NULL,
	attempt         INTEGER NOT NULL DEFAULT 1,
	retries_left    INTEGER NOT NULL DEFAULT 0,
	args_submitted  TEXT,
	kw_submitted    TEXT,
	args_executed   TEXT,
	kw_executed     TEXT,
	result          TEXT,
	error           TEXT NOT NULL DEFAULT '',
	reason          TEXT NOT NULL DEFAULT '',
	retry_parent    TEXT NOT NULL DEFAULT '',
	retry_child     TEXT NOT NULL DEFAULT '',
	worker          TEXT NOT NULL DEFAULT '',
	tags            TEXT,
	extra           TEXT,
	idempotency_key TEXT NOT NULL DEFAULT '',
	trace           TEXT NOT NULL DEFAULT '',
	created_at      TEXT,
	queued_at       TEXT,
	started_at      TEXT,
	executed_at     TEXT,
	finished_at     TEXT,
	updated_at      TEXT,
	first_seq       INTEGER NOT NULL,
	last_seq        INTEGER NOT NULL
);
INSERT INTO tasks SELECT k.key, t.* FROM v2_tasks t JOIN task_keys k ON k.id = t.id ORDER BY k.key;
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_status ON tasks (status, created_at, id);
CREATE INDEX tasks_name ON tasks (name, created_at, id);

CREATE TABLE task_tags (
	tag      TEXT NOT NULL,
	task_key INTEGER NOT NULL REFERENCES tasks (key),
	PRIMARY KEY (tag, task_key)
) WITHOUT ROWID;
INSERT INTO task_tags SELECT g.tag, k.key FROM v2_task_tags g JOIN task_keys k ON k.id = g.task_id;

CREATE TABLE attempts (
	task_key     INTEGER NOT NULL,
	attempt      INTEGER NOT NULL,
	status       TEXT NOT NULL,
	worker       TEXT NOT NULL DEFAULT '',
	runs         INTEGER NOT NULL DEFAULT 0,
	queued_at    TEXT,
	started_at   TEXT,
	executed_at  TEXT,
	finished_at  TEXT,
	result       TEXT,
	error        TEXT NOT NULL DEFAULT '',
	reason       TEXT NOT NULL DEFAULT '',
	retry_parent TEXT NOT NULL DEFAULT '',
	retry_child  TEXT NOT NULL DEFAULT '',
	final_seq    INTEGER,
	PRIMARY KEY (task_key, attempt)
) WITHOUT ROWID;
INSERT INTO attempts SELECT k.key, a.attempt, a.status, a.worker, a.runs, a.queued_at, a.started_at, a.executed_at,
	a.finished_at, a.result, a.error, a.reason, a.retry_parent, a.retry_child, a.final_seq
	FROM v2_attempts a JOIN task_keys k ON k.id = a.task_id;

CREATE TABLE field_blame (
	task_key INTEGER NOT NULL,
	path     TEXT NOT NULL,
	plugin   TEXT NOT NULL,
	version  TEXT NOT NULL DEFAULT '',
	seq      INTEGER NOT NULL,
	idx      INTEGER NOT NULL,
	trigger  TEXT NOT NULL,
	attempt  INTEGER NOT NULL DEFAULT 0,
	op       TEXT NOT NULL,
	value    TEXT,
	PRIMARY KEY (task_key, path)
) WITHOUT ROWID;
INSERT INTO field_blame SELECT k.key, b.path, b.plugin, b.version, b.seq, b.idx, b.trigger, b.attempt, b.op, b.value
	FROM v2_field_blame b JOIN task_keys k ON k.id = b.task_id;
`

// dropV2Tables is migration 3's last step: it checks that every row of the
// version 2 tables was copied (each task id has a key: Apply assigns one to
// every task it sees) and drops them.
func dropV2Tables(ctx context.Context, tx *sql.Tx) error {
	for _, t := range []string{"task_tags", "tasks", "attempts", "field_blame"} {
		var before, after int
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM v2_`+t+`), (SELECT count(*) FROM `+t+`)`).Scan(&before, &after); err != nil {
			return err
		}
		if before != after {
			return fmt.Errorf("%s: %d rows copied of %d (a task id without a task key)", t, after, before)
		}
		if _, err := tx.ExecContext(ctx, `DROP TABLE v2_`+t); err != nil {
			return err
		}
	}
	return nil
}

// Schema errors.
var (
	// ErrSchemaTooNew is returned for a database written by a newer version
	// of this package.
	ErrSchemaTooNew = errors.New("projection database has a newer schema than this program")
	// ErrSchemaOutdated is returned when a database opened read-only has an
	// older schema; opening it for writing migrates it.
	ErrSchemaOutdated = errors.New("projection database has an older schema")
)

// schemaVersion reads the highest applied migration; 0 for a new database.
func schemaVersion(ctx context.Context, q rowQuerier) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return int(v.Int64), nil
}

// migrate brings the database to target, each migration in its own
// transaction. It returns the version it found.
func migrate(ctx context.Context, db *sql.DB, target int) (from int, err error) {
	from, err = schemaVersion(ctx, db)
	if err != nil {
		return 0, err
	}
	if from > SchemaVersion {
		return from, fmt.Errorf("%w: version %d, this program knows up to %d", ErrSchemaTooNew, from, SchemaVersion)
	}
	for _, m := range migrations {
		if m.version > target {
			break
		}
		if err := runMigration(ctx, db, m); err != nil {
			return from, err
		}
	}
	return from, nil
}

func runMigration(ctx context.Context, db *sql.DB, m migration) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrating to schema %d: %w", m.version, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	// Under the write lock: another process may have migrated meanwhile.
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name    TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrating to schema %d: %w", m.version, err)
	}
	var done int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&done); err != nil {
		return fmt.Errorf("migrating to schema %d: %w", m.version, err)
	}
	if done > 0 {
		return tx.Rollback()
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migrating to schema %d: %w", m.version, err)
	}
	if m.fn != nil {
		if err := m.fn(ctx, tx); err != nil {
			return fmt.Errorf("migrating to schema %d: %w", m.version, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, m.version, m.name); err != nil {
		return fmt.Errorf("migrating to schema %d: %w", m.version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrating to schema %d: %w", m.version, err)
	}
	return nil
}
