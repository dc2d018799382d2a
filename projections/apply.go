package projections

import (
	"cmp"
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// ErrPartialMessage is returned by Apply for a batch that holds part of a
// message of the log: a message is applied whole or not at all (its
// position, the stream sequence, cannot say which of its facts were
// applied).
var ErrPartialMessage = errors.New("a batch holds part of a message of the log")

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
// batch twice changes nothing. A batch holds whole messages: every event
// bus.Unpack returns for a message (the facts of a phase message), or
// ErrPartialMessage. An event that is not a valid event of ours is
// recorded in rejected_events and changes nothing else. Apply returns an
// error only when the database fails; the transaction is then rolled back.
//
// Apply is deterministic: it reads no clock. It is Prepare and then
// ApplyPrepared, with the events of a large batch prepared on other
// goroutines while the first ones are written, as the projector prepares
// on its reader goroutine while it writes.
func (d *DB) Apply(ctx context.Context, batch []bus.Stored) (ApplyStats, error) {
	ps := make([]Prepared, len(batch))
	chunks := (len(batch) + prepareChunk - 1) / prepareChunk
	workers := min(runtime.GOMAXPROCS(0)-1, chunks-1)
	if workers < 1 {
		for i := range batch {
			ps[i] = Prepare(batch[i])
		}
		return d.ApplyPrepared(ctx, ps)
	}
	// Prepare is pure and each event's is its own: workers take chunks in
	// order, and the writer, when it gets to a chunk not yet prepared,
	// takes the next chunk nobody has taken rather than wait.
	ready := make([]chan struct{}, chunks)
	for k := range ready {
		ready[k] = make(chan struct{})
	}
	var next atomic.Int64
	take := func() bool {
		k := int(next.Add(1) - 1)
		if k >= chunks {
			return false
		}
		for i := k * prepareChunk; i < min((k+1)*prepareChunk, len(batch)); i++ {
			ps[i] = Prepare(batch[i])
		}
		close(ready[k])
		return true
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for range workers {
		wg.Go(func() {
			for take() {
			}
		})
	}
	return d.apply(ctx, len(ps), func(i int) *Prepared {
		if i%prepareChunk == 0 {
			k := i / prepareChunk
		wait:
			for {
				select {
				case <-ready[k]:
					break wait
				default:
				}
				if !take() {
					<-ready[k]
					break
				}
			}
		}
		return &ps[i]
	})
}

// prepareChunk is the number of events Apply prepares at a time: about
// 0.2 ms of work, so that the writer starts soon and waits rarely.
const prepareChunk = 32

// ApplyPrepared is Apply for events already prepared.
func (d *DB) ApplyPrepared(ctx context.Context, batch []Prepared) (ApplyStats, error) {
	return d.apply(ctx, len(batch), func(i int) *Prepared { return &batch[i] })
}

// apply applies the n events that event(0) to event(n-1) return, in
// that order.
func (d *DB) apply(ctx context.Context, n int, event func(i int) *Prepared) (st ApplyStats, err error) {
	if d.w == nil {
		return st, errors.New("applying events: database opened read-only")
	}
	// mattn/go-sqlite3 watches a cancellable context with a goroutine per
	// statement; a batch is short, so it runs to its end once begun.
	ctx = context.WithoutCancel(ctx)
	conn, err := d.w.Conn(ctx)
	if err != nil {
		return st, fmt.Errorf("applying events: %w", err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		var err error
		st, err = d.applyRaw(ctx, dc, n, event)
		return err
	})
	return st, err
}

func (d *DB) applyRaw(ctx context.Context, dc any, n int, event func(i int) *Prepared) (st ApplyStats, err error) {
	if err := d.ap.prepare(ctx, dc); err != nil {
		return st, err
	}
	bt, ok := dc.(driver.ConnBeginTx)
	if !ok {
		return st, fmt.Errorf("driver connection %T cannot begin transactions", dc)
	}
	tx, err := bt.BeginTx(ctx, driver.TxOptions{}) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return st, fmt.Errorf("applying events: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
			d.ap.forget() // it may hold states of rows rolled back
		}
	}()
	a := d.ap.bind(ctx)
	row, err := a.query(stLastSeq)
	if err != nil {
		return st, fmt.Errorf("reading the last applied sequence: %w", err)
	}
	var last uint64
	if row != nil {
		last = seqFromSQL(row[0].(int64))
	}
	// The position is the stream sequence of the last message applied: a
	// message (a phase message holds several facts) is applied whole, in
	// one transaction, so that none of its facts is applied twice or lost
	// after a restart.
	stored, prev, open := last, -1, false
	for i := range n {
		p := event(i)
		if p.seq <= stored || p.seq < last || (p.seq == last && p.idx <= prev) {
			st.Skipped++
			continue
		}
		if p.idx != 0 && (p.seq != last || p.idx != prev+1) {
			return st, fmt.Errorf("applying message %d from its event %d (after %d): %w", p.seq, p.idx, prev, ErrPartialMessage)
		}
		rejected, err := a.write(p)
		if err != nil {
			return st, fmt.Errorf("applying event at sequence %d (index %d): %w", p.seq, p.idx, err)
		}
		if rejected {
			st.Rejected++
		}
		st.Applied++
		last, prev, open = p.seq, p.idx, !p.Last()
	}
	st.LastSeq = last
	if st.Applied == 0 {
		return st, tx.Rollback()
	}
	if open {
		return st, fmt.Errorf("applying message %d: the batch ends at its event %d: %w", last, prev, ErrPartialMessage)
	}
	if err := a.flushRows(); err != nil {
		return st, fmt.Errorf("writing the rows of tasks and attempts: %w", err)
	}
	if err := a.exec(stMeta, seqToSQL(last)); err != nil {
		return st, fmt.Errorf("storing the last applied sequence: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return st, fmt.Errorf("committing events: %w", err)
	}
	if d.ckpt != nil {
		d.ckpt.committed(st.Applied)
	}
	return st, nil
}

// Statements prepared once on the writer connection.
const (
	stMeta = iota
	stLastSeq
	stFact
	stCall
	stPluginEvent
	stDead
	stReject
	stGetKey
	stInsKey
	stMaxKey
	stGetTask
	stInsTask
	stTag
	stGetAttempt
	stInsAttempt
	stPutAttempt
	stBlameClear
	stBlame
	stOperator
	stSchedule
	stState // projections/flow.go
	stChain // projections/flow.go
	stLimit // projections/flow.go
	stQueuedAt
	stCount
)

var statements = [stCount]string{
	stMeta:    `INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
	stLastSeq: `SELECT value FROM meta WHERE key = 'last_seq'`,
	stFact: `INSERT INTO facts (pos, seq, idx, task_key, node, trigger, component, attempt, run, time, event_id, source, data, replay, diffs)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stCall: `INSERT INTO plugin_calls (fact_seq, fact_idx, idx, task_key, trigger, attempt, plugin, version, invocation, outcome,
		policy, reason, content_type, patch, latency_us, shadow, invoke_seq, patch_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stPluginEvent: `INSERT INTO plugin_events (seq, kind, task_key, invocation, plugin, version, trigger, attempt, run, time,
		timeout_ms, content_type, data, plugin_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stDead: `INSERT INTO dead_letters (seq, plugin, stream, sequence, consumer, subject, deliveries, reason, time)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stReject:  `INSERT INTO rejected_events (seq, idx, subject, type, event_id, reason) VALUES (?, ?, ?, ?, ?, ?)`,
	stGetKey:  `SELECT key FROM task_keys WHERE id = ?`,
	stInsKey:  `INSERT INTO task_keys (key, id) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
	stMaxKey:  `SELECT coalesce(max(key), 0) FROM task_keys`,
	stGetTask: `SELECT attempt, status FROM tasks WHERE key = ?`,
	stInsTask: `INSERT INTO tasks (key, id, name, queue, priority, status, attempt, retries_left, args_submitted, kw_submitted,
		args_executed, kw_executed, result, error, reason, retry_parent, retry_child, worker, tags, extra, idempotency_key,
		trace, created_at, queued_at, started_at, executed_at, finished_at, updated_at, first_seq, last_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stTag:        `INSERT OR IGNORE INTO task_tags (tag, task_key) VALUES (?, ?)`,
	stGetAttempt: `SELECT ` + attemptColumns + ` FROM attempts WHERE task_key = ? AND attempt = ?`,
	stInsAttempt: `INSERT INTO attempts (` + attemptColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stPutAttempt: `UPDATE attempts SET status = ?, worker = ?, runs = ?, queued_at = ?, started_at = ?, executed_at = ?,
		finished_at = ?, result = ?, error = ?, reason = ?, retry_parent = ?, retry_child = ?, final_seq = ?
		WHERE task_key = ? AND attempt = ?`,
	stBlameClear: `DELETE FROM field_blame WHERE task_key = ? AND path > ? AND path < ?`,
	stBlame: `INSERT OR REPLACE INTO field_blame (task_key, path, plugin, version, seq, fact_idx, idx, trigger, attempt, op, value)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stOperator: `INSERT INTO operator_actions (seq, task_key, action, attempt, queue, by_whom, reason, time)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
	stSchedule: `INSERT INTO schedule_events (seq, schedule, action, by_whom, reason, tick, task_key, missed, spec, time)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stState: `INSERT INTO state_writes (seq, task_key, attempt, run, kind, scope, key, op, prev, revision, value, digest, size,
		by_whom, source, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stChain: `INSERT INTO chain_events (seq, chain, action, step, steps, task_key, prev, status, error, time)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stQueuedAt: `UPDATE tasks SET queued_at = ? WHERE key = ? AND queued_at IS NULL`,
	stLimit: `INSERT INTO limit_waits (seq, task_key, attempt, run, limit_name, kind, waited_ms, slot, took_over, time)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
}

// applier holds the writer connection's prepared statements, and a cache of
// what the committed rows say about tasks (one writer per database: nobody
// else changes them). A transaction that fails empties the cache.
//
// It works on the driver connection under database/sql (sql.Conn.Raw):
// database/sql costs a fifth of the CPU of a small insert, and the
// projection does one or two per event.
type applier struct {
	dc    any // the driver connection the statements are prepared on
	stmts [stCount]driver.Stmt
	// updates are the statements of task row updates, by the set of
	// columns they set.
	updates map[uint32]driver.Stmt
	// facts are the fact statements by shape (see txApplier.fact).
	facts map[factShape]driver.Stmt
	tasks map[string]taskState
	keys  map[string]int64 // task id → task key
	// nextKey is the next task key to assign; 0 until read.
	nextKey int64
}

func newApplier() *applier {
	return &applier{
		tasks: make(map[string]taskState), keys: make(map[string]int64), updates: make(map[uint32]driver.Stmt),
		facts: make(map[factShape]driver.Stmt),
	}
}

// prepare prepares the statements on dc, unless they are already.
func (ap *applier) prepare(ctx context.Context, dc any) error {
	if ap.dc == dc {
		return nil
	}
	_ = ap.close() // prepared on a connection database/sql has replaced
	pc, ok := dc.(driver.ConnPrepareContext)
	if !ok {
		return fmt.Errorf("driver connection %T cannot prepare statements", dc)
	}
	// The checkpointer folds the WAL (checkpoint.go); the writer's own
	// automatic checkpoint is only the bound should it fail.
	if ec, ok := dc.(driver.ExecerContext); ok {
		if _, err := ec.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, writerAutoCheckpoint), nil); err != nil {
			return fmt.Errorf("setting the automatic checkpoint: %w", err)
		}
	}
	for i, q := range statements {
		st, err := pc.PrepareContext(ctx, q)
		if err != nil {
			_ = ap.close()
			return fmt.Errorf("preparing projection statement %d: %w", i, err)
		}
		ap.stmts[i] = st
	}
	ap.dc = dc
	ap.forget()
	return nil
}

// forget empties the caches after a transaction that failed.
func (ap *applier) forget() {
	clear(ap.tasks)
	clear(ap.keys)
	ap.nextKey = 0
}

func (ap *applier) close() error {
	var errs []error
	for i, s := range ap.stmts {
		if s != nil {
			errs = append(errs, s.Close())
			ap.stmts[i] = nil
		}
	}
	for k, s := range ap.updates {
		errs = append(errs, s.Close())
		delete(ap.updates, k)
	}
	for k, s := range ap.facts {
		errs = append(errs, s.Close())
		delete(ap.facts, k)
	}
	ap.dc = nil
	return errors.Join(errs...)
}

// txApplier applies events within one transaction.
type txApplier struct {
	ctx  context.Context
	ap   *applier
	args []driver.NamedValue
	vals []driver.Value
	rows batchRows
}

func (ap *applier) bind(ctx context.Context) *txApplier {
	return &txApplier{ctx: ctx, ap: ap, args: make([]driver.NamedValue, 0, 32), vals: make([]driver.Value, 2)}
}

// named returns args as the driver takes them. NULLs are left out: every
// bind of mattn/go-sqlite3 starts with sqlite3_reset and
// sqlite3_clear_bindings, which sets every parameter to NULL, and each
// value bound is a call into C (one value in seven the projection writes is
// a NULL). The golden dump test would see a NULL left unbound that held
// another value: facts alternate between node and task facts.
func (a *txApplier) named(args []any) []driver.NamedValue {
	a.args = a.args[:0]
	for i, v := range args {
		switch x := v.(type) {
		case nil:
			continue
		case int:
			v = int64(x)
		case uint64:
			v = int64(x) //nolint:gosec // G115: the uint64s bound are the log's sequences, revisions and counters, below 2^63 (see seqToSQL)
		}
		a.args = append(a.args, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	return a.args
}

func (a *txApplier) exec(i int, args ...any) error {
	_, err := a.execAffected(i, args...)
	return err
}

// execAffected runs statement i and returns the number of rows it changed.
func (a *txApplier) execAffected(i int, args ...any) (int64, error) {
	res, err := a.ap.stmts[i].(driver.StmtExecContext).ExecContext(a.ctx, a.named(args))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", strings.Fields(statements[i])[0]+" "+stmtTable(i), err)
	}
	return res.RowsAffected()
}

// query runs statement i and returns its first row (nil when there is
// none); the values are valid until the next query.
func (a *txApplier) query(i int, args ...any) ([]driver.Value, error) {
	rows, err := a.ap.stmts[i].(driver.StmtQueryContext).QueryContext(a.ctx, a.named(args))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stmtTable(i), err)
	}
	defer rows.Close()
	n := len(rows.Columns())
	if cap(a.vals) < n {
		a.vals = make([]driver.Value, n)
	}
	vals := a.vals[:n]
	if err := rows.Next(vals); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: %w", stmtTable(i), err)
	}
	return vals, nil
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
	// kindSeal is a seal of the log (events.TypeSeal): it proves the log,
	// qtasks-replay verify checks it, and the projection keeps nothing of it.
	kindSeal
	kindOperator
	kindSchedule // schedule.go
	kindState    // a state write (projections/flow.go)
	kindChain    // a chain's start, step or end (projections/flow.go)
	kindLimit    // a run held back by a limit (projections/flow.go)
)

// Prepared is a log event decoded and checked, with everything Apply writes
// computed except what depends on the database: Prepare is pure, so the
// projector runs it beside the goroutine that writes SQLite.
type Prepared struct {
	seq     uint64
	idx     int // in its message (bus.Stored.Index)
	count   int // the events of its message
	subject string
	ev      events.Event
	kind    int
	reject  rejection
	at      any // the event time as stored

	// Facts.
	trigger events.Trigger
	fact    events.Fact
	node    any
	eff     effect
	blame   []blameRow
	diffs   []byte // the facts.diffs column (projections/diffs.go)
	// Dead letters.
	dl events.DeadLetter
	// Operator actions.
	op events.OperatorAction
	// Schedule events.
	sch *events.ScheduleEvent
	// State writes, chain events and limit waits (projections/flow.go).
	flow *flowEvent
}

// maxIndex bounds a fact's index in its message: facts.pos holds it in
// its low 16 bits (factPos). A phase message holds at most
// events.MaxBatchSize bytes, which fit far fewer facts.
const maxIndex = 1 << 16

// factPos is the primary key of a fact in facts: its message's stream
// sequence and its index there, in one integer that orders as the pair.
func factPos(seq uint64, idx int) int64 { return int64(seq)<<16 | int64(idx) } //nolint:gosec // G115: sequences stay far below 2^47 (see seqToSQL), so the shifted one is exact

// Seq is the stream sequence of the event's message.
func (p *Prepared) Seq() uint64 { return p.seq }

// Last reports whether p is the last event of its message: a batch ends
// there, since a message is applied whole.
func (p *Prepared) Last() bool { return p.idx >= p.count-1 }

// Prepare decodes and checks a log event for Apply. It reads no database
// and no clock.
func Prepare(s bus.Stored) Prepared {
	p := Prepared{seq: s.Seq, idx: s.Index, count: max(s.Count, 1), subject: s.Subject, ev: s.Event}
	if r := p.prepare(s.Err); r != "" {
		p.kind, p.reject = kindReject, r
	}
	return p
}

func (p *Prepared) prepare(decodeErr error) rejection {
	if decodeErr != nil {
		return rejection(decodeErr.Error())
	}
	if p.idx < 0 || p.idx >= maxIndex {
		return rejection(fmt.Sprintf("event %d of its message: a message holds at most %d", p.idx, maxIndex))
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
		// The executor's rule (it records such a patch rejected, too).
		if err := events.ValidatePatch(p.subject, ev); err != nil {
			return rejection(err.Error())
		}
		if len(ev.Data) > 0 && !validJSON(ev.Data) {
			return "patch body is not JSON"
		}
		p.kind = kindPatch
		return ""
	case "operator":
		return p.prepareOperator(ps)
	case "duplicate":
		return p.prepareDuplicate(ps)
	case "schedule":
		return p.prepareSchedule(ps)
	case "state", "chain", "limit":
		return p.prepareFlow(ps)
	case "dead":
		if ev.Type != events.TypeDeadLetter {
			return rejection(fmt.Sprintf("type %q on dead-letter subject %s", ev.Type, p.subject))
		}
		if ev.Plugin != ps.Plugin {
			return rejection(fmt.Sprintf("plugin attribute %q does not match subject %s", ev.Plugin, p.subject))
		}
		var dl events.DeadLetter // a local: &p.dl would move every Prepared to the heap
		if err := json.Unmarshal(ev.Data, &dl); err != nil {
			return rejection("dead letter data: " + err.Error())
		}
		p.dl = dl
		p.kind = kindDead
		return ""
	case "alert":
		// An executor's record of a forgery: kept with the dead letters
		// (a message refused for what it claims to be), blaming the
		// plugin whose subject the offending message is on.
		if ev.Type != events.TypeAlert {
			return rejection(fmt.Sprintf("type %q on alert subject %s", ev.Type, p.subject))
		}
		var al events.Alert
		if err := json.Unmarshal(ev.Data, &al); err != nil {
			return rejection("alert data: " + err.Error())
		}
		plugin := "(unknown)"
		if ops, err := events.ParseSubject(al.Subject); err == nil && ops.Plugin != "" {
			plugin = ops.Plugin
		}
		p.ev.Plugin = plugin
		p.dl = events.DeadLetter{Stream: al.Stream, Sequence: al.Sequence, Consumer: "alert:" + al.Kind, Subject: al.Subject, Reason: al.Reason}
		p.kind = kindDead
		return ""
	case "seal":
		if ev.Type != events.TypeSeal {
			return rejection(fmt.Sprintf("type %q on seal subject %s", ev.Type, p.subject))
		}
		if _, err := events.DecodeSeal(ev.Data); err != nil {
			return rejection(err.Error())
		}
		p.kind = kindSeal
		return ""
	}
	return rejection(fmt.Sprintf("subject %s is not one the event log carries", p.subject))
}

// prepareOperator checks an operator's action. A retry queues the next
// attempt of its task, as a retry decided by a worker does.
func (p *Prepared) prepareOperator(ps events.ParsedSubject) rejection {
	ev := &p.ev
	if ev.Type != events.TypeOperator {
		return rejection(fmt.Sprintf("type %q on operator subject %s", ev.Type, p.subject))
	}
	op := &p.op
	if err := json.Unmarshal(ev.Data, op); err != nil {
		return rejection("operator action data: " + err.Error())
	}
	if err := op.Check(); err != nil {
		return rejection(err.Error())
	}
	switch {
	case op.Queue != ps.Key:
		return rejection(fmt.Sprintf("action on queue %q on subject %s", op.Queue, p.subject))
	case op.TaskID != ev.TaskID:
		return rejection(fmt.Sprintf("action on task %q in an event of task %q", op.TaskID, ev.TaskID))
	}
	p.kind = kindOperator
	if op.Action == events.ActionRetry {
		p.eff = effect{kind: effRequeue, model: *op.Next}
	}
	return ""
}

func sameIdentity(ev *events.Event, ps events.ParsedSubject) rejection {
	switch {
	case ev.Plugin != ps.Plugin:
		return rejection(fmt.Sprintf("plugin attribute %q does not match the subject's %q", ev.Plugin, ps.Plugin))
	case ev.Trigger != ps.Trigger:
		return rejection(fmt.Sprintf("trigger attribute %q does not match the subject's %q", ev.Trigger, ps.Trigger))
	case ev.TaskID == "":
		return "no task id attribute"
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
		if ev.TaskID == "" {
			return rejection(fmt.Sprintf("task-scope trigger %s without a task id attribute", t.Name))
		}
	case events.ScopeProcess:
		if ev.TaskID != "" {
			return rejection(fmt.Sprintf("process-scope trigger %s with a task id attribute", t.Name))
		}
		p.node = ps.Key
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
	var diffs [][]Change
	if len(f.Calls) > 0 {
		diffs = factCallDiffs(t.Name, f.Input, f.Output, f.Calls, true, nil)
		p.diffs = encodeDiffs(diffs)
	}
	if t.Scope == events.ScopeTask && ev.Replay == "" {
		var r rejection
		if p.eff, r = taskEffect(t.Name, ev, f); r != "" {
			return r
		}
		if len(f.Calls) > 0 {
			p.blame = blameFrom(t.Name, f.Calls, diffs)
		}
	}
	return ""
}

// write writes a prepared event. It reports whether the event was
// rejected; an error is a database failure.
func (a *txApplier) write(p *Prepared) (rejected bool, err error) {
	ev := &p.ev
	seq := seqToSQL(p.seq)
	var key any
	if ev.TaskID != "" && p.kind != kindReject && p.kind != kindDead && p.kind != kindSeal {
		k, err := a.taskKey(ev.TaskID)
		if err != nil {
			return false, err
		}
		key = k
	}
	switch p.kind {
	case kindSeal:
		return false, nil
	case kindReject:
		return true, a.exec(stReject, seq, p.idx, p.subject, ev.Type, ev.ID, truncate(string(p.reject), 2000))
	case kindInvoke:
		return false, a.exec(stPluginEvent, seq, "invoke", key, ev.ID, ev.Plugin, ev.PluginVersion, ev.Trigger, ev.Attempt, ev.Run,
			p.at, ev.TimeoutMS, nil, nil, nil)
	case kindPatch:
		return false, a.exec(stPluginEvent, seq, "patch", key, ev.Invocation, ev.Plugin, ev.PluginVersion, ev.Trigger, ev.Attempt, ev.Run,
			p.at, nil, nullString(ev.DataContentType), nullText(ev.Data), nullString(ev.PluginError))
	case kindDead:
		dl := &p.dl
		return false, a.exec(stDead, seq, ev.Plugin, dl.Stream, seqToSQL(dl.Sequence), dl.Consumer, dl.Subject,
			dl.Deliveries, dl.Reason, p.at)
	case kindSchedule:
		return false, a.schedule(p, seq, key)
	case kindState, kindChain, kindLimit:
		return false, a.writeFlow(p, seq, key)
	case kindOperator:
		op := &p.op
		if err := a.exec(stOperator, seq, key, op.Action, op.Attempt, op.Queue, op.By, op.Reason, p.at); err != nil {
			return false, err
		}
		if p.eff.kind != effNone {
			return false, a.task(p)
		}
		return false, nil
	}
	t, f := &p.trigger, &p.fact
	if err := a.fact(p, seq, key); err != nil {
		return false, err
	}
	for i := range f.Calls {
		c := &f.Calls[i]
		if err := a.exec(stCall, seq, p.idx, i, key, t.Name, ev.Attempt, c.Plugin, c.Version, c.Invocation, string(c.Outcome),
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
		if err := a.exec(stBlameClear, key, b.path+"/", b.path+"0"); err != nil {
			return false, err
		}
		if err := a.exec(stBlame, key, b.path, b.call.Plugin, b.call.Version, seq, p.idx, b.idx, t.Name, ev.Attempt, b.op,
			nullText(b.value)); err != nil {
			return false, err
		}
	}
	return false, nil
}

// fact inserts the trigger history row of a fact. The trigger, its
// component, the attempt and the run repeat from fact to fact (most tasks
// run once): they are written as constants of a statement prepared for
// each such combination, so that only the values that change are bound,
// each bind a call into C. The rows are the same as stFact's. The source
// is bound: each start of a node is a new source, and statements by source
// ran out (maxFactStmts) after a dozen starts, leaving every later fact to
// stFact's twelve binds.
func (a *txApplier) fact(p *Prepared, seq int64, key any) error {
	ev, t := &p.ev, &p.trigger
	data := bytesText(ev.Data)
	st := a.ap.factStmt(a.ctx, factShape{trigger: t.Name, attempt: ev.Attempt, run: ev.Run})
	if st == nil {
		return a.exec(stFact, factPos(p.seq, p.idx), seq, p.idx, key, p.node, t.Name, string(t.Component), ev.Attempt, ev.Run, p.at, ev.ID,
			ev.Source, data, nullString(ev.Replay), nullText(p.diffs))
	}
	args := [...]any{factPos(p.seq, p.idx), seq, p.idx, key, p.node, p.at, ev.ID, ev.Source, data, nullString(ev.Replay), nullText(p.diffs)}
	if _, err := st.(driver.StmtExecContext).ExecContext(a.ctx, a.named(args[:])); err != nil {
		return fmt.Errorf("INSERT facts: %w", err)
	}
	return nil
}

// factShape is what a fact statement holds as constants.
type factShape struct {
	trigger      string
	attempt, run int
}

// maxFactStmts bounds the fact statements prepared for shapes: a log has
// few (triggers × the first attempts and runs); past the bound, facts are
// written by stFact.
const maxFactStmts = 512

// factStmt returns the fact statement of shape s, preparing it on first
// use; nil when s is not one to prepare a statement for.
func (ap *applier) factStmt(ctx context.Context, s factShape) driver.Stmt {
	if st, ok := ap.facts[s]; ok {
		return st
	}
	if len(ap.facts) >= maxFactStmts || s.attempt < 0 || s.attempt > 3 || s.run < 0 || s.run > 3 {
		return nil
	}
	t, ok := events.Lookup(s.trigger)
	if !ok || !literalSafe(s.trigger) || !literalSafe(string(t.Component)) {
		return nil
	}
	q := fmt.Sprintf(`INSERT INTO facts (pos, seq, idx, task_key, node, trigger, component, attempt, run, time, event_id, source, data, replay, diffs)
		VALUES (?, ?, ?, ?, ?, %s, %s, %d, %d, ?, ?, ?, ?, ?, ?)`,
		sqlQuote(s.trigger), sqlQuote(string(t.Component)), s.attempt, s.run)
	st, err := ap.dc.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil // stFact writes it
	}
	ap.facts[s] = st
	return st
}

// literalSafe reports whether s can be written as an SQL string literal
// that stores the same text as binding it: short, UTF-8, no NUL (the
// driver passes the statement as a C string).
func literalSafe(s string) bool {
	return len(s) <= 256 && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func sqlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// bytesText returns b as a string bound as TEXT, without copying it: the
// driver hands it to SQLite, which copies it (SQLITE_TRANSIENT) before
// the statement returns.
func bytesText(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// taskKey returns the integer key of a task id, assigning the next one to
// an id seen for the first time: keys follow the order in which tasks first
// appear in the log, so the same log gives the same keys.
func (a *txApplier) taskKey(id string) (int64, error) {
	if k, ok := a.ap.keys[id]; ok {
		return k, nil
	}
	if a.ap.nextKey == 0 {
		row, err := a.query(stMaxKey)
		if err != nil {
			return 0, fmt.Errorf("reading task keys: %w", err)
		}
		a.ap.nextKey = row[0].(int64) + 1
	}
	// Most ids not in the cache are new ones: insert first, read the key
	// only when the id had one.
	n, err := a.execAffected(stInsKey, a.ap.nextKey, id)
	if err != nil {
		return 0, err
	}
	var k int64
	if n == 1 {
		k = a.ap.nextKey
		a.ap.nextKey++
		// A task first seen has no row yet.
		a.cacheTask(id, taskState{})
	} else {
		row, err := a.query(stGetKey, id)
		if err != nil || row == nil {
			return 0, fmt.Errorf("reading the key of task %s: %w", id, cmp.Or(err, errors.New("no key")))
		}
		k = row[0].(int64)
	}
	if len(a.ap.keys) >= maxCachedTasks {
		clear(a.ap.keys)
	}
	a.ap.keys[id] = k
	return k, nil
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
	effRequeue  // an operator's retry: the next attempt is queued
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
	// The record is decoded by decodeRecord; when it cannot tell, by
	// encoding/json (slow: into the structs that hold the record under
	// path).
	model := func(kind int, slow func() (events.Task, error), path ...string) (effect, rejection) {
		e := effect{kind: kind}
		m := &e.model
		if !decodeRecord(doc, path, m) {
			var err error
			if *m, err = slow(); err != nil {
				return effect{}, rejection(fmt.Sprintf("%s payload: %v", trigger, err))
			}
		}
		if m.ID != ev.TaskID {
			return effect{}, rejection(fmt.Sprintf("%s record is of task %q, the event of %q", trigger, m.ID, ev.TaskID))
		}
		if m.Attempt < 1 {
			return effect{}, rejection(fmt.Sprintf("%s record has attempt %d", trigger, m.Attempt))
		}
		return e, ""
	}
	switch trigger {
	case events.StorageAdd:
		if f.Failed != "" {
			// The submission failed at or after this step: the task was
			// not stored or not queued, and is no task of the projection
			// (a retry with its idempotency key records it again).
			return effect{}, ""
		}
		return model(effNew, func() (events.Task, error) {
			var p struct {
				Model events.Task `json:"task_status"`
			}
			err := json.Unmarshal(doc, &p)
			return p.Model, err
		}, "task_status")
	case events.StorageUpdate:
		return model(effProcess, func() (events.Task, error) {
			var p struct {
				Kw struct {
					Mapping events.Task `json:"mapping"`
				} `json:"kw"`
			}
			err := json.Unmarshal(doc, &p)
			return p.Kw.Mapping, err
		}, "kw", "mapping")
	case events.StorageRemoveFinishedTask:
		doc = f.Input // one-way: the final record as decided
		e, r := model(effFinal, func() (events.Task, error) {
			var p struct {
				Model events.Task `json:"model"`
			}
			err := json.Unmarshal(doc, &p)
			return p.Model, err
		}, "model")
		if r == "" && !events.FinalStatus(e.model.Status) {
			return effect{}, rejection(fmt.Sprintf("final record with status %q", e.model.Status))
		}
		return e, r
	case events.TaskExecutorArgsReplace:
		var e effect
		if decodeArgs(doc, &e) {
			e.kind = effExecArgs
			return e, ""
		}
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

// task applies a lifecycle effect to the batch's rows of tasks and
// attempts (written at the end of the batch: see rows.go).
func (a *txApplier) task(p *Prepared) error {
	ev, e := &p.ev, &p.eff
	seq := seqToSQL(p.seq)
	at := p.at
	m := &e.model
	switch e.kind {
	case effExecArgs, effExecuted:
		r, err := a.taskRow(ev.TaskID)
		if err != nil {
			return err
		}
		// The arguments and the call belong to the run in progress.
		if r.exists && r.attempt == ev.Attempt && r.status == events.StatusProcess {
			if e.kind == effExecArgs {
				r.put(tcArgsExecuted, nullText(e.args))
				r.put(tcKwExecuted, nullText(e.kw))
			} else {
				r.put(tcExecutedAt, at)
			}
			r.put(tcUpdatedAt, at)
			r.put(tcLastSeq, seq)
		}
		if e.kind == effExecArgs {
			return nil
		}
		ar, err := a.attemptRow(ev.TaskID, ev.Attempt)
		if err != nil {
			return err
		}
		if ar.open() {
			ar.put(acExecutedAt, at)
		}
		return nil
	case effRuns:
		ar, err := a.attemptRow(ev.TaskID, ev.Attempt)
		if err != nil {
			return err
		}
		if ar.open() {
			ar.put(acRuns, max(ar.cols[acRuns].(int64), int64(ev.Run)))
		}
		return nil
	}

	r, err := a.taskRow(m.ID)
	if err != nil {
		return err
	}
	// A record moves forward: a later attempt, or the same attempt that is
	// not decided yet. The first final record of an attempt stands.
	newer := !r.exists || m.Attempt > r.attempt || (m.Attempt == r.attempt && !events.FinalStatus(r.status))

	switch e.kind {
	case effNew:
		switch {
		case !r.exists:
			a.insertTask(r, m, events.StatusNew, seq, at, nil, nil)
		case r.insert && r.ins.queuedAt == nil:
			// storage_add's fact is held until the task is queued
			// (executor/submit.go): a worker quick to take the task
			// writes the run's storage_update first. The row made from
			// that one learns here when the task was queued.
			r.ins.queuedAt = at
		case !r.insert:
			if err := a.exec(stQueuedAt, at, r.key); err != nil {
				return err
			}
		}
		if err := a.newAttempt(m.ID, m.Attempt, at, m.RetryParent); err != nil {
			return err
		}
		if ar, err := a.attemptRow(m.ID, m.Attempt); err != nil {
			return err
		} else if ar.cols[acQueuedAt] == nil {
			ar.put(acQueuedAt, at)
		}
		return nil
	case effProcess:
		if !r.exists {
			a.insertTask(r, m, events.StatusProcess, seq, nil, at, nil)
		} else if newer {
			r.startAttempt(m, events.StatusProcess, m.Worker, at, at, seq)
			r.put(tcPriority, int64(m.Priority))
			r.put(tcExtra, jsonText(m.Extra))
		}
		ar, err := a.attemptRow(m.ID, m.Attempt)
		if err != nil {
			return err
		}
		runs := int64(max(ev.Run, 1))
		switch {
		case !ar.exists:
			ar.create()
			ar.put(acStatus, events.StatusProcess)
			ar.put(acWorker, m.Worker)
			ar.put(acRuns, runs)
			ar.put(acStartedAt, at)
			ar.put(acRetryParent, m.RetryParent)
		case ar.open():
			ar.put(acStatus, events.StatusProcess)
			ar.put(acWorker, m.Worker)
			ar.put(acRuns, max(ar.cols[acRuns].(int64), runs))
			ar.put(acStartedAt, at)
			ar.put(acExecutedAt, nil)
		}
		return nil
	case effRequeue:
		if r.exists && newer {
			r.startAttempt(m, events.StatusNew, "", nil, at, seq)
		}
		return a.newAttempt(m.ID, m.Attempt, at, m.RetryParent)
	case effFinal:
		if !r.exists {
			a.insertTask(r, m, m.Status, seq, nil, nil, at)
		} else if newer {
			r.attempt, r.status = m.Attempt, m.Status
			r.put(tcStatus, m.Status)
			r.put(tcAttempt, int64(m.Attempt))
			r.put(tcPriority, int64(m.Priority))
			r.put(tcRetriesLeft, int64(m.Retry))
			r.put(tcWorker, m.Worker)
			r.put(tcResult, nullText(m.Result))
			r.put(tcError, m.Error)
			r.put(tcReason, m.Reason)
			r.put(tcRetryParent, m.RetryParent)
			r.put(tcRetryChild, m.RetryChild)
			r.put(tcExtra, jsonText(m.Extra))
			r.put(tcFinishedAt, at)
			r.put(tcUpdatedAt, at)
			r.put(tcLastSeq, seq)
		}
		ar, err := a.attemptRow(m.ID, m.Attempt)
		if err != nil {
			return err
		}
		if !ar.exists {
			ar.create()
			ar.put(acRetryParent, m.RetryParent)
		}
		if ar.open() {
			ar.put(acStatus, m.Status)
			ar.put(acWorker, m.Worker)
			ar.put(acFinishedAt, at)
			ar.put(acResult, nullText(m.Result))
			ar.put(acError, m.Error)
			ar.put(acReason, m.Reason)
			ar.put(acRetryChild, m.RetryChild)
			ar.put(acFinalSeq, seq)
		}
		if m.Status == events.StatusRetry {
			// The next attempt of the same task is queued.
			return a.newAttempt(m.ID, m.Attempt+1, at, fmt.Sprintf("%s#%d", m.ID, m.Attempt))
		}
	}
	return nil
}

// startAttempt moves task row r to attempt m.Attempt in status (a run
// starting, or an operator's retry queueing it): what the attempt or run
// before left (result, error, reason, the arguments executed, its times)
// is cleared; startedAt is the run's start, nil while only queued.
func (r *taskRow) startAttempt(m *events.Task, status, worker string, startedAt, at any, seq int64) {
	r.attempt, r.status = m.Attempt, status
	r.put(tcStatus, status)
	r.put(tcAttempt, int64(m.Attempt))
	r.put(tcRetriesLeft, int64(m.Retry))
	r.put(tcWorker, worker)
	r.put(tcRetryParent, m.RetryParent)
	r.put(tcRetryChild, "")
	r.put(tcResult, nil)
	r.put(tcError, "")
	r.put(tcReason, "")
	r.put(tcArgsExecuted, nil)
	r.put(tcKwExecuted, nil)
	r.put(tcStartedAt, startedAt)
	r.put(tcExecutedAt, nil)
	r.put(tcFinishedAt, nil)
	r.put(tcUpdatedAt, at)
	r.put(tcLastSeq, seq)
}

// insertTask inserts task row r from a record (at the end of the batch).
func (a *txApplier) insertTask(r *taskRow, m *events.Task, status string, seq int64, queuedAt, startedAt, finishedAt any) {
	r.insertFrom(m, status, seq, queuedAt, startedAt, finishedAt)
	a.rows.inserts = append(a.rows.inserts, r)
}

// newAttempt queues attempt n of a task, unless it has a row already.
func (a *txApplier) newAttempt(id string, n int, at any, retryParent string) error {
	ar, err := a.attemptRow(id, n)
	if err != nil {
		return err
	}
	if !ar.exists {
		ar.create()
		ar.put(acStatus, events.StatusNew)
		ar.put(acQueuedAt, at)
		ar.put(acRetryParent, retryParent)
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

// maxCachedTasks bounds the applier's caches of task states and task keys:
// they need to hold the tasks in flight, and past the bound they start
// over (a miss reads the row), so that memory does not grow with the
// history.
const maxCachedTasks = 4096

func (a *txApplier) taskState(id string, key int64) (taskState, error) {
	if st, ok := a.ap.tasks[id]; ok {
		return st, nil
	}
	var st taskState
	row, err := a.query(stGetTask, key)
	if err != nil {
		return st, fmt.Errorf("reading task %s: %w", id, err)
	}
	if row != nil {
		st.exists, st.attempt = true, int(row[0].(int64))
		switch v := row[1].(type) {
		case string:
			st.status = v
		case []byte:
			st.status = string(v)
		}
	}
	a.cacheTask(id, st)
	return st, nil
}

func (a *txApplier) cacheTask(id string, st taskState) {
	if len(a.ap.tasks) >= maxCachedTasks {
		clear(a.ap.tasks)
	}
	a.ap.tasks[id] = st
}

// timeLayout is RFC 3339 in UTC with nanoseconds, fixed width: it sorts as
// text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	y, mo, d := u.Date()
	if y < 0 || y > 9999 {
		return u.Format(timeLayout)
	}
	// What Format(timeLayout) writes, without parsing the layout: every
	// event has a time.
	h, mi, s := u.Clock()
	var b [len(timeLayout)]byte
	digitsTo(b[0:4], y)
	b[4] = '-'
	digitsTo(b[5:7], int(mo))
	b[7] = '-'
	digitsTo(b[8:10], d)
	b[10] = 'T'
	digitsTo(b[11:13], h)
	b[13] = ':'
	digitsTo(b[14:16], mi)
	b[16] = ':'
	digitsTo(b[17:19], s)
	b[19] = '.'
	digitsTo(b[20:29], u.Nanosecond())
	b[29] = 'Z'
	return string(b[:])
}

// digitsTo writes n in decimal into b, zero-padded to its length.
func digitsTo(b []byte, n int) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
}

func nullText(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullSeq(n uint64) any {
	if n == 0 {
		return nil
	}
	return seqToSQL(n)
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
