package projections

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/events"
)

// The rows of tasks and attempts that a batch changes are kept in memory
// while the batch is applied and written once at its end: a task's life is
// four or five lifecycle facts, each of which used to be a write of its
// task row and of its attempt row, and the tasks row has three indexes.
// The rows in memory follow exactly what the statements applied one by one
// would have done (same values, same conditions), so the database after
// the batch is the same.

// Columns of tasks that lifecycle facts change after the row is inserted,
// in the order of stGetTask's result.
const (
	tcStatus = iota
	tcAttempt
	tcPriority
	tcRetriesLeft
	tcArgsExecuted
	tcKwExecuted
	tcResult
	tcError
	tcReason
	tcRetryParent
	tcRetryChild
	tcWorker
	tcExtra
	tcStartedAt
	tcExecutedAt
	tcFinishedAt
	tcUpdatedAt
	tcLastSeq
	tcCount
)

var taskRowColumns = [tcCount]string{
	tcStatus: "status", tcAttempt: "attempt", tcPriority: "priority", tcRetriesLeft: "retries_left",
	tcArgsExecuted: "args_executed", tcKwExecuted: "kw_executed", tcResult: "result", tcError: "error", tcReason: "reason",
	tcRetryParent: "retry_parent", tcRetryChild: "retry_child", tcWorker: "worker", tcExtra: "extra",
	tcStartedAt: "started_at", tcExecutedAt: "executed_at", tcFinishedAt: "finished_at", tcUpdatedAt: "updated_at",
	tcLastSeq: "last_seq",
}

// Columns of attempts, in the order of stGetAttempt's result and
// stInsAttempt's values.
const (
	acTaskKey = iota
	acAttempt
	acStatus
	acWorker
	acRuns
	acQueuedAt
	acStartedAt
	acExecutedAt
	acFinishedAt
	acResult
	acError
	acReason
	acRetryParent
	acRetryChild
	acFinalSeq
	acCount
)

const attemptColumns = `task_key, attempt, status, worker, runs, queued_at, started_at, executed_at, finished_at, result,
	error, reason, retry_parent, retry_child, final_seq`

// taskRow is a task's row as the batch has made it so far.
type taskRow struct {
	id  string
	key int64 // the task key
	// exists: the row exists, in the database or inserted by this batch.
	exists bool
	// before: the row was in the database before the batch.
	before bool
	// insert: the batch inserts the row; ins holds its other columns.
	insert bool
	ins    taskInsert
	// attempt and status are the row's (when it exists).
	attempt int
	status  string
	// cols holds the columns set by the batch, those in set.
	cols [tcCount]any
	set  uint32
}

// taskInsert holds the columns of a task row that never change after it is
// inserted.
type taskInsert struct {
	name, queue                string
	argsSubmitted, kwSubmitted any
	tags                       []string
	idempotencyKey, trace      string
	createdAt, queuedAt        any
	firstSeq                   int64
}

func (r *taskRow) put(col int, v any) {
	r.cols[col] = v
	r.set |= 1 << col
}

// attemptKey identifies a row of attempts.
type attemptKey struct {
	task    string
	attempt int
}

// attemptRow is a row of attempts as the batch has made it so far.
type attemptRow struct {
	exists bool
	// insert: the batch inserts the row.
	insert bool
	dirty  bool
	cols   [acCount]any
}

func (r *attemptRow) put(col int, v any) {
	r.cols[col] = v
	r.dirty = true
}

// open reports whether the attempt's row exists and has no final record
// (the condition final_seq IS NULL of the statements it replaces).
func (r *attemptRow) open() bool { return r.exists && r.cols[acFinalSeq] == nil }

// batchRows are the rows of tasks and attempts a transaction changes.
type batchRows struct {
	tasks    map[string]*taskRow
	order    []*taskRow // tasks in the order the batch touched them
	inserts  []*taskRow // tasks inserted, in order of insertion
	attempts map[attemptKey]*attemptRow
	aorder   []*attemptRow
}

// taskRow returns the row of task id as the batch has it, reading what it
// needs of the database (from the applier's cache when it can).
func (a *txApplier) taskRow(id string) (*taskRow, error) {
	if r, ok := a.rows.tasks[id]; ok {
		return r, nil
	}
	key, err := a.taskKey(id)
	if err != nil {
		return nil, err
	}
	st, err := a.taskState(id, key)
	if err != nil {
		return nil, err
	}
	r := &taskRow{id: id, key: key, exists: st.exists, before: st.exists, attempt: st.attempt, status: st.status}
	if a.rows.tasks == nil {
		a.rows.tasks = make(map[string]*taskRow)
	}
	a.rows.tasks[id] = r
	a.rows.order = append(a.rows.order, r)
	return r, nil
}

// attemptRow returns the row of attempt n of task id as the batch has it;
// exists is false when there is none.
func (a *txApplier) attemptRow(id string, n int) (*attemptRow, error) {
	k := attemptKey{id, n}
	if r, ok := a.rows.attempts[k]; ok {
		return r, nil
	}
	t, err := a.taskRow(id)
	if err != nil {
		return nil, err
	}
	r := &attemptRow{}
	r.cols[acTaskKey], r.cols[acAttempt] = t.key, int64(n)
	// Attempts are written only beside their task's row: a task that was
	// not in the database before the batch had no attempts either.
	if t.before {
		row, err := a.query(stGetAttempt, t.key, n)
		if err != nil {
			return nil, fmt.Errorf("reading attempt %d of task %s: %w", n, id, err)
		}
		if row != nil {
			r.exists = true
			for i, v := range row {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				r.cols[i] = v
			}
		}
	}
	if a.rows.attempts == nil {
		a.rows.attempts = make(map[attemptKey]*attemptRow)
	}
	a.rows.attempts[k] = r
	a.rows.aorder = append(a.rows.aorder, r)
	return r, nil
}

// create makes the row of an attempt that had none, as INSERT INTO
// attempts would: the columns not given have their defaults.
func (r *attemptRow) create() {
	r.exists, r.insert, r.dirty = true, true, true
	for i := acStatus; i < acCount; i++ {
		r.cols[i] = nil
	}
	r.cols[acWorker], r.cols[acRuns], r.cols[acError], r.cols[acReason] = "", int64(0), "", ""
	r.cols[acRetryParent], r.cols[acRetryChild] = "", ""
}

// flushRows writes the rows the batch changed: the tasks inserted, in the
// order of their first records (the order, and so the rowids, of the
// inserts made one by one), with their tags; the tasks updated, each with
// one statement setting the columns the batch changed; the attempts.
func (a *txApplier) flushRows() error {
	rs := &a.rows
	for _, r := range rs.inserts {
		c, in := &r.cols, &r.ins
		var tags any
		if len(in.tags) > 0 {
			b, err := json.Marshal(in.tags)
			if err != nil {
				return fmt.Errorf("encoding tags: %w", err)
			}
			tags = string(b)
		}
		if err := a.exec(stInsTask, r.key, r.id, in.name, in.queue, c[tcPriority], c[tcStatus], c[tcAttempt], c[tcRetriesLeft],
			in.argsSubmitted, in.kwSubmitted, c[tcArgsExecuted], c[tcKwExecuted], c[tcResult], c[tcError], c[tcReason],
			c[tcRetryParent], c[tcRetryChild], c[tcWorker], tags, c[tcExtra], in.idempotencyKey, in.trace,
			in.createdAt, in.queuedAt, c[tcStartedAt], c[tcExecutedAt], c[tcFinishedAt], c[tcUpdatedAt], in.firstSeq,
			c[tcLastSeq]); err != nil {
			return fmt.Errorf("task %s: %w", r.id, err)
		}
		for _, tag := range in.tags {
			if err := a.exec(stTag, tag, r.key); err != nil {
				return fmt.Errorf("task %s: %w", r.id, err)
			}
		}
	}
	for _, r := range rs.order {
		if r.insert || r.set == 0 {
			continue
		}
		st, err := a.ap.updateTask(a, r.set)
		if err != nil {
			return err
		}
		args := make([]any, 0, tcCount+1)
		for set := r.set; set != 0; set &= set - 1 {
			args = append(args, r.cols[bits.TrailingZeros32(set)])
		}
		args = append(args, r.key)
		if _, err := st.(driver.StmtExecContext).ExecContext(a.ctx, a.named(args)); err != nil {
			return fmt.Errorf("UPDATE tasks %s: %w", r.id, err)
		}
	}
	for _, r := range rs.aorder {
		if !r.dirty {
			continue
		}
		c := &r.cols
		var err error
		if r.insert {
			err = a.exec(stInsAttempt, c[acTaskKey], c[acAttempt], c[acStatus], c[acWorker], c[acRuns], c[acQueuedAt],
				c[acStartedAt], c[acExecutedAt], c[acFinishedAt], c[acResult], c[acError], c[acReason], c[acRetryParent],
				c[acRetryChild], c[acFinalSeq])
		} else {
			err = a.exec(stPutAttempt, c[acStatus], c[acWorker], c[acRuns], c[acQueuedAt], c[acStartedAt],
				c[acExecutedAt], c[acFinishedAt], c[acResult], c[acError], c[acReason], c[acRetryParent],
				c[acRetryChild], c[acFinalSeq], c[acTaskKey], c[acAttempt])
		}
		if err != nil {
			return fmt.Errorf("attempt %v of task key %v: %w", c[acAttempt], c[acTaskKey], err)
		}
	}
	for _, r := range rs.order {
		if r.exists {
			a.cacheTask(r.id, taskState{exists: true, attempt: r.attempt, status: r.status})
		}
	}
	return nil
}

// updateTask returns the statement that updates the task columns in set
// (prepared on first use: a batch's updates set a few combinations).
func (ap *applier) updateTask(a *txApplier, set uint32) (driver.Stmt, error) {
	if st, ok := ap.updates[set]; ok {
		return st, nil
	}
	var b strings.Builder
	b.WriteString("UPDATE tasks SET ")
	for s := set; s != 0; s &= s - 1 {
		if s != set {
			b.WriteString(", ")
		}
		b.WriteString(taskRowColumns[bits.TrailingZeros32(s)] + " = ?")
	}
	b.WriteString(" WHERE key = ?")
	st, err := ap.dc.(driver.ConnPrepareContext).PrepareContext(a.ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("preparing a task update: %w", err)
	}
	ap.updates[set] = st
	return st, nil
}

// insertFrom makes r the row inserted from a record: the first fact of the
// task in the log (normally storage_add; a later one when the log was
// truncated).
func (r *taskRow) insertFrom(m *events.Task, status string, seq int64, queuedAt, startedAt, finishedAt any) {
	var result any
	if status != events.StatusNew && status != events.StatusProcess {
		result = nullText(m.Result)
	}
	updated := queuedAt
	if updated == nil {
		updated = startedAt
	}
	if updated == nil {
		updated = finishedAt
	}
	r.exists, r.insert = true, true
	r.attempt, r.status = m.Attempt, status
	r.ins = taskInsert{
		name: m.Name, queue: m.Queue, argsSubmitted: nullText(m.Args), kwSubmitted: nullText(m.Kw), tags: m.Tags,
		idempotencyKey: m.IdempotencyKey, trace: m.Trace, createdAt: createdTS(m.CreatedAt), queuedAt: queuedAt, firstSeq: seq,
	}
	r.cols = [tcCount]any{
		tcStatus: status, tcAttempt: int64(m.Attempt), tcPriority: int64(m.Priority), tcRetriesLeft: int64(m.Retry),
		tcResult: result, tcError: m.Error, tcReason: m.Reason, tcRetryParent: m.RetryParent, tcRetryChild: m.RetryChild,
		tcWorker: m.Worker, tcExtra: jsonText(m.Extra), tcStartedAt: startedAt, tcFinishedAt: finishedAt,
		tcUpdatedAt: updated, tcLastSeq: seq,
	}
}

// createdTS is a task's creation time as stored: never NULL, so that the
// tasks pages' order (created_at DESC, id DESC) is an index's order and
// their cursor a range of it. A record without a creation time (none that
// qtasks writes) is stored as ”, which sorts last, as NULL did.
func createdTS(t time.Time) any {
	if v := ts(t); v != nil {
		return v
	}
	return ""
}
