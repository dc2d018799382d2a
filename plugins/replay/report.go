package replay

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/jsonout"
	"github.com/qtasks/qtasks-go/verdict"
)

// Status is the verdict on one replayed invocation.
type Status string

// Verdicts.
const (
	// Identical: the candidate's patch has the same effect as the recorded
	// one (after masking), or both failed.
	Identical Status = "identical"
	// Different: the effects differ; Result.Diff says how.
	Different Status = "different"
	// CandidateError: the candidate reported an error, crashed or exited
	// where the recorded version answered.
	CandidateError Status = "error"
	// CandidateTimeout: the candidate did not answer in time.
	CandidateTimeout Status = "timeout"
)

// OutcomeMissing is the outcome of a recorded call with no recorded
// patch: the plugin never answered (it timed out when it ran live).
const OutcomeMissing = verdict.OutcomeMissing

// Answer is one version's answer to an invocation.
type Answer struct {
	// Outcome is applied (a patch that applies), nochange, rejected (a
	// patch that breaks the trigger's contract or does not apply), error,
	// timeout, or missing (nothing recorded).
	Outcome     events.Outcome  `json:"outcome"`
	Version     string          `json:"version,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	Patch       json.RawMessage `json:"patch,omitempty"`
	// Error is the plugin's error, the rejection reason, or why there was
	// no answer.
	Error string `json:"error,omitempty"`
	// Seq is where a recorded patch is in the log.
	Seq uint64 `json:"seq,omitempty"`
	// effect is the payload with the patch applied (applied, nochange).
	effect []byte
}

// Result is the verdict on one replayed invocation.
type Result struct {
	// Seq is the invocation's stream sequence.
	Seq        uint64    `json:"seq"`
	Invocation string    `json:"invocation"`
	TaskID     string    `json:"task_id"`
	TaskName   string    `json:"task_name,omitempty"`
	Trigger    string    `json:"trigger"`
	Time       time.Time `json:"time"`
	Status     Status    `json:"status"`
	// Reason explains an error, a timeout, or a difference that is not a
	// field diff (one side rejected, nothing recorded).
	Reason    string  `json:"reason,omitempty"`
	Recorded  Answer  `json:"recorded"`
	Candidate Answer  `json:"candidate"`
	Baseline  *Answer `json:"baseline,omitempty"`
	// Diff turns the recorded effect into the candidate's.
	Diff []DiffOp `json:"diff,omitempty"`
	// Masked are the differences left out of Diff as noise.
	Masked    []DiffOp `json:"masked,omitempty"`
	LatencyUS int64    `json:"latency_us"`
}

// Totals count the verdicts of a replay.
type Totals struct {
	Invocations int `json:"invocations"`
	Identical   int `json:"identical"`
	Different   int `json:"different"`
	Errors      int `json:"errors"`
	Timeouts    int `json:"timeouts"`
	// Masked counts invocations where some difference was masked.
	Masked int `json:"masked"`
	// Skipped counts log entries on the plugin's invocation subjects that
	// were not valid invocations.
	Skipped int `json:"skipped,omitempty"`
}

// Divergent counts the invocations that were not identical.
func (t Totals) Divergent() int { return t.Different + t.Errors + t.Timeouts }

func (t *Totals) add(s Status) {
	t.Invocations++
	switch s {
	case Identical:
		t.Identical++
	case Different:
		t.Different++
	case CandidateError:
		t.Errors++
	case CandidateTimeout:
		t.Timeouts++
	}
}

// Progress is reported after each invocation.
type Progress struct {
	Totals
	// Total is how many invocations the replay expects, 0 when not known
	// in advance (filters on task name or time).
	Total int
}

// maxNoisePaths bounds Report.Noise.
const maxNoisePaths = 1000

// Report is the outcome of replaying a plugin's history against a
// candidate.
type Report struct {
	Plugin string `json:"plugin"`
	// ReplayID names the replay namespace (the ce-replay attribute).
	ReplayID string `json:"replay_id"`
	// Candidate and Baseline are the versions that answered.
	Candidate string `json:"candidate"`
	Baseline  string `json:"baseline,omitempty"`
	// Recorded lists the versions found in the recorded patches.
	Recorded []string  `json:"recorded,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Totals   Totals    `json:"totals"`
	// Results holds every invocation that was not identical (and every
	// one with Options.KeepIdentical), in stream order.
	Results []Result `json:"results"`
	// Noise counts, per path, the invocations where a difference there was
	// masked.
	Noise    map[string]int `json:"noise,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
}

// Divergent reports whether any invocation was not identical.
func (r *Report) Divergent() bool { return r.Totals.Divergent() > 0 }

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	// Indented only so deep: recorded payloads can nest thousands deep.
	if err := jsonout.Write(w, b); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

// SummaryLimit is how many non-identical invocations WriteSummary lists.
const SummaryLimit = 20

// WriteSummary writes a human summary: totals, masked fields, the first
// SummaryLimit non-identical invocations with their diffs, and a verdict.
func (r *Report) WriteSummary(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("replay of plugin %s (replay %s)\n", r.Plugin, r.ReplayID)
	ew.printf("  candidate %s", orDash(r.Candidate))
	if r.Baseline != "" {
		ew.printf(", baseline %s", r.Baseline)
	}
	if len(r.Recorded) > 0 {
		ew.printf(", recorded %s", strings.Join(r.Recorded, ", "))
	}
	ew.printf("\n  %d invocations in %v\n", r.Totals.Invocations, r.Finished.Sub(r.Started).Round(time.Millisecond))
	t := r.Totals
	ew.printf("  identical %d  different %d  error %d  timeout %d", t.Identical, t.Different, t.Errors, t.Timeouts)
	if t.Skipped > 0 {
		ew.printf("  skipped %d", t.Skipped)
	}
	ew.printf("\n")
	if len(r.Noise) > 0 {
		paths := slices.Sorted(maps.Keys(r.Noise))
		ew.printf("  masked as noise:")
		for _, p := range paths {
			ew.printf(" %s (%d)", p, r.Noise[p])
		}
		ew.printf("\n")
	}
	for _, wn := range r.Warnings {
		ew.printf("  warning: %s\n", wn)
	}
	n := 0
	for i := range r.Results {
		res := &r.Results[i]
		if res.Status == Identical {
			continue
		}
		if n == SummaryLimit {
			ew.printf("  ... %d more; use --json for all\n", t.Divergent()-n)
			break
		}
		n++
		ew.printf("  %s seq %d task %s", strings.ToUpper(string(res.Status)), res.Seq, res.TaskID)
		if res.TaskName != "" {
			ew.printf(" (%s)", res.TaskName)
		}
		ew.printf(" %s\n", res.Trigger)
		if res.Reason != "" {
			ew.printf("    %s\n", res.Reason)
		}
		for _, d := range res.Diff {
			ew.printf("    %s\n", d)
		}
	}
	if r.Divergent() {
		ew.printf("DIVERGENT: %d of %d invocations\n", t.Divergent(), t.Invocations)
	} else {
		ew.printf("OK: no divergence\n")
	}
	return ew.err
}

// Summary is WriteSummary into a string.
func (r *Report) Summary() string {
	var b strings.Builder
	_ = r.WriteSummary(&b)
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// jsonOrString returns b if it is valid JSON, else b as a JSON string, so
// that a malformed patch cannot break the report's encoding.
func jsonOrString(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	s, err := json.Marshal(string(b))
	if err != nil { // a string always encodes
		return nil
	}
	return s
}
