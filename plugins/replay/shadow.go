package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/verdict"
)

// ShadowOptions configure a shadow check.
type ShadowOptions struct {
	// Shadow is the shadow plugin's name.
	Shadow string
	// ShadowOf is the live plugin it shadows. Defaults to the shadow's
	// registration.
	ShadowOf string
	// Triggers are the triggers whose facts are read. Defaults to the
	// shadow's registered triggers; all facts for a global shadow.
	Triggers []string
	// Since skips facts recorded before it.
	Since time.Time
	// Mask lists JSON Pointers masked from every comparison, as in
	// Options.Mask: two runs of the same code differ in their timestamps.
	Mask []string
	// Samples is how many divergent calls ShadowStats keeps. Defaults to
	// 20.
	Samples int
}

// ShadowStats is how a shadow plugin's answers compare with the live
// plugin's on the same invocations.
type ShadowStats struct {
	Shadow   string `json:"shadow"`
	ShadowOf string `json:"shadow_of"`
	// Versions seen in the calls.
	ShadowVersions []string `json:"shadow_versions,omitempty"`
	LiveVersions   []string `json:"live_versions,omitempty"`
	// Compared counts firings where both were called; the verdicts split
	// it as in a replay, the live call standing for the recording.
	Compared  int `json:"compared"`
	Identical int `json:"identical"`
	Different int `json:"different"`
	Errors    int `json:"errors"`
	Timeouts  int `json:"timeouts"`
	// Unpaired counts shadow calls in firings without a live call.
	Unpaired int `json:"unpaired"`
	// Rate is (Different+Errors+Timeouts)/Compared, 0 when nothing was
	// compared.
	Rate float64 `json:"rate"`
	// LastSeq is the last fact read.
	LastSeq uint64 `json:"last_seq"`
	// Samples are the first divergent calls: Recorded is the live
	// plugin's answer, Candidate the shadow's.
	Samples []Result `json:"samples,omitempty"`
}

// WriteSummary writes the stats for a human.
func (s *ShadowStats) WriteSummary(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("shadow %s of %s: %d compared, divergence rate %.4f\n", s.Shadow, s.ShadowOf, s.Compared, s.Rate)
	ew.printf("  identical %d  different %d  error %d  timeout %d  unpaired %d\n", s.Identical, s.Different, s.Errors, s.Timeouts, s.Unpaired)
	for _, r := range s.Samples {
		ew.printf("  %s seq %d task %s %s", r.Status, r.Seq, r.TaskID, r.Trigger)
		if r.Reason != "" {
			ew.printf(": %s", r.Reason)
		}
		ew.printf("\n")
		for _, d := range r.Diff {
			ew.printf("    %s\n", d)
		}
	}
	return ew.err
}

// WriteJSON writes the stats as JSON.
func (s *ShadowStats) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	if err := e.Encode(s); err != nil {
		return fmt.Errorf("writing shadow stats: %w", err)
	}
	return nil
}

// ShadowTracker keeps a shadow's running divergence rate: each Update
// reads the facts recorded since the last one. It is safe for concurrent
// use.
type ShadowTracker struct {
	b        *bus.Bus
	opts     ShadowOptions
	mask     *mask
	subjects []string

	mu    sync.Mutex
	stats ShadowStats
	sv    map[string]bool
	lv    map[string]bool
}

// NewShadowTracker returns a tracker for opts.Shadow on the log of b (a
// read-only bus will do).
func NewShadowTracker(b *bus.Bus, opts ShadowOptions) (*ShadowTracker, error) {
	if !events.ValidToken(opts.Shadow) {
		return nil, fmt.Errorf("shadow plugin name %q: must be a valid NATS subject token", opts.Shadow)
	}
	reg, registered := b.Registry().Get(opts.Shadow)
	if opts.ShadowOf == "" {
		if !registered || reg.ShadowOf == "" {
			return nil, fmt.Errorf("plugin %s is not registered as a shadow: name the plugin it shadows", opts.Shadow)
		}
		opts.ShadowOf = reg.ShadowOf
	}
	if len(opts.Triggers) == 0 && registered {
		opts.Triggers = reg.Triggers
	}
	if opts.Samples == 0 {
		opts.Samples = 20
	}
	m, err := newMask(opts.Mask)
	if err != nil {
		return nil, err
	}
	t := &ShadowTracker{
		b: b, opts: opts, mask: m, sv: map[string]bool{}, lv: map[string]bool{},
		stats: ShadowStats{Shadow: opts.Shadow, ShadowOf: opts.ShadowOf},
	}
	for _, tr := range opts.Triggers {
		if !events.ValidToken(tr) {
			return nil, fmt.Errorf("trigger %q: must be a valid NATS subject token", tr)
		}
		t.subjects = append(t.subjects, events.SubjectTrigger+"."+tr+".>")
	}
	if len(t.subjects) == 0 {
		t.subjects = []string{events.SubjectTrigger + ".>"}
	}
	return t, nil
}

// Shadow computes a shadow's divergence rate over the whole log (or since
// opts.Since).
func Shadow(ctx context.Context, b *bus.Bus, opts ShadowOptions) (ShadowStats, error) {
	t, err := NewShadowTracker(b, opts)
	if err != nil {
		return ShadowStats{}, err
	}
	return t.Update(ctx)
}

// Stats returns the stats so far.
func (t *ShadowTracker) Stats() ShadowStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.copyStats()
}

func (t *ShadowTracker) copyStats() ShadowStats {
	s := t.stats
	s.Samples = slices.Clone(s.Samples)
	s.ShadowVersions = sortedKeys(t.sv)
	s.LiveVersions = sortedKeys(t.lv)
	return s
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Update reads the facts recorded since the last Update and returns the
// stats so far.
func (t *ShadowTracker) Update(ctx context.Context) (ShadowStats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.b.ReadLog(ctx, t.stats.LastSeq+1, t.subjects, func(st bus.Stored) error {
		t.stats.LastSeq = st.Seq
		if st.Err != nil || (!t.opts.Since.IsZero() && st.Event.Time.Before(t.opts.Since)) {
			return nil //nolint:nilerr // an event that does not decode is skipped: the read goes on
		}
		var f events.Fact
		if json.Unmarshal(st.Event.Data, &f) != nil || len(f.Calls) == 0 {
			return nil //nolint:nilerr // a fact that does not decode is skipped: the read goes on
		}
		return t.fact(st, &f)
	})
	if s := t.stats; s.Compared > 0 {
		t.stats.Rate = float64(s.Different+s.Errors+s.Timeouts) / float64(s.Compared)
	}
	return t.copyStats(), err
}

func (t *ShadowTracker) fact(st bus.Stored, f *events.Fact) error {
	tr, ok := events.Lookup(st.Event.Trigger)
	if !ok || !tr.Returnable {
		return nil
	}
	doc, live, ok := verdict.LiveCall(tr, f.Input, f.Calls, t.opts.ShadowOf)
	if !ok {
		return nil
	}
	for _, c := range f.Calls {
		if !c.Shadow || c.Plugin != t.opts.Shadow {
			continue
		}
		t.sv[c.Version] = true
		if live < 0 {
			t.stats.Unpaired++
			continue
		}
		lc := f.Calls[live]
		t.lv[lc.Version] = true
		rec := answerFromCall(tr, doc, lc)
		cand := answerFromCall(tr, doc, c)
		status, reason, diff, masked, err := judge(rec, cand, nil, t.mask)
		if err != nil {
			return fmt.Errorf("fact %d: %w", st.Seq, err)
		}
		t.stats.Compared++
		switch status {
		case Identical:
			t.stats.Identical++
			continue
		case Different:
			t.stats.Different++
		case CandidateError:
			t.stats.Errors++
		case CandidateTimeout:
			t.stats.Timeouts++
		}
		if len(t.stats.Samples) < t.opts.Samples {
			t.stats.Samples = append(t.stats.Samples, Result{
				Seq: st.Seq, Invocation: c.Invocation, TaskID: st.Event.TaskID, TaskName: st.Event.TaskName,
				Trigger: tr.Name, Time: st.Event.Time, Status: status, Reason: reason,
				Recorded: rec, Candidate: cand, Diff: diff, Masked: masked, LatencyUS: c.LatencyUS,
			})
		}
	}
	return nil
}

// answerFromCall describes a call recorded in a fact, applied to doc.
func answerFromCall(t events.Trigger, doc []byte, c events.PluginCall) Answer {
	e := verdict.CallEffect(t, doc, c)
	a := Answer{Outcome: e.Outcome, Version: c.Version, Error: e.Error, effect: e.Payload}
	if e.Patched {
		a.ContentType, a.Patch = c.ContentType, jsonOrString(c.Patch)
	}
	return a
}
