package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/events"
)

// schemaFlow keeps the state writes (events.TypeState), chain events
// (events.TypeChain) and limit waits (events.TypeLimit) of the log: who
// wrote which state key, each chain's start, steps and end, and which task
// runs a limit held back, linked to their tasks.
const schemaFlow = `
CREATE TABLE state_writes (
	seq      INTEGER PRIMARY KEY,
	task_key INTEGER REFERENCES task_keys (key),
	attempt  INTEGER NOT NULL DEFAULT 0,
	run      INTEGER NOT NULL DEFAULT 0,
	kind     TEXT NOT NULL,
	scope    TEXT NOT NULL,
	key      TEXT NOT NULL,
	op       TEXT NOT NULL,
	prev     INTEGER NOT NULL,
	revision INTEGER NOT NULL,
	value    TEXT,
	digest   TEXT,
	size     INTEGER,
	by_whom  TEXT,
	source   TEXT NOT NULL,
	time     TEXT
);
CREATE INDEX state_writes_key ON state_writes (kind, scope, key, seq);
CREATE INDEX state_writes_task ON state_writes (task_key, seq) WHERE task_key IS NOT NULL;
CREATE TABLE chain_events (
	seq      INTEGER PRIMARY KEY,
	chain    TEXT NOT NULL,
	action   TEXT NOT NULL,
	step     INTEGER NOT NULL,
	steps    INTEGER NOT NULL,
	task_key INTEGER REFERENCES task_keys (key),
	prev     TEXT,
	status   TEXT,
	error    TEXT,
	time     TEXT
);
CREATE INDEX chain_events_chain ON chain_events (chain, seq);
CREATE TABLE limit_waits (
	seq       INTEGER PRIMARY KEY,
	task_key  INTEGER REFERENCES task_keys (key),
	attempt   INTEGER NOT NULL DEFAULT 0,
	run       INTEGER NOT NULL DEFAULT 0,
	limit_name TEXT NOT NULL,
	kind      TEXT NOT NULL,
	waited_ms INTEGER NOT NULL,
	slot      INTEGER NOT NULL DEFAULT 0,
	took_over TEXT,
	time      TEXT
);
CREATE INDEX limit_waits_task ON limit_waits (task_key, seq);
`

// flowEvent is what a state or chain event writes; a pointer in Prepared,
// so that the events every task writes do not carry its size.
type flowEvent struct {
	state events.StateWrite
	chain events.ChainEvent
	limit events.LimitWait
}

// prepareFlow checks a state or chain event.
func (p *Prepared) prepareFlow(ps events.ParsedSubject) rejection {
	ev := &p.ev
	fe := &flowEvent{}
	switch ps.Kind {
	case "state":
		if ev.Type != events.TypeState {
			return rejection(fmt.Sprintf("type %q on state subject %s", ev.Type, p.subject))
		}
		if err := json.Unmarshal(ev.Data, &fe.state); err != nil {
			return rejection("state write data: " + err.Error())
		}
		if err := fe.state.Check(); err != nil {
			return rejection(err.Error())
		}
		if fe.state.Kind == events.StateTask && ev.TaskID != "" && ev.TaskID != fe.state.Scope {
			return rejection(fmt.Sprintf("task %q wrote the own state of task %q", ev.TaskID, fe.state.Scope))
		}
		p.kind = kindState
	case "limit":
		if ev.Type != events.TypeLimit {
			return rejection(fmt.Sprintf("type %q on limit subject %s", ev.Type, p.subject))
		}
		if err := json.Unmarshal(ev.Data, &fe.limit); err != nil {
			return rejection("limit event data: " + err.Error())
		}
		if err := fe.limit.Check(); err != nil {
			return rejection(err.Error())
		}
		if ev.TaskID == "" {
			return "limit event without a task id attribute"
		}
		p.kind = kindLimit
	default: // chain
		if ev.Type != events.TypeChain {
			return rejection(fmt.Sprintf("type %q on chain subject %s", ev.Type, p.subject))
		}
		if err := json.Unmarshal(ev.Data, &fe.chain); err != nil {
			return rejection("chain event data: " + err.Error())
		}
		if err := fe.chain.Check(); err != nil {
			return rejection(err.Error())
		}
		if fe.chain.TaskID != ev.TaskID {
			return rejection(fmt.Sprintf("chain event of task %q in an event of task %q", fe.chain.TaskID, ev.TaskID))
		}
		p.kind = kindChain
	}
	p.flow = fe
	return ""
}

// writeFlow writes a prepared state or chain event.
func (a *txApplier) writeFlow(p *Prepared, seq int64, key any) error {
	ev, fe := &p.ev, p.flow
	if p.kind == kindState {
		w := &fe.state
		return a.exec(stState, seq, key, ev.Attempt, ev.Run, w.Kind, w.Scope, w.Key, w.Op, seqToSQL(w.Prev), seqToSQL(w.Revision),
			nullText(w.Value), nullString(w.Digest), w.Size, nullString(w.By), ev.Source, p.at)
	}
	if p.kind == kindLimit {
		l := &fe.limit
		return a.exec(stLimit, seq, key, ev.Attempt, ev.Run, l.Limit, l.Kind, l.WaitedMS, l.Slot, nullString(l.TookOver), p.at)
	}
	c := &fe.chain
	return a.exec(stChain, seq, c.Chain, c.Action, c.Step, c.Steps, key, nullString(c.Prev), nullString(c.Status),
		nullString(c.Error), p.at)
}

// StateWriteRow is a state write as the log recorded it.
type StateWriteRow struct {
	Seq      uint64          `json:"seq"`
	TaskID   string          `json:"task_id,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	Run      int             `json:"run,omitempty"`
	Kind     string          `json:"kind"`
	Scope    string          `json:"scope"`
	Key      string          `json:"key"`
	Op       string          `json:"op"`
	Prev     uint64          `json:"prev"`
	Revision uint64          `json:"revision"`
	Value    json.RawMessage `json:"value,omitempty"`
	Digest   string          `json:"digest,omitempty"`
	Size     int             `json:"size,omitempty"`
	By       string          `json:"by,omitempty"`
	Source   string          `json:"source"`
	Time     time.Time       `json:"time,omitzero"`
}

// StateWrites lists the writes to scope of kind (events.StateShared, or
// events.StateTask with the task id as scope), in stream order.
func (d *DB) StateWrites(ctx context.Context, kind, scope string) ([]StateWriteRow, error) {
	return queryAll(ctx, d.r, "state writes", `SELECT s.seq, coalesce(k.id, ''), s.attempt, s.run, s.kind, s.scope, s.key, s.op,
		s.prev, s.revision, s.value, coalesce(s.digest, ''), coalesce(s.size, 0), coalesce(s.by_whom, ''), s.source, s.time
		FROM state_writes s LEFT JOIN task_keys k ON k.key = s.task_key
		WHERE s.kind = ? AND s.scope = ? ORDER BY s.seq`,
		[]any{kind, scope}, func(rows *sql.Rows, r *StateWriteRow) error {
			var seq, prev, rev int64
			var value, at sql.NullString
			if err := rows.Scan(&seq, &r.TaskID, &r.Attempt, &r.Run, &r.Kind, &r.Scope, &r.Key, &r.Op, &prev, &rev, &value,
				&r.Digest, &r.Size, &r.By, &r.Source, &at); err != nil {
				return err
			}
			r.Seq, r.Prev, r.Revision, r.Time = seqFromSQL(seq), seqFromSQL(prev), seqFromSQL(rev), parseTS(at)
			if value.Valid {
				r.Value = json.RawMessage(value.String)
			}
			return nil
		})
}

// ChainEventRow is a chain event as the log recorded it.
type ChainEventRow struct {
	Seq    uint64    `json:"seq"`
	Chain  string    `json:"chain"`
	Action string    `json:"action"`
	Step   int       `json:"step"`
	Steps  int       `json:"steps"`
	TaskID string    `json:"task_id"`
	Prev   string    `json:"prev,omitempty"`
	Status string    `json:"status,omitempty"`
	Error  string    `json:"error,omitempty"`
	Time   time.Time `json:"time,omitzero"`
}

// ChainEvents lists the events of chain id, in stream order: its start,
// each step after the first, its end.
func (d *DB) ChainEvents(ctx context.Context, id string) ([]ChainEventRow, error) {
	return queryAll(ctx, d.r, "chain events", `SELECT c.seq, c.chain, c.action, c.step, c.steps, coalesce(k.id, ''),
		coalesce(c.prev, ''), coalesce(c.status, ''), coalesce(c.error, ''), c.time
		FROM chain_events c LEFT JOIN task_keys k ON k.key = c.task_key WHERE c.chain = ? ORDER BY c.seq`,
		[]any{id}, func(rows *sql.Rows, r *ChainEventRow) error {
			var seq int64
			var at sql.NullString
			if err := rows.Scan(&seq, &r.Chain, &r.Action, &r.Step, &r.Steps, &r.TaskID, &r.Prev, &r.Status, &r.Error, &at); err != nil {
				return err
			}
			r.Seq, r.Time = seqFromSQL(seq), parseTS(at)
			return nil
		})
}

// LimitWaitRow is a task run a limit held back, as the log recorded it.
type LimitWaitRow struct {
	Seq      uint64    `json:"seq"`
	TaskID   string    `json:"task_id"`
	Attempt  int       `json:"attempt"`
	Run      int       `json:"run"`
	Limit    string    `json:"limit"`
	Kind     string    `json:"kind"`
	WaitedMS int64     `json:"waited_ms"`
	Slot     int       `json:"slot,omitempty"`
	TookOver string    `json:"took_over,omitempty"`
	Time     time.Time `json:"time,omitzero"`
}

// TaskLimitWaits lists the limit waits of task id's runs, in stream order.
func (d *DB) TaskLimitWaits(ctx context.Context, id string) ([]LimitWaitRow, error) {
	return queryAll(ctx, d.r, "limit waits", `SELECT l.seq, k.id, l.attempt, l.run, l.limit_name, l.kind, l.waited_ms, l.slot,
		coalesce(l.took_over, ''), l.time
		FROM limit_waits l JOIN task_keys k ON k.key = l.task_key WHERE k.id = ? ORDER BY l.seq`,
		[]any{id}, func(rows *sql.Rows, r *LimitWaitRow) error {
			var seq int64
			var at sql.NullString
			if err := rows.Scan(&seq, &r.TaskID, &r.Attempt, &r.Run, &r.Limit, &r.Kind, &r.WaitedMS, &r.Slot, &r.TookOver, &at); err != nil {
				return err
			}
			r.Seq, r.Time = seqFromSQL(seq), parseTS(at)
			return nil
		})
}
