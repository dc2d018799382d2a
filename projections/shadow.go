package projections

import (
	"context"
	"encoding/json"
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
	q := `SELECT f.seq, f.trigger, f.data FROM facts f WHERE f.pos IN
		(SELECT c.fact_seq * 65536 + c.fact_idx FROM plugin_calls c WHERE c.plugin = ? AND c.shadow = 1)`
	args := []any{shadow}
	if !since.IsZero() {
		q += ` AND f.time >= ?`
		args = append(args, ts(since))
	}
	err := s.read(ctx, d, q+` ORDER BY f.pos`, args...)
	return s, err
}

// RecentShadowStats is ShadowStats over the shadow's calls among the newest
// StatsWindow plugin calls: the window PluginStats reads, so that the
// console's plugins page shows a shadow's calls and its divergence over the
// same calls, at a cost that does not grow with the log.
func (d *DB) RecentShadowStats(ctx context.Context, shadow, shadowOf string) (ShadowSummary, error) {
	s := ShadowSummary{Shadow: shadow, ShadowOf: shadowOf}
	if shadow == "" || shadowOf == "" {
		return s, fmt.Errorf("shadow stats: both the shadow and the live plugin must be named")
	}
	q := `SELECT f.seq, f.trigger, f.data FROM facts f WHERE f.pos IN
		(SELECT w.fact_seq * 65536 + w.fact_idx FROM (SELECT fact_seq, fact_idx, plugin, shadow FROM plugin_calls ORDER BY fact_seq DESC, fact_idx DESC LIMIT ?) w
		 WHERE w.plugin = ? AND w.shadow = 1) ORDER BY f.pos`
	err := s.read(ctx, d, q, StatsWindow, shadow)
	return s, err
}

// read compares the shadow's calls in the facts that query q returns (seq,
// trigger, data).
func (s *ShadowSummary) read(ctx context.Context, d *DB, q string, args ...any) error {
	rows, err := d.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("shadow stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var trigger, data string
		if err := rows.Scan(&seq, &trigger, &data); err != nil {
			return fmt.Errorf("shadow stats: %w", err)
		}
		s.LastSeq = seqFromSQL(seq)
		var f events.Fact
		tr, ok := events.Lookup(trigger)
		if !ok || !tr.Returnable || json.Unmarshal([]byte(data), &f) != nil {
			continue
		}
		s.fact(tr, &f)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("shadow stats: %w", err)
	}
	if s.Compared > 0 {
		s.Rate = float64(s.Different+s.Errors+s.Timeouts) / float64(s.Compared)
	}
	return nil
}

func (s *ShadowSummary) fact(tr events.Trigger, f *events.Fact) {
	doc, live, ok := verdict.LiveCall(tr, f.Input, f.Calls, s.ShadowOf)
	if !ok {
		return
	}
	for _, c := range f.Calls {
		if !c.Shadow || c.Plugin != s.Shadow {
			continue
		}
		s.Calls++
		if live < 0 {
			s.Unpaired++
			continue
		}
		s.Compared++
		v, _, _, err := verdict.Compare(verdict.CallEffect(tr, doc, f.Calls[live]), verdict.CallEffect(tr, doc, c))
		if err != nil {
			v = verdict.Different // a payload that is not JSON
		}
		switch v {
		case verdict.Identical:
			s.Identical++
		case verdict.Different:
			s.Different++
		case verdict.CandidateError:
			s.Errors++
		case verdict.CandidateTimeout:
			s.Timeouts++
		}
	}
}
