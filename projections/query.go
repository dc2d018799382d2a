package projections

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/events"
)

// Query limits.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// ErrBadCursor is returned for a page cursor this package did not write.
var ErrBadCursor = errors.New("invalid page cursor")

// Task is a task as projected: its current attempt's state, the arguments
// as submitted and as the task function got them, and when each phase
// happened (event times from the log).
type Task struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Queue         string          `json:"queue"`
	Priority      int             `json:"priority"`
	Status        string          `json:"status"`
	Attempt       int             `json:"attempt"`
	RetriesLeft   int             `json:"retries_left"`
	ArgsSubmitted json.RawMessage `json:"args_submitted,omitempty"`
	KwSubmitted   json.RawMessage `json:"kw_submitted,omitempty"`
	ArgsExecuted  json.RawMessage `json:"args_executed,omitempty"`
	KwExecuted    json.RawMessage `json:"kw_executed,omitempty"`
	Result        json.RawMessage `json:"result,omitempty"`
	Error         string          `json:"error,omitempty"`
	Reason        string          `json:"reason,omitempty"`
	RetryParent   string          `json:"retry_parent,omitempty"`
	RetryChild    string          `json:"retry_child,omitempty"`
	Worker        string          `json:"worker,omitempty"`
	Tags          []string        `json:"tags,omitempty"`
	Extra         json.RawMessage `json:"extra,omitempty"`
	// IdempotencyKey and Trace as submitted.
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	Trace          string    `json:"trace,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	QueuedAt       time.Time `json:"queued_at,omitzero"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	ExecutedAt     time.Time `json:"executed_at,omitzero"`
	FinishedAt     time.Time `json:"finished_at,omitzero"`
	UpdatedAt      time.Time `json:"updated_at,omitzero"`
	// FirstSeq and LastSeq are the stream sequences of the first event and
	// of the last that changed the task.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Attempts, oldest first; filled by DB.Task and DB.Timeline only.
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Attempt is one attempt of a task: the first, and one more per retry.
type Attempt struct {
	Attempt     int             `json:"attempt"`
	Status      string          `json:"status"`
	Worker      string          `json:"worker,omitempty"`
	Runs        int             `json:"runs"`
	QueuedAt    time.Time       `json:"queued_at,omitzero"`
	StartedAt   time.Time       `json:"started_at,omitzero"`
	ExecutedAt  time.Time       `json:"executed_at,omitzero"`
	FinishedAt  time.Time       `json:"finished_at,omitzero"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	RetryParent string          `json:"retry_parent,omitempty"`
	RetryChild  string          `json:"retry_child,omitempty"`
	FinalSeq    uint64          `json:"final_seq,omitempty"`
}

const taskColumns = `id, name, queue, priority, status, attempt, retries_left, args_submitted, kw_submitted, args_executed,
	kw_executed, result, error, reason, retry_parent, retry_child, worker, tags, extra, idempotency_key, trace,
	created_at, queued_at, started_at, executed_at, finished_at, updated_at, first_seq, last_seq`

type scanner interface{ Scan(dest ...any) error }

// taskScan holds the destinations of a task row's columns, allocated once
// for all the rows of a page: taken one row at a time, they were thirty
// allocations per task (BenchmarkConsole). The JSON columns scan into
// []byte (nil for NULL): a copy of their own each row (copyJSON), or the
// bytes of the driver's string (textCol), for AppendTasksJSON, which
// writes them before the next row.
type taskScan struct {
	t                                     Task
	argsS, kwS, argsE, kwE, result, extra []byte
	tags                                  sql.NullString
	// times are created_at, queued_at, started_at, executed_at,
	// finished_at and updated_at (taskTimeNames).
	times       [6]sql.NullString
	first, last int64
	dest        []any
}

func newTaskScan(copyJSON bool) *taskScan {
	r := &taskScan{}
	t := &r.t
	jsonCol := func(p *[]byte) any {
		if copyJSON {
			return p
		}
		return textCol{p}
	}
	r.dest = []any{
		&t.ID, &t.Name, &t.Queue,
		intCol[int]{&t.Priority},
		&t.Status,
		intCol[int]{&t.Attempt},
		intCol[int]{&t.RetriesLeft},
		jsonCol(&r.argsS), jsonCol(&r.kwS), jsonCol(&r.argsE), jsonCol(&r.kwE), jsonCol(&r.result),
		&t.Error, &t.Reason, &t.RetryParent, &t.RetryChild, &t.Worker,
		textNull{&r.tags},
		jsonCol(&r.extra), &t.IdempotencyKey, &t.Trace,
		textNull{&r.times[0]},
		textNull{&r.times[1]},
		textNull{&r.times[2]},
		textNull{&r.times[3]},
		textNull{&r.times[4]},
		textNull{&r.times[5]},
		intCol[int64]{&r.first},
		intCol[int64]{&r.last},
	}
	return r
}

// scan reads the current row into a new Task.
func (r *taskScan) scan(rows scanner) (Task, error) {
	if err := r.scanRow(rows); err != nil {
		return Task{}, err
	}
	t := r.t
	t.CreatedAt, t.QueuedAt, t.StartedAt = parseTS(r.times[0]), parseTS(r.times[1]), parseTS(r.times[2])
	t.ExecutedAt, t.FinishedAt, t.UpdatedAt = parseTS(r.times[3]), parseTS(r.times[4]), parseTS(r.times[5])
	return t, nil
}

// scanRow reads the current row into r.t, but for its times, which stay
// zero there (r.times has them).
func (r *taskScan) scanRow(rows scanner) error {
	if err := rows.Scan(r.dest...); err != nil {
		return err
	}
	t := &r.t
	t.ArgsSubmitted, t.KwSubmitted, t.ArgsExecuted, t.KwExecuted = r.argsS, r.kwS, r.argsE, r.kwE
	t.Result, t.Extra = r.result, r.extra
	t.Tags = nil
	if r.tags.Valid {
		if err := json.Unmarshal([]byte(r.tags.String), &t.Tags); err != nil {
			return fmt.Errorf("task %s tags: %w", t.ID, err)
		}
	}
	t.FirstSeq, t.LastSeq = seqFromSQL(r.first), seqFromSQL(r.last)
	return nil
}

func raw(s sql.NullString) json.RawMessage {
	if !s.Valid {
		return nil
	}
	return json.RawMessage(s.String)
}

func parseTS(s sql.NullString) time.Time {
	if !s.Valid {
		return time.Time{}
	}
	if t, ok := parseLayout(s.String); ok {
		return t
	}
	t, err := time.Parse(time.RFC3339Nano, s.String)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Task returns a task and its attempts, or ErrNotFound.
func (d *DB) Task(ctx context.Context, id string) (Task, error) {
	_, t, err := d.taskWithKey(ctx, id)
	return t, err
}

// taskWithKey returns a task with its attempts, and its key in the
// projection, for the reads about it that follow; or ErrNotFound. One
// statement reads both: a row per attempt, the task's columns repeated
// (a task has one attempt, and one more per retry).
func (d *DB) taskWithKey(ctx context.Context, id string) (int64, Task, error) {
	rows, err := d.query(ctx, taskWithAttempts, id)
	if err != nil {
		return 0, Task{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	defer rows.Close()
	r := newTaskScan(true)
	var key int64
	var a attemptScan
	r.dest = append(append([]any{intCol[int64]{&key}}, r.dest...), a.dests()...)
	var t Task
	found := false
	for rows.Next() {
		row, err := r.scan(rows)
		if err != nil {
			return 0, Task{}, fmt.Errorf("reading task %s: %w", id, err)
		}
		if !found {
			t, found = row, true
		}
		if a.attempt.Valid {
			t.Attempts = append(t.Attempts, a.value())
		}
	}
	if err := rows.Err(); err != nil {
		return 0, Task{}, fmt.Errorf("reading task %s: %w", id, err)
	}
	if !found {
		return 0, Task{}, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	return key, t, nil
}

// taskWithAttempts is taskWithKey's statement.
var taskWithAttempts = `SELECT t.key, ` + prefixColumns("t.", taskColumns) + `, a.attempt, a.status, a.worker, a.runs,
	a.queued_at, a.started_at, a.executed_at, a.finished_at, a.result, a.error, a.reason, a.retry_parent, a.retry_child,
	a.final_seq FROM tasks t LEFT JOIN attempts a ON a.task_key = t.key
	WHERE t.key = (SELECT key FROM task_keys WHERE id = ?) ORDER BY a.attempt`

// attemptScan holds the destinations of an attempt's columns in
// taskWithAttempts: NULL all of them for a task without attempts.
type attemptScan struct {
	attempt, runs, final                                     sql.NullInt64
	status, worker, errText, reason, retryParent, retryChild sql.NullString
	queued, started, executed, finished, result              sql.NullString
}

func (a *attemptScan) dests() []any {
	return []any{
		&a.attempt, &a.status, &a.worker, &a.runs, &a.queued, &a.started, &a.executed, &a.finished, &a.result,
		&a.errText, &a.reason, &a.retryParent, &a.retryChild, &a.final,
	}
}

// value is the attempt of the current row.
func (a *attemptScan) value() Attempt {
	return Attempt{
		Attempt: int(a.attempt.Int64), Status: a.status.String, Worker: a.worker.String, Runs: int(a.runs.Int64),
		QueuedAt: parseTS(a.queued), StartedAt: parseTS(a.started), ExecutedAt: parseTS(a.executed), FinishedAt: parseTS(a.finished),
		Result: raw(a.result), Error: a.errText.String, Reason: a.reason.String, RetryParent: a.retryParent.String,
		RetryChild: a.retryChild.String, FinalSeq: seqFromSQL(a.final.Int64),
	}
}

// TaskFilter selects tasks. Empty fields do not filter.
type TaskFilter struct {
	Status string
	Name   string
	Queue  string
	Tag    string
	// Since and Until bound the creation time: Since <= created < Until.
	Since, Until time.Time
	// Limit of one page. Defaults to DefaultLimit, at most MaxLimit.
	Limit int
	// Cursor continues from a previous page's Next.
	Cursor string
}

// TaskPage is a page of tasks, newest first.
type TaskPage struct {
	Tasks []Task `json:"tasks"`
	// Next is the cursor of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// Tasks lists tasks matching f, newest first (by creation time, then id),
// one page at a time.
func (d *DB) Tasks(ctx context.Context, f TaskFilter) (TaskPage, error) {
	limit := clampLimit(f.Limit)
	rows, err := d.tasksRows(ctx, f, limit)
	if err != nil {
		return TaskPage{}, err
	}
	defer rows.Close()
	page := TaskPage{Tasks: make([]Task, 0, limit+1)}
	row := newTaskScan(true)
	for rows.Next() {
		t, err := row.scan(rows)
		if err != nil {
			return TaskPage{}, fmt.Errorf("listing tasks: %w", err)
		}
		page.Tasks = append(page.Tasks, t)
	}
	if err := rows.Err(); err != nil {
		return TaskPage{}, fmt.Errorf("listing tasks: %w", err)
	}
	if len(page.Tasks) > limit {
		page.Tasks = page.Tasks[:limit]
		last := page.Tasks[limit-1]
		created := ""
		if !last.CreatedAt.IsZero() {
			created = last.CreatedAt.UTC().Format(timeLayout)
		}
		page.Next = encodeCursor(created, last.ID)
	}
	return page, nil
}

// AppendTasksJSON appends the tasks of the page Tasks(ctx, f) returns as
// json.Marshal writes them (a JSON array), and returns the page's Next. It
// writes each row as it reads it (Task.AppendJSON), without building the
// page: its JSON columns are not copied and its times not parsed
// (appendTimeText). The tasks page is the one polled every 2 s, and
// building the tasks was two fifths of its time beyond its query
// (BenchmarkConsole; docs/ARCHITECTURE.md, "The operator console").
// TestAppendTasksJSON holds it to Tasks.
func (d *DB) AppendTasksJSON(ctx context.Context, dst []byte, f TaskFilter) ([]byte, string, error) {
	limit := clampLimit(f.Limit)
	rows, err := d.tasksRows(ctx, f, limit)
	if err != nil {
		return dst, "", err
	}
	defer rows.Close()
	row := newTaskScan(false)
	dst = append(dst, '[')
	var lastCreated sql.NullString
	var lastID, next string
	for n := 0; rows.Next(); n++ {
		if n == limit { // a row past the page: there is a next one
			next = encodeCursor(cursorTime(lastCreated), lastID)
			break
		}
		if err := row.scanRow(rows); err != nil {
			return dst, "", fmt.Errorf("listing tasks: %w", err)
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = row.t.appendJSON(dst, &row.times)
		lastCreated, lastID = row.times[0], row.t.ID
	}
	if err := rows.Err(); err != nil {
		return dst, "", fmt.Errorf("listing tasks: %w", err)
	}
	return append(dst, ']'), next, nil
}

// cursorTime is a task's creation time in a page cursor: as Tasks writes
// it, timeLayout, "" for none.
func cursorTime(s sql.NullString) string {
	if _, _, _, _, _, _, _, ok := layoutFields(s.String); ok && s.String != zeroLayoutTime {
		return s.String // what parsing and formatting it again gives
	}
	created := parseTS(s)
	if created.IsZero() {
		return ""
	}
	return created.UTC().Format(timeLayout)
}

// tasksRows runs Tasks's statement for f and a page of limit.
func (d *DB) tasksRows(ctx context.Context, f TaskFilter, limit int) (*sql.Rows, error) {
	q, args, err := tasksQuery(f, limit)
	if err != nil {
		return nil, err
	}
	stmt, err := d.prepared(ctx, q) //nolint:sqlclosecheck // cached: closeStmts closes it with the DB
	if err != nil {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	return rows, nil
}

// tasksQuery is the statement Tasks runs for f and a page of limit, and
// its arguments. Its parameters are written +? (DB.prepared says why: a
// "?" that SQLite's planner looks into, as "LIMIT ?" and "x = ?" beside
// an ORDER BY, made it parse and plan the statement again on every call);
// TestTasksQueryPlans holds that the plans are those of "?".
func tasksQuery(f TaskFilter, limit int) (string, []any, error) {
	var where []string
	var args []any
	from := "tasks t"
	if f.Tag != "" {
		from = "tasks t JOIN task_tags g ON g.task_key = t.key AND g.tag = +?"
		args = append(args, f.Tag)
	}
	if f.Status != "" {
		where, args = append(where, "t.status = +?"), append(args, f.Status)
	}
	if f.Name != "" {
		where, args = append(where, "t.name = +?"), append(args, f.Name)
	}
	if f.Queue != "" {
		where, args = append(where, "t.queue = +?"), append(args, f.Queue)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "t.created_at >= +?"), append(args, ts(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "t.created_at < +?"), append(args, ts(f.Until))
	}
	if f.Cursor != "" {
		parts, err := decodeCursor(f.Cursor, 2)
		if err != nil {
			return "", nil, err
		}
		where = append(where, "(t.created_at, t.id) < (+?, +?)")
		args = append(args, parts[0], parts[1])
	}
	q := "SELECT " + prefixColumns("t.", taskColumns) + " FROM " + from
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY t.created_at DESC, t.id DESC LIMIT +?"
	return q, append(args, limit+1), nil
}

func prefixColumns(prefix, cols string) string {
	fs := strings.Split(cols, ",")
	for i, c := range fs {
		fs[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(fs, ", ")
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, "\x00")))
}

func decodeCursor(c string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", ErrBadCursor, c)
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != n {
		return nil, fmt.Errorf("%w: %q", ErrBadCursor, c)
	}
	return parts, nil
}

// Entry is one trigger fact of a task's timeline.
type Entry struct {
	// Seq is the stream sequence of the fact's message, Index its position
	// in it (0 for a fact alone; a phase message holds several).
	Seq       uint64          `json:"seq"`
	Index     int             `json:"index,omitempty"`
	Time      time.Time       `json:"time,omitzero"`
	Trigger   string          `json:"trigger"`
	Component string          `json:"component"`
	Attempt   int             `json:"attempt"`
	Run       int             `json:"run"`
	EventID   string          `json:"event_id"`
	Source    string          `json:"source"`
	Input     json.RawMessage `json:"input,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	Failed    string          `json:"failed,omitempty"`
	Replay    string          `json:"replay,omitempty"`
	Calls     []Call          `json:"calls,omitempty"`
}

// Call is one plugin call of a returnable trigger firing.
type Call struct {
	// FactSeq and FactIdx locate the fact that recorded the call (Entry's
	// Seq and Index), Idx is the call's position in it.
	FactSeq     uint64          `json:"fact_seq"`
	FactIdx     int             `json:"fact_idx,omitempty"`
	Idx         int             `json:"idx"`
	TaskID      string          `json:"task_id,omitempty"`
	Trigger     string          `json:"trigger"`
	Attempt     int             `json:"attempt"`
	Plugin      string          `json:"plugin"`
	Version     string          `json:"version,omitempty"`
	Invocation  string          `json:"invocation"`
	Outcome     string          `json:"outcome"`
	Policy      string          `json:"policy,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	Patch       json.RawMessage `json:"patch,omitempty"`
	LatencyUS   int64           `json:"latency_us"`
	Shadow      bool            `json:"shadow,omitempty"`
	// InvokeSeq and PatchSeq locate the invocation and the patch in the
	// log (from the fact, or from the invocation and patch events).
	InvokeSeq uint64 `json:"invoke_seq,omitempty"`
	PatchSeq  uint64 `json:"patch_seq,omitempty"`
	// Changes is the patch as a diff of the payload it was applied to
	// (Timeline only).
	Changes []Change `json:"changes,omitempty"`
}

// Timeline is a task's history: every fact in stream order with each plugin
// call and what its patch changed.
type Timeline struct {
	Task    Task    `json:"task"`
	Entries []Entry `json:"entries"`
	// Actions are the operators' actions on the task, in stream order.
	Actions []Action `json:"actions"`
}

// Timeline returns task id's timeline, or ErrNotFound.
func (d *DB) Timeline(ctx context.Context, id string) (Timeline, error) {
	return d.TimelineOf(ctx, id, nil)
}

// TimelineOf is Timeline with shadowOf naming the live plugin of a shadow
// plugin ("" when unknown), which the log does not record: a shadow's patch
// is then diffed against what that live plugin saw, which the shadow saw
// too, not against the payload the whole chain left (callDiffs). The
// console passes the registry's. The calls' changes are those the
// projector stored with each fact, but for a firing with such a shadow,
// whose changes are computed here (factDiffs).
func (d *DB) TimelineOf(ctx context.Context, id string, shadowOf func(shadow string) string) (Timeline, error) {
	tr, err := d.openTimeline(ctx, id)
	if err != nil {
		return Timeline{}, err
	}
	tl := Timeline{Task: tr.task, Entries: []Entry{}}
	err = tr.eachFact(ctx, func(fr *factRow) error {
		if err := fr.decode(); err != nil {
			return err
		}
		diffs, err := factDiffs(fr.e.Trigger, &fr.f, fr.stored, shadowOf)
		if err != nil {
			return err
		}
		e := fr.e
		if len(fr.f.Calls) > 0 {
			e.Calls = make([]Call, len(fr.f.Calls))
			for j := range fr.f.Calls {
				e.Calls[j] = tr.call(fr, j, diffs)
			}
		}
		tl.Entries = append(tl.Entries, e)
		return nil
	})
	if err != nil {
		return Timeline{}, err
	}
	if tl.Actions, err = tr.actions(ctx); err != nil {
		return Timeline{}, err
	}
	return tl, nil
}

// timelineReader reads a task's timeline in the order its JSON has it,
// for Timeline to build its structs and AppendTimelineJSON to write JSON
// as it reads: the task with its attempts, then each fact (eachFact), then
// the operators' actions. The task's key is looked up once.
type timelineReader struct {
	d    *DB
	id   string
	key  int64
	task Task
	seqs map[string]uint64 // pluginEventSeqs
	// stored is appendStoredEntry's, reused from fact to fact; idField
	// its calls' task_id member, written once; strings the JSON of the
	// strings its facts repeat.
	stored  storedFact
	idField []byte
	strings stringCache
}

// factRow is one fact of a timeline: the entry without its calls (nor
// what the data holds), the fact's data as stored and, once decode has
// run, decoded, and its stored diffs column.
type factRow struct {
	e      Entry
	at     sql.NullString // the fact's time column, which decode parses into e.Time
	data   []byte
	f      events.Fact
	stored []byte
}

// decode decodes the fact's data into f and the entry's input, output and
// failed, and its time into the entry's.
func (fr *factRow) decode() error {
	if err := decodeStoredFact(fr.data, &fr.f); err != nil {
		return err
	}
	fr.e.Time = parseTS(fr.at)
	fr.e.Input, fr.e.Output, fr.e.Failed = fr.f.Input, fr.f.Output, fr.f.Failed
	return nil
}

// openTimeline reads task id, its attempts, and the sequences of its
// plugin events (for calls whose fact does not carry them), or returns
// ErrNotFound.
func (d *DB) openTimeline(ctx context.Context, id string) (*timelineReader, error) {
	key, t, err := d.taskWithKey(ctx, id)
	if err != nil {
		return nil, err
	}
	tr := &timelineReader{d: d, id: id, key: key, task: t}
	if tr.seqs, err = d.pluginEventSeqs(ctx, id, key); err != nil {
		return nil, err
	}
	return tr, nil
}

// eachFact calls fn with each fact of the task, in stream order, its data
// and its time not decoded yet. fn gets the same factRow each time; the fact's data and
// stored diffs are the bytes of the strings go-sqlite3 returns (textCol),
// which stay valid but must not be changed.
func (tr *timelineReader) eachFact(ctx context.Context, fn func(fr *factRow) error) error {
	rows, err := tr.d.query(ctx, `SELECT seq, idx, time, trigger, component, attempt, run, event_id, source, data,
		replay, diffs FROM facts WHERE task_key = +? ORDER BY pos`, tr.key)
	if err != nil {
		return fmt.Errorf("reading timeline of %s: %w", tr.id, err)
	}
	defer rows.Close()
	var at, replay sql.NullString // NULL costs no string
	var seq int64
	var data, stored []byte
	var fr factRow
	e := &fr.e
	dest := []any{
		intCol[int64]{&seq},
		intCol[int]{&e.Index},
		textNull{&at},
		&e.Trigger, &e.Component,
		intCol[int]{&e.Attempt},
		intCol[int]{&e.Run},
		&e.EventID, &e.Source,
		textCol{&data},
		textNull{&replay},
		textCol{&stored},
	}
	for rows.Next() {
		fr = factRow{}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("reading timeline of %s: %w", tr.id, err)
		}
		e.Replay = replay.String
		fr.at, fr.data, fr.stored = at, data, stored
		e.Seq = seqFromSQL(seq)
		if err := fn(&fr); err != nil {
			return fmt.Errorf("reading timeline of %s: fact %d: %w", tr.id, seq, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading timeline of %s: %w", tr.id, err)
	}
	return nil
}

// actions reads the operators' actions on the task.
func (tr *timelineReader) actions(ctx context.Context) ([]Action, error) {
	return tr.d.actions(ctx, `WHERE o.task_key = +? ORDER BY o.seq`, tr.key)
}

// call is call j of fact fr as the timeline shows it.
func (tr *timelineReader) call(fr *factRow, j int, diffs [][]Change) Call {
	c := &fr.f.Calls[j]
	call := Call{
		FactSeq: fr.e.Seq, FactIdx: fr.e.Index, Idx: j, TaskID: tr.id, Trigger: fr.e.Trigger, Attempt: fr.e.Attempt,
		Plugin: c.Plugin, Version: c.Version, Invocation: c.Invocation, Outcome: string(c.Outcome), Policy: c.Policy,
		Reason: c.Reason, ContentType: c.ContentType, Patch: c.Patch, LatencyUS: c.LatencyUS, Shadow: c.Shadow,
		InvokeSeq: c.InvokeSeq, PatchSeq: c.PatchSeq,
	}
	if call.InvokeSeq == 0 {
		call.InvokeSeq = tr.seqs["invoke\x00"+c.Invocation]
	}
	if call.PatchSeq == 0 {
		call.PatchSeq = tr.seqs["patch\x00"+c.Invocation]
	}
	if diffs != nil {
		call.Changes = diffs[j]
	}
	return call
}

// pluginEventSeqs maps "kind\x00invocation" to the sequence of the first
// invocation or patch event of that invocation, for task id (key).
func (d *DB) pluginEventSeqs(ctx context.Context, id string, key int64) (map[string]uint64, error) {
	rows, err := d.query(ctx, `SELECT kind, invocation, min(seq) FROM plugin_events
		WHERE task_key = +? GROUP BY kind, invocation`, key)
	if err != nil {
		return nil, fmt.Errorf("reading plugin events of %s: %w", id, err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var kind, inv string
		var seq int64
		if err := rows.Scan(&kind, &inv, &seq); err != nil {
			return nil, fmt.Errorf("reading plugin events of %s: %w", id, err)
		}
		out[kind+"\x00"+inv] = seqFromSQL(seq)
	}
	return out, rows.Err()
}

const callColumns = `c.fact_seq, c.fact_idx, c.idx, coalesce(k.id, ''), c.trigger, c.attempt, c.plugin, c.version, c.invocation,
	c.outcome, c.policy, c.reason, c.content_type, c.patch, c.latency_us, c.shadow,
	coalesce(c.invoke_seq, (SELECT min(e.seq) FROM plugin_events e
		WHERE e.task_key = c.task_key AND e.invocation = c.invocation AND e.kind = 'invoke')),
	coalesce(c.patch_seq, (SELECT min(e.seq) FROM plugin_events e
		WHERE e.task_key = c.task_key AND e.invocation = c.invocation AND e.kind = 'patch'))`

func (d *DB) calls(ctx context.Context, where string, args []any, order string, limit int) ([]Call, error) {
	q := `SELECT ` + callColumns + ` FROM plugin_calls c LEFT JOIN task_keys k ON k.key = c.task_key`
	if where != "" {
		q += " WHERE " + where
	}
	q += " ORDER BY " + order
	if limit > 0 {
		q += " LIMIT " + strconv.Itoa(limit) //nolint:gosec // G202: an integer; where and order are built of this package's own column names, the values bound
	}
	rows, err := d.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading plugin calls: %w", err)
	}
	defer rows.Close()
	var out []Call
	for rows.Next() {
		var c Call
		var seq int64
		var patch sql.NullString
		var inv, pat sql.NullInt64
		if err := rows.Scan(&seq, &c.FactIdx, &c.Idx, &c.TaskID, &c.Trigger, &c.Attempt, &c.Plugin, &c.Version, &c.Invocation, &c.Outcome,
			&c.Policy, &c.Reason, &c.ContentType, &patch, &c.LatencyUS, &c.Shadow, &inv, &pat); err != nil {
			return nil, fmt.Errorf("reading plugin calls: %w", err)
		}
		c.FactSeq, c.Patch = seqFromSQL(seq), raw(patch)
		c.InvokeSeq, c.PatchSeq = seqFromSQL(inv.Int64), seqFromSQL(pat.Int64)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading plugin calls: %w", err)
	}
	return out, nil
}

// CallFilter selects plugin calls. Empty fields do not filter.
type CallFilter struct {
	Plugin  string
	Version string
	// Outcome is one of the events.Outcome values.
	Outcome string
	Trigger string
	TaskID  string
	// Limit of one page. Defaults to DefaultLimit, at most MaxLimit.
	Limit int
	// Cursor continues from a previous page's Next.
	Cursor string
}

// CallPage is a page of plugin calls, in stream order.
type CallPage struct {
	Calls []Call `json:"calls"`
	Next  string `json:"next,omitempty"`
}

// PluginCalls lists plugin calls matching f in stream order, a page at a
// time.
func (d *DB) PluginCalls(ctx context.Context, f CallFilter) (CallPage, error) {
	limit := clampLimit(f.Limit)
	var where []string
	var args []any
	for _, c := range []struct{ col, v string }{
		{"c.plugin", f.Plugin}, {"c.version", f.Version}, {"c.outcome", f.Outcome}, {"c.trigger", f.Trigger},
	} {
		if c.v != "" {
			where, args = append(where, c.col+" = ?"), append(args, c.v)
		}
	}
	if f.TaskID != "" {
		where = append(where, "(c.fact_seq, c.fact_idx) IN (SELECT seq, idx FROM facts WHERE task_key = (SELECT key FROM task_keys WHERE id = ?))")
		args = append(args, f.TaskID)
	}
	if f.Cursor != "" {
		parts, err := decodeCursor(f.Cursor, 3)
		if err != nil {
			return CallPage{}, err
		}
		seq, err1 := strconv.ParseInt(parts[0], 10, 64)
		fidx, err2 := strconv.Atoi(parts[1])
		idx, err3 := strconv.Atoi(parts[2])
		if err1 != nil || err2 != nil || err3 != nil {
			return CallPage{}, fmt.Errorf("%w: %q", ErrBadCursor, f.Cursor)
		}
		where, args = append(where, "(c.fact_seq, c.fact_idx, c.idx) > (?, ?, ?)"), append(args, seq, fidx, idx)
	}
	calls, err := d.calls(ctx, strings.Join(where, " AND "), args, "c.fact_seq, c.fact_idx, c.idx", limit+1)
	if err != nil {
		return CallPage{}, err
	}
	page := CallPage{Calls: calls}
	if page.Calls == nil {
		page.Calls = []Call{}
	}
	if len(page.Calls) > limit {
		page.Calls = page.Calls[:limit]
		last := page.Calls[limit-1]
		page.Next = encodeCursor(strconv.FormatUint(last.FactSeq, 10), strconv.Itoa(last.FactIdx), strconv.Itoa(last.Idx))
	}
	return page, nil
}

// Blame says which plugin call last changed a task field.
type Blame struct {
	// Path is a JSON Pointer into the task record (events.Task's JSON):
	// /kw/a, /args/0, /result, /priority, /extra/x, ...
	Path    string `json:"path"`
	Plugin  string `json:"plugin"`
	Version string `json:"version,omitempty"`
	// Seq and FactIdx locate the fact that recorded the call (its
	// message's stream sequence and its index there), Idx is the call's
	// position in it.
	Seq     uint64 `json:"seq"`
	FactIdx int    `json:"fact_idx,omitempty"`
	Idx     int    `json:"idx"`
	Trigger string `json:"trigger"`
	Attempt int    `json:"attempt"`
	// Op is add, remove or replace; Value the new value (none for remove).
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value,omitempty"`
}

// Blame returns, for each field of task id that a plugin changed, the last
// plugin call that changed it, by path. A task that exists but that no
// plugin changed has no rows; an unknown task is ErrNotFound.
func (d *DB) Blame(ctx context.Context, id string) ([]Blame, error) {
	var n int
	if err := d.r.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE key = (SELECT key FROM task_keys WHERE id = ?)`, id).Scan(&n); err != nil {
		return nil, fmt.Errorf("reading blame of %s: %w", id, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	rows, err := d.r.QueryContext(ctx, `SELECT path, plugin, version, seq, fact_idx, idx, trigger, attempt, op, value
		FROM field_blame WHERE task_key = (SELECT key FROM task_keys WHERE id = ?) ORDER BY path`, id)
	if err != nil {
		return nil, fmt.Errorf("reading blame of %s: %w", id, err)
	}
	defer rows.Close()
	out := []Blame{}
	for rows.Next() {
		var b Blame
		var seq int64
		var v sql.NullString
		if err := rows.Scan(&b.Path, &b.Plugin, &b.Version, &seq, &b.FactIdx, &b.Idx, &b.Trigger, &b.Attempt, &b.Op, &v); err != nil {
			return nil, fmt.Errorf("reading blame of %s: %w", id, err)
		}
		b.Seq, b.Value = seqFromSQL(seq), raw(v)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading blame of %s: %w", id, err)
	}
	return out, nil
}

// Rejected is a message of the log that is not a valid event of ours.
type Rejected struct {
	// Seq is the stream sequence of the message, Index the event's
	// position in it (a phase message holds several facts).
	Seq     uint64 `json:"seq"`
	Index   int    `json:"index,omitempty"`
	Subject string `json:"subject"`
	Type    string `json:"type,omitempty"`
	EventID string `json:"event_id,omitempty"`
	Reason  string `json:"reason"`
}

// RejectedEvents lists rejected messages after stream sequence after, in
// order, at most limit (DefaultLimit when 0, at most MaxLimit), and the
// rest of the last message's (the facts of a phase message are rejected
// one by one): the next page starts after a whole message.
func (d *DB) RejectedEvents(ctx context.Context, after uint64, limit int) ([]Rejected, error) {
	limit = clampLimit(limit)
	out, err := d.rejected(ctx, `WHERE seq > ? ORDER BY seq, idx LIMIT ?`, seqToSQL(after), limit)
	if err != nil || len(out) < limit {
		return out, err
	}
	last := out[len(out)-1]
	rest, err := d.rejected(ctx, `WHERE seq = ? AND idx > ? ORDER BY idx`, seqToSQL(last.Seq), last.Index)
	return append(out, rest...), err
}

func (d *DB) rejected(ctx context.Context, where string, args ...any) ([]Rejected, error) {
	//nolint:gosec // G202: where is one of this package's constant clauses; the values are bound
	rows, err := d.r.QueryContext(ctx, `SELECT seq, idx, subject, type, event_id, reason FROM rejected_events `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("reading rejected events: %w", err)
	}
	defer rows.Close()
	out := []Rejected{}
	for rows.Next() {
		var r Rejected
		var seq int64
		if err := rows.Scan(&seq, &r.Index, &r.Subject, &r.Type, &r.EventID, &r.Reason); err != nil {
			return nil, fmt.Errorf("reading rejected events: %w", err)
		}
		r.Seq = seqFromSQL(seq)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading rejected events: %w", err)
	}
	return out, nil
}

// parseLayout reads a time as ts writes it (timeLayout, UTC), without
// time.Parse's layout interpretation: a tasks page reads six per task, and
// time.Parse was a tenth of its time (BenchmarkConsole). Anything else is
// not ok, for time.Parse to read.
func parseLayout(s string) (time.Time, bool) {
	y, mo, d, h, mi, sec, ns, ok := layoutFields(s)
	if !ok {
		return time.Time{}, false
	}
	return time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC), true
}

// layoutFields reads the fields of a time as ts writes it (timeLayout);
// not ok for anything else, February 30th and the like included, which
// time.Parse refuses too.
func layoutFields(s string) (y, mo, d, h, mi, sec, ns int, ok bool) {
	if len(s) != len(timeLayout) || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' || s[29] != 'Z' {
		return 0, 0, 0, 0, 0, 0, 0, false
	}
	// num reads the digits s[i:j]; -1 for anything else. Its loop over
	// fixed positions was a fifth of the cost of a closure's (the tasks
	// page reads six times per task).
	num := func(i, j int) int {
		n := 0
		for ; i < j; i++ {
			c := s[i] - '0'
			if c > 9 {
				return -1
			}
			n = n*10 + int(c)
		}
		return n
	}
	y, mo, d, h, mi, sec, ns = num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19), num(20, 29)
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > daysIn(mo, y) || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59 || ns < 0 {
		return 0, 0, 0, 0, 0, 0, 0, false
	}
	return y, mo, d, h, mi, sec, ns, true
}

// daysIn is the number of days of month mo (1-12) of year y, Gregorian.
func daysIn(mo, y int) int {
	switch mo {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
