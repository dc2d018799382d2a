package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/events"
)

// prepareSchedule checks a schedule event (events.TypeSchedule on
// qtasks.schedule.<name>).
func (p *Prepared) prepareSchedule(ps events.ParsedSubject) rejection {
	ev := &p.ev
	if ev.Type != events.TypeSchedule {
		return rejection(fmt.Sprintf("type %q on schedule subject %s", ev.Type, p.subject))
	}
	var e events.ScheduleEvent
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return rejection("schedule event data: " + err.Error())
	}
	if err := e.Check(); err != nil {
		return rejection(err.Error())
	}
	switch {
	case e.Schedule != ps.Key:
		return rejection(fmt.Sprintf("event of schedule %q on subject %s", e.Schedule, p.subject))
	case e.TaskID != ev.TaskID:
		return rejection(fmt.Sprintf("tick of task %q in an event of task %q", e.TaskID, ev.TaskID))
	}
	p.sch = &e
	p.kind = kindSchedule
	return ""
}

// schedule writes a schedule event's row; key is its task's (a tick's), or
// nil.
func (a *txApplier) schedule(p *Prepared, seq int64, key any) error {
	e := p.sch
	var tick, spec any
	if !e.Tick.IsZero() {
		tick = ts(e.Tick)
	}
	if e.Spec != nil {
		b, err := json.Marshal(e.Spec)
		if err != nil {
			return err
		}
		spec = string(b)
	}
	reason := e.Reason
	if e.Error != "" {
		reason = e.Error // a tick refused: why
	}
	return a.exec(stSchedule, seq, e.Schedule, e.Action, e.By, reason, tick, key, e.Missed, spec, p.at)
}

// ScheduleEvent is an event of a periodic schedule, as the log recorded it.
type ScheduleEvent struct {
	Seq      uint64 `json:"seq"`
	Schedule string `json:"schedule"`
	Action   string `json:"action"`
	By       string `json:"by"`
	// Reason is why: an operator's words, or why a tick's task was
	// refused.
	Reason string    `json:"reason,omitempty"`
	Tick   time.Time `json:"tick,omitzero"`
	TaskID string    `json:"task_id,omitempty"`
	Missed int       `json:"missed,omitempty"`
	// Spec is the schedule as added (add), as JSON.
	Spec json.RawMessage `json:"spec,omitempty"`
	Time time.Time       `json:"time,omitzero"`
}

// ScheduleEvents lists the events of schedule name, in stream order, at
// most limit (DefaultLimit when 0, at most MaxLimit) after sequence after.
func (d *DB) ScheduleEvents(ctx context.Context, name string, after uint64, limit int) ([]ScheduleEvent, error) {
	return queryAll(ctx, d.r, "schedule events", `SELECT s.seq, s.schedule, s.action, s.by_whom, s.reason, s.tick, coalesce(k.id, ''), s.missed, s.spec, s.time
		FROM schedule_events s LEFT JOIN task_keys k ON k.key = s.task_key
		WHERE s.schedule = ? AND s.seq > ? ORDER BY s.seq LIMIT ?`,
		[]any{name, seqToSQL(after), clampLimit(limit)}, func(rows *sql.Rows, e *ScheduleEvent) error {
			var seq int64
			var tick, spec, at sql.NullString
			if err := rows.Scan(&seq, &e.Schedule, &e.Action, &e.By, &e.Reason, &tick, &e.TaskID, &e.Missed, &spec, &at); err != nil {
				return err
			}
			e.Seq, e.Tick, e.Time = seqFromSQL(seq), parseTS(tick), parseTS(at)
			if spec.Valid {
				e.Spec = json.RawMessage(spec.String)
			}
			return nil
		})
}

// DelayedTask is a task submitted with a due time (delayed_tasks).
type DelayedTask struct {
	ID     string    `json:"id"`
	Name   string    `json:"task_name"`
	Queue  string    `json:"queue"`
	Status string    `json:"status"`
	DueAt  time.Time `json:"due_at"`
}

// DelayedTasks lists the tasks submitted with a due time that are still
// new (waiting for it), soonest due first, at most limit (DefaultLimit
// when 0, at most MaxLimit).
func (d *DB) DelayedTasks(ctx context.Context, limit int) ([]DelayedTask, error) {
	return queryAll(ctx, d.r, "delayed tasks", `SELECT id, name, queue, status, due_at FROM delayed_tasks
		WHERE status = ? ORDER BY due_at, id LIMIT ?`,
		[]any{events.StatusNew, clampLimit(limit)}, func(rows *sql.Rows, t *DelayedTask) error {
			var due sql.NullString
			if err := rows.Scan(&t.ID, &t.Name, &t.Queue, &t.Status, &due); err != nil {
				return err
			}
			if due.Valid {
				if at, err := time.Parse(time.RFC3339Nano, due.String); err == nil {
					t.DueAt = at
				}
			}
			return nil
		})
}
