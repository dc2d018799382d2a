package projections

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// ApplyStats counts what one Apply did.
type ApplyStats struct {
	// Applied events, rejected ones included.
	Applied int
	// Rejected events: not valid events of ours; recorded in
	// rejected_events.
	Rejected int
	// Skipped events were at or below the stored sequence: already applied.
	Skipped int
	// LastSeq is the stored sequence after the batch.
	LastSeq uint64
}

// Apply applies a batch of log events, in the order given (stream order),
// in one transaction that also stores the last applied stream sequence.
// Events at or below the stored sequence are skipped, so applying the same
// batch twice changes nothing. An event that is not a valid event of ours is
// recorded in rejected_events and changes nothing else. Apply returns an
// error only when the database fails; the transaction is then rolled back.
//
// Apply is deterministic: it reads no clock. It is Prepare and then
// ApplyPrepared.
func (d *DB) Apply(ctx context.Context, batch []bus.Stored) (ApplyStats, error) {
	ps := make([]Prepared, len(batch))
	for i := range batch {
		ps[i] = Prepare(batch[i])
	}
	return d.ApplyPrepared(ctx, ps)
}

// ApplyPrepared is Apply for events already prepared.
func (d *DB) ApplyPrepared(ctx context.Context, batch []Prepared) (st ApplyStats, err error) {
	if d.w == nil {
		return st, errors.New("applying events: database opened read-only")
	}
	if d.ap == nil {
		ap, err := newApplier(ctx, d.w)
		if err != nil {
			return st, err
		}
		d.ap = ap
	}
	// mattn/go-sqlite3 watches a cancellable context with a goroutine per
	// statement; a batch is short, so it runs to its end once begun.
	ctx = context.WithoutCancel(ctx)
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return st, fmt.Errorf("applying events: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
			clear(d.ap.tasks) // it may hold states of rows rolled back
		}
	}()
	last, err := lastSeq(ctx, tx)
	if err != nil {
		return st, err
	}
	a := d.ap.bind(ctx, tx)
	defer a.release()
	for i := range batch {
		p := &batch[i]
		if p.seq <= last {
			st.Skipped++
			continue
		}
		rejected, err := a.write(p)
		if err != nil {
			return st, fmt.Errorf("applying event at sequence %d: %w", p.seq, err)
		}
		if rejected {
			st.Rejected++
		}
		st.Applied++
		last = p.seq
	}
	st.LastSeq = last
	if st.Applied == 0 {
		return st, tx.Rollback()
	}
	if _, err := a.s(stMeta).ExecContext(ctx, int64(last)); err != nil {
		return st, fmt.Errorf("storing the last applied sequence: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return st, fmt.Errorf("committing events: %w", err)
	}
	return st, nil
}

// Statements prepared once on the writer connection.
const (
	stMeta = iota
	stHistory
	stCall
	stInvoke
	stPatch
	stDead
	stReject
	stGetTask
	stInsTask
	stTag
	stProcess
	stExecArgs
	stExecuted
	stFinal
	stAttemptNew
	stAttemptProcess
	stAttemptExecuted
	stAttemptRuns
	stAttemptFinal
	stBlameClear
	stBlame
	stCount
)

var statements = [stCount]string{
	stMeta: `INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
	stHistory: `INSERT INTO trigger_history (seq, event_id, source, trigger, component, scope, task_id, task_name, node,
		attempt, run, time, input, output, failed, calls, replay) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stCall: `INSERT INTO plugin_calls (fact_seq, idx, task_id, trigger, attempt, plugin, version, invocation, outcome,
		policy, reason, content_type, patch, latency_us, shadow, invoke_seq, patch_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stInvoke: `INSERT INTO invocations (id, plugin, version, trigger, task_id, attempt, run, invoke_seq, invoked_at, timeout_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET plugin = excluded.plugin, version = excluded.version, trigger = excluded.trigger,
			task_id = excluded.task_id, attempt = excluded.attempt, run = excluded.run, invoke_seq = excluded.invoke_seq,
			invoked_at = excluded.invoked_at, timeout_ms = excluded.timeout_ms
		WHERE invocations.invoke_seq IS NULL`,
	stPatch: `INSERT INTO invocations (id, plugin, version, trigger, task_id, attempt, run, patch_seq, answered_at,
		patch_version, content_type, patch, plugin_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET patch_seq = excluded.patch_seq, answered_at = excluded.answered_at,
			patch_version = excluded.patch_version, content_type = excluded.content_type, patch = excluded.patch,
			plugin_error = excluded.plugin_error
		WHERE invocations.patch_seq IS NULL`,
	stDead: `INSERT INTO dead_letters (seq, plugin, stream, sequence, consumer, subject, deliveries, reason, time)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stReject:  `INSERT INTO rejected_events (seq, subject, type, event_id, reason) VALUES (?, ?, ?, ?, ?)`,
	stGetTask: `SELECT attempt, status FROM tasks WHERE id = ?`,
	stInsTask: `INSERT INTO tasks (id, name, queue, priority, status, attempt, retries_left, args_submitted, kw_submitted,
		result, error, reason, retry_parent, retry_child, worker, tags, extra, idempotency_key, trace,
		created_at, queued_at, started_at, finished_at, updated_at, first_seq, last_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stTag: `INSERT OR IGNORE INTO task_tags (tag, task_id) VALUES (?, ?)`,
	stProcess: `UPDATE tasks SET status = ?, attempt = ?, priority = ?, retries_left = ?, worker = ?, retry_parent = ?,
		retry_child = '', extra = ?, result = NULL, error = '', reason = '', args_executed = NULL, kw_executed = NULL,
		started_at = ?, executed_at = NULL, finished_at = NULL, updated_at = ?, last_seq = ? WHERE id = ?`,
	stExecArgs: `UPDATE tasks SET args_executed = ?, kw_executed = ?, updated_at = ?, last_seq = ?
		WHERE id = ? AND attempt = ? AND status = 'process'`,
	stExecuted: `UPDATE tasks SET executed_at = ?, updated_at = ?, last_seq = ?
		WHERE id = ? AND attempt = ? AND status = 'process'`,
	stFinal: `UPDATE tasks SET status = ?, attempt = ?, priority = ?, retries_left = ?, worker = ?, result = ?, error = ?,
		reason = ?, retry_parent = ?, retry_child = ?, extra = ?, finished_at = ?, updated_at = ?, last_seq = ? WHERE id = ?`,
	stAttemptNew: `INSERT INTO attempts (task_id, attempt, status, queued_at, retry_parent) VALUES (?, ?, 'new', ?, ?)
		ON CONFLICT (task_id, attempt) DO NOTHING`,
	stAttemptProcess: `INSERT INTO attempts (task_id, attempt, status, worker, runs, started_at, retry_parent)
		VALUES (?, ?, 'process', ?, ?, ?, ?)
		ON CONFLICT (task_id, attempt) DO UPDATE SET status = 'process', worker = excluded.worker,
			runs = max(attempts.runs, excluded.runs), started_at = excluded.started_at, executed_at = NULL
		WHERE attempts.final_seq IS NULL`,
	stAttemptExecuted: `UPDATE attempts SET executed_at = ? WHERE task_id = ? AND attempt = ? AND final_seq IS NULL`,
	stAttemptRuns:     `UPDATE attempts SET runs = max(runs, ?) WHERE task_id = ? AND attempt = ? AND final_seq IS NULL`,
	stAttemptFinal: `INSERT INTO attempts (task_id, attempt, status, worker, finished_at, result, error, reason,
		retry_parent, retry_child, final_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (task_id, attempt) DO UPDATE SET status = excluded.status, worker = excluded.worker,
			finished_at = excluded.finished_at, result = excluded.result, error = excluded.error,
			reason = excluded.reason, retry_child = excluded.retry_child, final_seq = excluded.final_seq
		WHERE attempts.final_seq IS NULL`,
	stBlameClear: `DELETE FROM field_blame WHERE task_id = ? AND path > ? AND path < ?`,
	stBlame: `INSERT OR REPLACE INTO field_blame (task_id, path, plugin, version, seq, idx, trigger, attempt, op, value)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
}

// applier holds the writer's prepared statements, and a cache of what the
// committed rows say about tasks (one writer per database: nobody else
// changes them). A transaction that fails empties the cache.
type applier struct {
	stmts [stCount]*sql.Stmt
	tasks map[string]taskState
}

func newApplier(ctx context.Context, db *sql.DB) (*applier, error) {
	ap := &applier{tasks: make(map[string]taskState)}
	for i, q := range statements {
		s, err := db.PrepareContext(ctx, q)
		if err != nil {
			_ = ap.close()
			return nil, fmt.Errorf("preparing projection statement %d: %w", i, err)
		}
		ap.stmts[i] = s
	}
	return ap, nil
}

func (ap *applier) close() error {
	var errs []error
	for _, s := range ap.stmts {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// txApplier applies events within one transaction.
type txApplier struct {
	ctx   context.Context
	tx    *sql.Tx
	ap    *applier
	bound [stCount]*sql.Stmt
}

func (ap *applier) bind(ctx context.Context, tx *sql.Tx) *txApplier {
	return &txApplier{ctx: ctx, tx: tx, ap: ap}
}

// s returns statement i bound to the transaction (on the one writer
// connection database/sql reuses the prepared statement).
func (a *txApplier) s(i int) *sql.Stmt {
	if a.bound[i] == nil {
		a.bound[i] = a.tx.StmtContext(a.ctx, a.ap.stmts[i])
	}
	return a.bound[i]
}

func (a *txApplier) release() {
	for _, s := range a.bound {
		if s != nil {
			_ = s.Close()
		}
	}
}

func (a *txApplier) exec(i int, args ...any) error {
	if _, err := a.s(i).ExecContext(a.ctx, args...); err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(statements[i])[0]+" "+stmtTable(i), err)
	}
	return nil
}

func stmtTable(i int) string {
	f := strings.Fields(statements[i])
	for j, w := range f {
		if (w == "INTO" || w == "UPDATE" || w == "FROM") && j+1 < len(f) {
			return f[j+1]
		}
	}
	return ""
}

// rejection is the reason an event is not applied.
type rejection string

// Event kinds of a prepared event.
const (
	kindReject = iota
	kindFact
	kindInvoke
	kindPatch
	kindDead
)

// Prepared is a log event decoded and checked, with everything Apply writes
// computed except what depends on the database: Prepare is pure, so the
// projector runs it beside the goroutine that writes SQLite.
type Prepared struct {
	seq     uint64
	subject string
	ev      events.Event
	kind    int
	reject  rejection

	// Facts.
	trigger          events.Trigger
	fact             events.Fact
	taskID, taskName any
	node             any
	at               any // event time as stored
	input, output    any
	eff              effect
	blame            []blameRow
	dl               events.DeadLetter
	patchText        any
}

// Seq is the event's stream sequence.
func (p *Prepared) Seq() uint64 { return p.seq }

// Prepare decodes and checks a log event for Apply. It reads no database
// and no clock.
func Prepare(s bus.Stored) Prepared {
	p := Prepared{seq: s.Seq, subject: s.Subject, ev: s.Event}
	if r := p.prepare(s.Err); r != "" {
		p.kind, p.reject = kindReject, r
	}
	return p
}

func (p *Prepared) prepare(decodeErr error) rejection {
	if decodeErr != nil {
		return rejection(decodeErr.Error())
	}
	ps, err := events.ParseSubject(p.subject)
	if err != nil {
		return rejection(err.Error())
	}
	ev := &p.ev
	p.at = ts(ev.Time)
	switch ps.Kind {
	case "trigger":
		p.kind = kindFact
		return p.prepareFact(ps)
	case "invoke":
		if ev.Type != events.TypeInvokePrefix+ps.Trigger {
			return rejection(fmt.Sprintf("type %q on invocation subject %s", ev.Type, p.subject))
		}
		p.kind = kindInvoke
		return sameIdentity(ev, ps)
	case "patch":
		if ev.Type != events.TypePatch {
			return rejection(fmt.Sprintf("type %q on patch subject %s", ev.Type, p.subject))
		}
		if r := sameIdentity(ev, ps); r != "" {
			return r
		}
		if len(ev.Data) > 0 && !json.Valid(ev.Data) {
			return "patch body is not JSON"
		}
		p.kind, p.patchText = kindPatch, nullText(ev.Data)
		return ""
	case "dead":
		if ev.Type != events.TypeDeadLetter {
			return rejection(fmt.Sprintf("type %q on dead-letter subject %s", ev.Type, p.subject))
		}
		if ev.Plugin != ps.Plugin {
			return rejection(fmt.Sprintf("plugin attribute %q does not match subject %s", ev.Plugin, p.subject))
		}
		if err := json.Unmarshal(ev.Data, &p.dl); err != nil {
			return rejection("dead letter data: " + err.Error())
		}
		p.kind = kindDead
		return ""
	}
	return rejection(fmt.Sprintf("subject %s is not one the event log carries", p.subject))
}

func sameIdentity(ev *events.Event, ps events.ParsedSubject) rejection {
	switch {
	case ev.Plugin != ps.Plugin:
		return rejection(fmt.Sprintf("plugin attribute %q does not match the subject's %q", ev.Plugin, ps.Plugin))
	case ev.Trigger != ps.Trigger:
		return rejection(fmt.Sprintf("trigger attribute %q does not match the subject's %q", ev.Trigger, ps.Trigger))
	case ev.TaskID != ps.ID:
		return rejection(fmt.Sprintf("task id attribute %q does not match the subject's %q", ev.TaskID, ps.ID))
	}
	return ""
}

// prepareFact checks a trigger fact and computes its rows: the trigger
// history row, its plugin calls, the task state it changes, and the blame of
// the fields its patches changed.
func (p *Prepared) prepareFact(ps events.ParsedSubject) rejection {
	ev := &p.ev
	if ev.Type != events.TypeTriggerPrefix+ps.Trigger {
		return rejection(fmt.Sprintf("type %q on trigger subject %s", ev.Type, p.subject))
	}
	t, ok := events.Lookup(ps.Trigger)
	if !ok { // Decode validated the type's trigger; be safe anyway
		return rejection(fmt.Sprintf("unknown trigger %q", ps.Trigger))
	}
	p.trigger = t
	switch t.Scope {
	case events.ScopeTask:
		if ev.TaskID != ps.ID {
			return rejection(fmt.Sprintf("task id attribute %q does not match the subject's %q", ev.TaskID, ps.ID))
		}
		p.taskID, p.taskName = ev.TaskID, ev.TaskName
	case events.ScopeProcess:
		if ev.TaskID != "" {
			return rejection(fmt.Sprintf("process-scope trigger %s with a task id attribute", t.Name))
		}
		p.node = ps.ID
	case events.ScopeNone:
		return rejection(fmt.Sprintf("trigger %s is never fired by qtasks: %s", t.Name, t.Note))
	}
	f := &p.fact
	if err := decodeFact(ev.Data, f); err != nil {
		return rejection("fact data: " + err.Error())
	}
	if len(f.Input) == 0 {
		return "fact without input"
	}
	if t.Scope == events.ScopeTask && ev.Replay == "" {
		var r rejection
		if p.eff, r = taskEffect(t.Name, ev, f); r != "" {
			return r
		}
		if len(f.Calls) > 0 {
			p.blame = blameOf(t.Name, f.Input, f.Calls)
		}
	}
	p.input, p.output = string(f.Input), outputText(f.Input, f.Output)
	return ""
}

// write writes a prepared event. It reports whether the event was
// rejected; an error is a database failure.
func (a *txApplier) write(p *Prepared) (rejected bool, err error) {
	ev := &p.ev
	seq := int64(p.seq)
	switch p.kind {
	case kindReject:
		return true, a.exec(stReject, seq, p.subject, ev.Type, ev.ID, truncate(string(p.reject), 2000))
	case kindInvoke:
		return false, a.exec(stInvoke, ev.ID, ev.Plugin, ev.PluginVersion, ev.Trigger, ev.TaskID, ev.Attempt, ev.Run,
			seq, p.at, ev.TimeoutMS)
	case kindPatch:
		return false, a.exec(stPatch, ev.Invocation, ev.Plugin, ev.PluginVersion, ev.Trigger, ev.TaskID, ev.Attempt, ev.Run,
			seq, p.at, ev.PluginVersion, ev.DataContentType, p.patchText, ev.PluginError)
	case kindDead:
		dl := &p.dl
		return false, a.exec(stDead, seq, ev.Plugin, dl.Stream, int64(dl.Sequence), dl.Consumer, dl.Subject,
			dl.Deliveries, dl.Reason, p.at)
	}
	t, f := &p.trigger, &p.fact
	if err := a.exec(stHistory, seq, ev.ID, ev.Source, t.Name, string(t.Component), string(t.Scope), p.taskID, p.taskName, p.node,
		ev.Attempt, ev.Run, p.at, p.input, p.output, f.Failed, len(f.Calls), ev.Replay); err != nil {
		return false, err
	}
	for i := range f.Calls {
		c := &f.Calls[i]
		if err := a.exec(stCall, seq, i, p.taskID, t.Name, ev.Attempt, c.Plugin, c.Version, c.Invocation, string(c.Outcome),
			c.Policy, c.Reason, c.ContentType, nullText(c.Patch), c.LatencyUS, c.Shadow, nullSeq(c.InvokeSeq), nullSeq(c.PatchSeq)); err != nil {
			return false, err
		}
	}
	if p.eff.kind != effNone {
		if err := a.task(p); err != nil {
			return false, err
		}
	}
	for _, b := range p.blame {
		// A change of a field supersedes what was said about its parts.
		if err := a.exec(stBlameClear, ev.TaskID, b.path+"/", b.path+"0"); err != nil {
			return false, err
		}
		if err := a.exec(stBlame, ev.TaskID, b.path, b.call.Plugin, b.call.Version, seq, b.idx, t.Name, ev.Attempt, b.op,
			nullText(b.value)); err != nil {
			return false, err
		}
	}
	return false, nil
}

// Task state effects of lifecycle facts.
const (
	effNone     = iota
	effNew      // storage_add: the record is stored with status new
	effProcess  // storage_update: a run of the attempt starts (status process)
	effExecArgs // task_executor_args_replace: the arguments the function got
	effExecuted // task_executor_before_execute: the function is called
	effRuns     // broker_running_older_tasks: a run resumed after a crash
	effFinal    // storage_remove_finished_task: the attempt's final record
)

type effect struct {
	kind     int
	model    events.Task
	args, kw json.RawMessage
}

// taskEffect decodes what a fact does to its task, or why it cannot.
func taskEffect(trigger string, ev *events.Event, f *events.Fact) (effect, rejection) {
	doc := f.Input
	if len(f.Output) > 0 {
		doc = f.Output
	}
	model := func(kind int, v any, m *events.Task) (effect, rejection) {
		if err := json.Unmarshal(doc, v); err != nil {
			return effect{}, rejection(fmt.Sprintf("%s payload: %v", trigger, err))
		}
		if m.ID != ev.TaskID {
			return effect{}, rejection(fmt.Sprintf("%s record is of task %q, the event of %q", trigger, m.ID, ev.TaskID))
		}
		if m.Attempt < 1 {
			return effect{}, rejection(fmt.Sprintf("%s record has attempt %d", trigger, m.Attempt))
		}
		return effect{kind: kind, model: *m}, ""
	}
	switch trigger {
	case events.StorageAdd:
		var p struct {
			Model events.Task `json:"task_status"`
		}
		return model(effNew, &p, &p.Model)
	case events.StorageUpdate:
		var p struct {
			Kw struct {
				Mapping events.Task `json:"mapping"`
			} `json:"kw"`
		}
		return model(effProcess, &p, &p.Kw.Mapping)
	case events.StorageRemoveFinishedTask:
		doc = f.Input // one-way: the final record as decided
		var p struct {
			Model events.Task `json:"model"`
		}
		e, r := model(effFinal, &p, &p.Model)
		if r == "" && !events.FinalStatus(e.model.Status) {
			return effect{}, rejection(fmt.Sprintf("final record with status %q", e.model.Status))
		}
		return e, r
	case events.TaskExecutorArgsReplace:
		var p struct {
			Args json.RawMessage `json:"args"`
			Kw   json.RawMessage `json:"kw"`
		}
		if err := json.Unmarshal(doc, &p); err != nil {
			return effect{}, rejection(fmt.Sprintf("%s payload: %v", trigger, err))
		}
		return effect{kind: effExecArgs, args: p.Args, kw: p.Kw}, ""
	case events.TaskExecutorBeforeExecute:
		return effect{kind: effExecuted}, ""
	case events.BrokerRunningOlderTasks:
		return effect{kind: effRuns}, ""
	}
	return effect{}, ""
}

// task applies a lifecycle effect to the tasks and attempts tables.
func (a *txApplier) task(p *Prepared) error {
	ev, e := &p.ev, &p.eff
	seq := int64(p.seq)
	at := p.at
	m := &e.model
	switch e.kind {
	case effExecArgs:
		if err := a.exec(stExecArgs, nullText(e.args), nullText(e.kw), at, seq, ev.TaskID, ev.Attempt); err != nil {
			return err
		}
		return nil
	case effExecuted:
		if err := a.exec(stExecuted, at, at, seq, ev.TaskID, ev.Attempt); err != nil {
			return err
		}
		return a.exec(stAttemptExecuted, at, ev.TaskID, ev.Attempt)
	case effRuns:
		return a.exec(stAttemptRuns, ev.Run, ev.TaskID, ev.Attempt)
	}

	cur, err := a.taskState(m.ID)
	if err != nil {
		return err
	}
	exists, curAttempt, curStatus := cur.exists, cur.attempt, cur.status
	// A record moves forward: a later attempt, or the same attempt that is
	// not decided yet. The first final record of an attempt stands.
	newer := !exists || m.Attempt > curAttempt || (m.Attempt == curAttempt && !events.FinalStatus(curStatus))

	switch e.kind {
	case effNew:
		if !exists {
			if err := a.insertTask(m, events.StatusNew, seq, at, nil, nil); err != nil {
				return err
			}
			a.setTaskState(m.ID, m.Attempt, events.StatusNew)
		}
		return a.exec(stAttemptNew, m.ID, m.Attempt, at, m.RetryParent)
	case effProcess:
		if !exists {
			if err := a.insertTask(m, events.StatusProcess, seq, nil, at, nil); err != nil {
				return err
			}
		} else if newer {
			if err := a.exec(stProcess, events.StatusProcess, m.Attempt, m.Priority, m.Retry, m.Worker, m.RetryParent,
				jsonText(m.Extra), at, at, seq, m.ID); err != nil {
				return err
			}
		}
		if newer {
			a.setTaskState(m.ID, m.Attempt, events.StatusProcess)
		}
		return a.exec(stAttemptProcess, m.ID, m.Attempt, m.Worker, max(ev.Run, 1), at, m.RetryParent)
	case effFinal:
		if !exists {
			if err := a.insertTask(m, m.Status, seq, nil, nil, at); err != nil {
				return err
			}
		} else if newer {
			if err := a.exec(stFinal, m.Status, m.Attempt, m.Priority, m.Retry, m.Worker, nullText(m.Result), m.Error,
				m.Reason, m.RetryParent, m.RetryChild, jsonText(m.Extra), at, at, seq, m.ID); err != nil {
				return err
			}
		}
		if newer {
			a.setTaskState(m.ID, m.Attempt, m.Status)
		}
		if err := a.exec(stAttemptFinal, m.ID, m.Attempt, m.Status, m.Worker, at, nullText(m.Result), m.Error,
			m.Reason, m.RetryParent, m.RetryChild, seq); err != nil {
			return err
		}
		if m.Status == events.StatusRetry {
			// The next attempt of the same task is queued.
			return a.exec(stAttemptNew, m.ID, m.Attempt+1, at, fmt.Sprintf("%s#%d", m.ID, m.Attempt))
		}
	}
	return nil
}

// taskState is what Apply needs to know of a task's row to decide whether a
// record moves it forward.
type taskState struct {
	exists  bool
	attempt int
	status  string
}

// maxCachedTasks bounds the applier's cache of task states; past it the
// cache starts over (a miss reads the row).
const maxCachedTasks = 100_000

func (a *txApplier) taskState(id string) (taskState, error) {
	if st, ok := a.ap.tasks[id]; ok {
		return st, nil
	}
	var st taskState
	err := a.s(stGetTask).QueryRowContext(a.ctx, id).Scan(&st.attempt, &st.status)
	switch {
	case err == nil:
		st.exists = true
	case !errors.Is(err, sql.ErrNoRows):
		return st, fmt.Errorf("reading task %s: %w", id, err)
	}
	a.cacheTask(id, st)
	return st, nil
}

func (a *txApplier) setTaskState(id string, attempt int, status string) {
	a.cacheTask(id, taskState{exists: true, attempt: attempt, status: status})
}

func (a *txApplier) cacheTask(id string, st taskState) {
	if len(a.ap.tasks) >= maxCachedTasks {
		clear(a.ap.tasks)
	}
	a.ap.tasks[id] = st
}

// insertTask inserts a task row from a record: the first fact of the task in
// the log (normally storage_add; a later one when the log was truncated).
func (a *txApplier) insertTask(m *events.Task, status string, seq int64, queuedAt, startedAt, finishedAt any) error {
	var result any
	if status != events.StatusNew && status != events.StatusProcess {
		result = nullText(m.Result)
	}
	var tags any
	if len(m.Tags) > 0 {
		b, err := json.Marshal(m.Tags)
		if err != nil {
			return fmt.Errorf("encoding tags: %w", err)
		}
		tags = string(b)
	}
	updated := queuedAt
	if updated == nil {
		updated = startedAt
	}
	if updated == nil {
		updated = finishedAt
	}
	if err := a.exec(stInsTask, m.ID, m.Name, m.Queue, m.Priority, status, m.Attempt, m.Retry, nullText(m.Args), nullText(m.Kw),
		result, m.Error, m.Reason, m.RetryParent, m.RetryChild, m.Worker, tags, jsonText(m.Extra), m.IdempotencyKey, m.Trace,
		ts(m.CreatedAt), queuedAt, startedAt, finishedAt, updated, seq, seq); err != nil {
		return err
	}
	for _, tag := range m.Tags {
		if err := a.exec(stTag, tag, m.ID); err != nil {
			return err
		}
	}
	return nil
}

// timeLayout is RFC 3339 in UTC with nanoseconds, fixed width: it sorts as
// text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeLayout)
}

func nullText(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// outputText is a fact's output as stored: NULL when it is the input (a
// one-way trigger, or plugins that changed nothing), which halves what most
// facts of returnable triggers store.
func outputText(input, output []byte) any {
	if len(output) == 0 || bytes.Equal(input, output) {
		return nil
	}
	return string(output)
}

func nullSeq(n uint64) any {
	if n == 0 {
		return nil
	}
	return int64(n)
}

func jsonText(m map[string]json.RawMessage) any {
	if len(m) == 0 {
		return nil
	}
	b, err := json.Marshal(m) // map keys sorted: deterministic
	if err != nil {
		return nil
	}
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
