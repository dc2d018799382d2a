package bus

import (
	"strings"

	"github.com/qtasks/qtasks-go/events"
)

// A reader asks for events by the subjects they have alone: for the facts
// of a trigger, qtasks.trigger.<trigger>.<queue>. Since some facts travel
// packed in phase messages, a filter that can match a trigger subject also
// reads the phase messages, and keeps of their facts those whose own
// subject matches (logFilter).

// subjectMatch reports whether subject matches filter, with NATS wildcards
// (* one token, > the rest).
func subjectMatch(subject, filter string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">":
			return true
		case ft != "*" && ft != st:
			return false
		case fmore != smore:
			return false
		case !fmore:
			return true
		}
		filter, subject = frest, srest
	}
}

// subjectsOverlap reports whether some subject matches both filters.
func subjectsOverlap(a, b string) bool {
	for {
		at, arest, amore := strings.Cut(a, ".")
		bt, brest, bmore := strings.Cut(b, ".")
		switch {
		case at == ">" || bt == ">":
			return true
		case at != "*" && bt != "*" && at != bt:
			return false
		case amore != bmore:
			return false
		case !amore:
			return true
		}
		a, b = arest, brest
	}
}

// logFilter is what a read of the events matching subjects asks of the
// server (server), and the test each event read must pass (keep).
type logFilter struct {
	subjects []string
	server   []string
}

func newLogFilter(subjects []string) logFilter {
	f := logFilter{subjects: subjects, server: subjects}
	if len(subjects) == 0 {
		return f
	}
	const trigger = events.SubjectTrigger + ".>"
	facts, covered, partly := false, false, false
	for _, s := range subjects {
		facts = facts || subjectsOverlap(s, trigger)
		if subjectMatch(events.PhaseSubjects, s) || s == ">" {
			covered = true
		} else if subjectsOverlap(s, events.PhaseSubjects) {
			partly = true
		}
	}
	switch {
	case !facts || covered:
	case partly:
		// The server refuses overlapping filters: read everything and
		// keep what matches here.
		f.server = nil
	default:
		f.server = append(append(make([]string, 0, len(subjects)+1), subjects...), events.PhaseSubjects)
	}
	return f
}

// keep reports whether event s is one the reader asked for.
func (f logFilter) keep(s *Stored) bool {
	if len(f.subjects) == 0 {
		return true
	}
	for _, p := range f.subjects {
		if subjectMatch(s.Subject, p) {
			return true
		}
	}
	return false
}
