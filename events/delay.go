package events

import "time"

// SubjectDelay prefixes the delayed task messages of the task stream:
// qtasks.delay.<queue>.<task id>. A task message due later waits there as
// a JetStream scheduled message (ADR-51, "Nats-Schedule: @at <time>") that
// the server moves to the queue's run subject (RunSubject) when it is due,
// then purges. It is not in the event log, and no plugin's rights include
// it.
//
// Unlike the event log's subjects, this one names the task: the server's
// scheduler keys a pending schedule by its subject (one schedule per
// subject), so each waiting task needs a subject of its own. The subject
// lives only while the task waits (the schedule message is purged when it
// fires), so the server's per-subject memory follows the number of tasks
// waiting, not the history (docs/ARCHITECTURE.md, "Delayed and periodic
// tasks").
const SubjectDelay = SubjectRoot + ".delay"

// DelaySubject is where task id of queue waits until it is due.
func DelaySubject(queue, id string) string { return SubjectDelay + "." + queue + "." + id }

// DelayTolerance is how late a delayed task may start after its due time
// on a server that is not overloaded: the server's scheduler moves due
// messages in batches (it wakes at most every 250 ms), then a worker takes
// the task in. Measured: p99 0.6 s (BenchmarkDelayLateness). A delayed task
// never runs before its due time: a worker that receives it early (a clock
// ahead, a server without message schedules) hands it back until then.
const DelayTolerance = 2 * time.Second

// MinScheduleLead is the shortest delay that is sent as a scheduled message
// (the server's scheduler wakes at most every 250 ms): a task due sooner is
// queued at once and held back by the worker that receives it (a negative
// acknowledgement with the remaining delay).
const MinScheduleLead = 250 * time.Millisecond
