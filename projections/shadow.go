package projections

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/verdict"
)

// ShadowSummary is how a shadow plugin's recorded calls compare with the
// live plugin's in the same facts, read from the projection. Its counts
// follow plugins/replay's ShadowStats (without masks or samples).
type ShadowSummary struct {
	Shadow   string `json:"shadow"`
	ShadowOf string `json:"shadow_of"`
	// Calls counts the shadow's recorded calls (on returnable triggers).
	Calls int `json:"calls"`
	// Compared counts the calls in facts with a live call of ShadowOf;
	// Identical, Different, Errors and Timeouts split it.
	Compared  int `json:"compared"`
	Identical int `json:"identical"`
	Different int `json:"different"`
	Errors    int `json:"errors"`
	Timeouts  int `json:"timeouts"`
	// Unpaired counts shadow calls in facts without a live call.
	Unpaired int `json:"unpaired"`
	// Rate is (Different+Errors+Timeouts)/Compared, 0 when nothing was
	// compared.
	Rate float64 `json:"rate"`
	// LastSeq is the last fact read.
	LastSeq uint64 `json:"last_seq"`
}

// ShadowStats compares the calls of plugin shadow, recorded as a shadow of
// plugin shadowOf, with the live calls in the same facts (since since, if
// not zero). The projection keeps no registrations, so shadowOf must be
// given.
//
// Calls are compared by effect, by the rules plugins/replay uses
// (verdict.Compare): each patch is applied to the payload the live plugin
// saw (the fact's input, patched by the live calls applied before it), and
// the two results are compared as JSON values. A patch that does not apply counts as rejected; a call that
// failed counts as an error or a timeout. No masks are applied; a patch
// left out of the fact (patch_omitted) compares as no change.
func (d *DB) ShadowStats(ctx context.Context, shadow, shadowOf string, since time.Time) (ShadowSummary, error) {
	s := ShadowSummary{Shadow: shadow, ShadowOf: shadowOf}
	if shadow == "" || shadowOf == "" {
		return s, fmt.Errorf("shadow stats: both the shadow and the live plugin must be named")
	}
	q := `SELECT f.pos, f.seq, f.trigger, f.data FROM facts f WHERE f.pos IN
		(SELECT c.fact_seq * 65536 + c.fact_idx FROM plugin_calls c WHERE c.plugin = ? AND c.shadow = 1)`
	args := []any{shadow}
	if !since.IsZero() {
		q += ` AND f.time >= ?`
		args = append(args, ts(since))
	}
	err := s.read(ctx, d, q+` ORDER BY f.pos`, nil, nil, args...)
	return s, err
}

// RecentShadowStats is ShadowStats over the shadow's calls among the newest
// StatsWindow plugin calls: the window PluginStats reads, so that the
// console's plugins page shows a shadow's calls and its divergence over the
// same calls, at a cost that does not grow with the log.
//
// What each fact of the window adds is kept (DB.shadowCounts) for the
// next call, until a call finds the fact out of the window: facts never
// change, the console's plugins page asks every few seconds, and comparing
// each shadow call again (applying two patches, comparing two payloads)
// was nearly all of its time (BenchmarkConsole).
func (d *DB) RecentShadowStats(ctx context.Context, shadow, shadowOf string) (ShadowSummary, error) {
	s := ShadowSummary{Shadow: shadow, ShadowOf: shadowOf}
	if shadow == "" || shadowOf == "" {
		return s, fmt.Errorf("shadow stats: both the shadow and the live plugin must be named")
	}
	q := `SELECT f.pos, f.seq, f.trigger, f.data FROM facts f WHERE f.pos IN
		(SELECT w.fact_seq * 65536 + w.fact_idx FROM (SELECT fact_seq, fact_idx, plugin, shadow FROM plugin_calls ORDER BY fact_seq DESC, fact_idx DESC LIMIT ?) w
		 WHERE w.plugin = ? AND w.shadow = 1) ORDER BY f.pos`
	pair := [2]string{shadow, shadowOf}
	d.shadowCounts.Lock()
	known := d.shadowCounts.m[pair]
	d.shadowCounts.Unlock()
	window := make(map[int64]shadowCounts, len(known))
	if err := s.read(ctx, d, q, known, window, StatsWindow, shadow); err != nil {
		return s, err
	}
	d.shadowCounts.Lock()
	if d.shadowCounts.m == nil {
		d.shadowCounts.m = map[[2]string]map[int64]shadowCounts{}
	}
	d.shadowCounts.m[pair] = window
	d.shadowCounts.Unlock()
	return s, nil
}

// shadowCounts is what the shadow calls of one fact add to a
// ShadowSummary.
type shadowCounts struct {
	calls, compared, identical, different, errors, timeouts, unpaired int32
}

// read compares the shadow's calls in the facts that query q returns (pos,
// seq, trigger, data). A fact in known is not read again; what each fact
// adds is put in window, when not nil.
func (s *ShadowSummary) read(ctx context.Context, d *DB, q string, known, window map[int64]shadowCounts, args ...any) error {
	rows, err := d.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("shadow stats: %w", err)
	}
	defer rows.Close()
	var pos, seq int64
	var trigger string
	var data []byte
	dest := []any{intCol[int64]{&pos}, intCol[int64]{&seq}, &trigger, textCol{&data}}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("shadow stats: %w", err)
		}
		s.LastSeq = seqFromSQL(seq)
		c, ok := known[pos]
		if !ok {
			c = s.factCounts(trigger, data)
		}
		if window != nil {
			window[pos] = c
		}
		s.Calls += int(c.calls)
		s.Compared += int(c.compared)
		s.Identical += int(c.identical)
		s.Different += int(c.different)
		s.Errors += int(c.errors)
		s.Timeouts += int(c.timeouts)
		s.Unpaired += int(c.unpaired)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("shadow stats: %w", err)
	}
	if s.Compared > 0 {
		s.Rate = float64(s.Different+s.Errors+s.Timeouts) / float64(s.Compared)
	}
	return nil
}

// compareCalls is the verdict on shadow call cand against live call rec,
// both given doc. Two answers with the same patch have the same effect:
// they are identical without applying the patches and comparing the
// payloads, which was most of the shadows page's time, most shadows
// agreeing with their live plugin (BenchmarkConsole).
func compareCalls(tr events.Trigger, doc []byte, rec, cand events.PluginCall) string {
	if answered(rec.Outcome) && answered(cand.Outcome) && rec.ContentType == cand.ContentType && bytes.Equal(rec.Patch, cand.Patch) {
		return verdict.Identical
	}
	v, _, _, err := verdict.Compare(verdict.CallEffect(tr, doc, rec), verdict.CallEffect(tr, doc, cand))
	if err != nil {
		return verdict.Different // a payload that is not JSON
	}
	return v
}

// answered reports whether a call with outcome o answered with its patch
// (or none), which verdict.CallEffect applies.
func answered(o events.Outcome) bool {
	return o == events.OutcomeApplied || o == events.OutcomeNoChange || o == events.OutcomeShadow
}

// factCounts compares the shadow's calls in the fact of trigger with data
// data with the live plugin's call.
func (s *ShadowSummary) factCounts(trigger string, data []byte) shadowCounts {
	var n shadowCounts
	// Stored facts are not validated again (decodeStoredFact): the
	// projector validated them, and encoding/json's decoding was a third
	// of the shadows page's time.
	var f events.Fact
	tr, ok := events.Lookup(trigger)
	if !ok || !tr.Returnable || decodeStoredFact(data, &f) != nil {
		return n
	}
	doc, live, ok := verdict.LiveCall(tr, f.Input, f.Calls, s.ShadowOf)
	if !ok {
		return n
	}
	for _, c := range f.Calls {
		if !c.Shadow || c.Plugin != s.Shadow {
			continue
		}
		n.calls++
		if live < 0 {
			n.unpaired++
			continue
		}
		n.compared++
		switch compareCalls(tr, doc, f.Calls[live], c) {
		case verdict.Identical:
			n.identical++
		case verdict.Different:
			n.different++
		case verdict.CandidateError:
			n.errors++
		case verdict.CandidateTimeout:
			n.timeouts++
		}
	}
	return n
}
