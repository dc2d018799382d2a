package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Subject prefixes. Every subject is prefix.tokens...; see docs/PROTOCOL.md.
const (
	// SubjectRoot is the first token of every qtasks subject.
	SubjectRoot = "qtasks"
	// Facts: qtasks.trigger.<trigger>.<queue> for task triggers,
	// qtasks.trigger.<trigger>.<node id> for process triggers.
	SubjectTrigger = SubjectRoot + ".trigger"
	// Invocations: qtasks.invoke.<plugin>.<trigger>
	SubjectInvoke = SubjectRoot + ".invoke"
	// Patches: qtasks.patch.<plugin>.<trigger>
	SubjectPatch = SubjectRoot + ".patch"
	// Dead letters: qtasks.dead.<plugin>
	SubjectDead = SubjectRoot + ".dead"
	// Tasks to run: qtasks.run.<queue>
	SubjectRun = SubjectRoot + ".run"
	// Registration requests: qtasks.registry.register.<plugin> and
	// qtasks.registry.deregister.<plugin>, answered by the registrar. Not
	// in any stream.
	SubjectRegister   = SubjectRoot + ".registry.register"
	SubjectDeregister = SubjectRoot + ".registry.deregister"

	// Alerts: qtasks.alert.<node id>, written by executors only (no
	// plugin's rights include it), so that what they record cannot be
	// forged or silenced by a plugin.
	SubjectAlert = SubjectRoot + ".alert"
)

// RegisterSubject is where plugin asks the registrar to register it.
func RegisterSubject(plugin string) string { return SubjectRegister + "." + plugin }

// DeregisterSubject is where plugin asks the registrar to deregister it.
func DeregisterSubject(plugin string) string { return SubjectDeregister + "." + plugin }

// ValidToken reports whether s can be one token of a NATS subject: not
// empty, at most 128 bytes, and free of '.', '*', '>' and whitespace.
func ValidToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '.', '*', '>', ' ', '\t', '\r', '\n', 0:
			return false
		default:
			if c < 0x20 || c == 0x7f {
				return false
			}
		}
	}
	return true
}

// ValidName reports whether s can name a plugin: letters, digits, '-' and
// '_', at most 64 bytes. A plugin's name is a subject token, a KV key and
// part of a consumer name, and must be valid as all three.
func ValidName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}

// nameByte reports whether c may be in a name (ValidName).
func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// FactSubject is where the fact of a trigger firing is published; key is
// the task's queue for task triggers, the node id for process triggers.
//
// No subject carries a task id: JetStream keeps an index entry for every
// distinct subject a stream holds (about 140 bytes each, for as long as the
// messages are kept), so a subject per task would grow the server's memory
// with the length of the history. A task's events are told apart by their
// taskid attribute.
func FactSubject(trigger, key string) string {
	return SubjectTrigger + "." + trigger + "." + key
}

// InvokeSubject is where plugin is invoked for trigger.
func InvokeSubject(plugin, trigger string) string {
	return SubjectInvoke + "." + plugin + "." + trigger
}

// PatchSubject is where plugin answers an invocation for trigger.
func PatchSubject(plugin, trigger string) string {
	return SubjectPatch + "." + plugin + "." + trigger
}

// RunSubject is where tasks of a queue wait for a worker.
func RunSubject(queue string) string { return SubjectRun + "." + queue }

// AlertSubject is where executor node records the attacks it detects.
func AlertSubject(node string) string { return SubjectAlert + "." + node }

// IsDeadSubject reports whether subject is a dead letter's: a dead letter
// is never dead-lettered itself, or a consumer of dead letters that never
// acks would make each one produce another, forever.
func IsDeadSubject(subject string) bool {
	return strings.HasPrefix(subject, SubjectDead+".")
}

// DeadSubject is where a plugin's undeliverable messages are recorded.
func DeadSubject(plugin string) string { return SubjectDead + "." + plugin }

// ParsedSubject is a subject split into its parts; empty where the kind has
// no such part.
type ParsedSubject struct {
	Kind    string // trigger, phase, invoke, patch, dead, alert, run, seal, operator, duplicate, schedule, state, chain or limit
	Plugin  string
	Trigger string // the trigger; for a phase subject, the phase
	// Key is the last token of a fact's subject (the task's queue, or the
	// node id of a process trigger), the queue of a run, operator,
	// duplicate, state, chain or limit subject, the schedule of a schedule
	// subject, or the node id of an alert or seal subject.
	Key string
}

// ParseSubject splits a qtasks subject.
func ParseSubject(s string) (ParsedSubject, error) {
	bad := func() (ParsedSubject, error) {
		return ParsedSubject{}, fmt.Errorf("%w: subject %q is not a qtasks subject", ErrInvalidEvent, s)
	}
	// The tokens in an array, not strings.Split's slice: the projection
	// parses every event's subject.
	var buf [5]string
	t := buf[:0]
	for rest, more := s, true; more; {
		if len(t) == len(buf) {
			return bad() // no subject of ours has more tokens
		}
		var tok string
		tok, rest, more = strings.Cut(rest, ".")
		t = append(t, tok)
	}
	if len(t) < 3 || t[0] != SubjectRoot {
		return bad()
	}
	for _, tok := range t[2:] {
		if !ValidToken(tok) { // empty, a wildcard, or whitespace
			return bad()
		}
	}
	switch t[1] {
	case "trigger":
		if len(t) != 4 {
			return bad()
		}
		return ParsedSubject{Kind: t[1], Trigger: t[2], Key: t[3]}, nil
	case "phase":
		// qtasks.phase.<phase>.<queue>: the phase is returned in Trigger.
		if len(t) != 4 || !Phase(t[2]).Valid() {
			return bad()
		}
		return ParsedSubject{Kind: t[1], Trigger: t[2], Key: t[3]}, nil
	case "invoke", "patch":
		// Logs written before subjects lost their task ids have it as a
		// fifth token (qtasks.invoke.<plugin>.<trigger>.<task id>); the
		// events carry it as an attribute either way.
		if len(t) != 4 && len(t) != 5 {
			return bad()
		}
		return ParsedSubject{Kind: t[1], Plugin: t[2], Trigger: t[3]}, nil
	case "dead":
		if len(t) != 3 {
			return bad()
		}
		return ParsedSubject{Kind: t[1], Plugin: t[2]}, nil
	case "run", "alert", "seal", "operator", "duplicate", "schedule", "state", "chain", "limit":
		if len(t) != 3 {
			return bad()
		}
		return ParsedSubject{Kind: t[1], Key: t[2]}, nil
	}
	return bad()
}

// FactMsgID is the event id of the n-th firing (from 0) of trigger in run
// of attempt of task. It is unique per firing but is not sent as a
// Nats-Msg-Id: a fact is published once, and JetStream's duplicate window
// would hold every id in server memory for nothing.
func FactMsgID(taskID string, attempt, run int, trigger string, n int) string {
	return taskID + ":" + strconv.Itoa(attempt) + ":" + strconv.Itoa(run) + ":" + trigger + ":" + strconv.Itoa(n)
}

// FinalMsgID is the deduplication id of a task attempt's final record. It
// leaves out the run so that two runs racing to finish the same attempt
// write one final record between them.
func FinalMsgID(taskID string, attempt int) string {
	return taskID + ":" + strconv.Itoa(attempt) + ":final"
}

// InvocationID is the id of the invocation of plugin for the n-th firing of
// trigger. Like a fact's, it is not sent as a Nats-Msg-Id.
func InvocationID(taskID string, attempt, run int, trigger string, n int, plugin string) string {
	return FactMsgID(taskID, attempt, run, trigger, n) + ":" + plugin
}

// ValidatePatch is the one rule, beyond Validate, that says whether a patch
// event published on subject can count: the executor applies it before it
// looks at a patch, and the projection when it reads one, so that no patch
// changes a task while the audit lists it as rejected. The subject must be
// a patch subject, the type io.qtasks.patch, ce-plugin and ce-trigger equal
// to the subject's plugin and trigger tokens, and ce-taskid present. The
// error wraps ErrInvalidEvent.
func ValidatePatch(subject string, ev *Event) error {
	ps, err := ParseSubject(subject)
	if err != nil {
		return err
	}
	var reason string
	switch {
	case ps.Kind != "patch":
		reason = fmt.Sprintf("subject %s is not a patch subject", subject)
	case ev.Type != TypePatch:
		reason = fmt.Sprintf("type %q on patch subject %s", ev.Type, subject)
	case ev.Plugin != ps.Plugin:
		reason = fmt.Sprintf("plugin attribute %q does not match the subject's %q", ev.Plugin, ps.Plugin)
	case ev.Trigger != ps.Trigger:
		reason = fmt.Sprintf("trigger attribute %q does not match the subject's %q", ev.Trigger, ps.Trigger)
	case ev.TaskID == "":
		reason = "no task id attribute"
	default:
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidEvent, reason)
}
