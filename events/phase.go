package events

import (
	"fmt"
	"slices"
)

// SubjectPhase is the root of the subjects that hold a phase's facts packed
// in one message: qtasks.phase.<phase>.<queue>. It lies outside
// SubjectTrigger so that no filter written for protocol 2's
// qtasks.trigger.<trigger>.<queue> matches a packed message (issue #15,
// design (f), docs/ARCHITECTURE.md "The exchange").
const SubjectPhase = SubjectRoot + ".phase"

// PhaseSubjects matches every phase message of every queue.
const PhaseSubjects = SubjectPhase + ".>"

// A Phase names a stretch of a task's life whose facts are stored together:
// the facts a task's firings produce in one phase, except those that travel
// alone (lifecycle facts and triggers some plugin is subscribed to alone),
// go into one message in the CloudEvents JSON batch format
// (ContentTypeBatch). A phase is one message, so a worker killed in the
// middle of a phase leaves it wholly in the log or not at all.
type Phase string

// The phases of a task's life, in order.
const (
	PhaseSubmit  Phase = "submit"  // before the broker: triggers fired by Submit before the task is queued
	PhaseQueued  Phase = "queued"  // after the broker: fired once the task message is stored
	PhaseIntake  Phase = "intake"  // a worker takes the task, up to the start of its run
	PhasePrepare Phase = "prepare" // the run is prepared, up to the task function
	PhaseFinish  Phase = "finish"  // after the task function, up to the final fact
	PhaseEnd     Phase = "end"     // after the final record
)

// Phases lists every phase in the order of a task's life.
var Phases = []Phase{PhaseSubmit, PhaseQueued, PhaseIntake, PhasePrepare, PhaseFinish, PhaseEnd}

// Valid reports whether p is one of Phases.
func (p Phase) Valid() bool {
	return slices.Contains(Phases, p)
}

// PhaseSubject is where the packed facts of phase p of a task in queue are
// published. The message carries the header Content-Type: ContentTypeBatch
// and no Nats-Msg-Id (facts are published once, docs/PROTOCOL.md §5); its
// body is EncodeBatch of the facts, in firing order.
func PhaseSubject(p Phase, queue string) string {
	return SubjectPhase + "." + string(p) + "." + queue
}

// ParsePhaseSubject returns the phase and queue of a phase subject.
func ParsePhaseSubject(s string) (Phase, string, error) {
	ps, err := ParseSubject(s)
	if err != nil {
		return "", "", err
	}
	if ps.Kind != "phase" {
		return "", "", fmt.Errorf("%w: subject %q is not a phase subject", ErrInvalidEvent, s)
	}
	return Phase(ps.Trigger), ps.Key, nil
}
