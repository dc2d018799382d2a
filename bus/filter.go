package bus

import (
	"slices"
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
	phases := phaseFilters(subjects)
	if len(phases) == 0 {
		return f
	}
	add := phases[:0:0]
	for _, ph := range phases {
		covered, partly := false, false
		for _, s := range subjects {
			if subjectMatch(ph, s) {
				covered = true
			} else if subjectsOverlap(s, ph) {
				partly = true
			}
		}
		switch {
		case covered:
		case partly:
			// The server refuses overlapping filters: read everything and
			// keep what matches here.
			f.server = nil
			return f
		default:
			add = append(add, ph)
		}
	}
	f.server = append(append(make([]string, 0, len(subjects)+len(add)), subjects...), add...)
	return f
}

// phaseFilters are the phase subjects that may hold facts matching
// subjects: none for filters that match no fact subject, or only the facts
// of lifecycle triggers (they always travel alone, docs/PROTOCOL.md §10.1);
// qtasks.phase.*.<queue> for filters of one queue's facts; else every
// phase subject.
func phaseFilters(subjects []string) []string {
	var out []string
	for _, s := range subjects {
		if !subjectsOverlap(s, events.SubjectTrigger+".>") {
			continue
		}
		t := strings.Split(s, ".")
		if len(t) == 4 && t[0] == events.SubjectRoot && t[1] == "trigger" {
			if tr, ok := events.Lookup(t[2]); ok && tr.Lifecycle {
				continue
			}
			if t[3] != "*" && t[3] != ">" {
				ph := events.SubjectPhase + ".*." + t[3]
				if !slices.Contains(out, ph) {
					out = append(out, ph)
				}
				continue
			}
		}
		return []string{events.PhaseSubjects}
	}
	return out
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
