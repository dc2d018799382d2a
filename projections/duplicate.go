package projections

import (
	"encoding/json"
	"fmt"

	"github.com/qtasks/qtasks-go/events"
)

// prepareDuplicate checks an executor's duplicate decision
// (events.TypeDuplicate). It is kept with the task's actions
// (operator_actions, action "duplicate" or "conflict", by the deciding
// executor's source), so that the task's timeline shows every submission
// its key answered or refused.
func (p *Prepared) prepareDuplicate(ps events.ParsedSubject) rejection {
	ev := &p.ev
	if ev.Type != events.TypeDuplicate {
		return rejection(fmt.Sprintf("type %q on duplicate subject %s", ev.Type, p.subject))
	}
	var d events.DuplicateDecision
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		return rejection("duplicate decision data: " + err.Error())
	}
	if err := d.Check(); err != nil {
		return rejection(err.Error())
	}
	switch {
	case d.Queue != ps.Key:
		return rejection(fmt.Sprintf("decision on queue %q on subject %s", d.Queue, p.subject))
	case d.TaskID != ev.TaskID:
		return rejection(fmt.Sprintf("decision on task %q in an event of task %q", d.TaskID, ev.TaskID))
	}
	p.op = events.OperatorAction{
		Action: d.Decision, TaskID: d.TaskID, Attempt: d.Attempt, Queue: d.Queue,
		By: ev.Source, Reason: truncate(d.Summary(), events.MaxReasonSize),
	}
	p.kind = kindOperator
	return ""
}
