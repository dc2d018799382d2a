package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/verdict"
)

// DefaultConcurrency bounds the invocations a replay has in flight. It is
// below plugins.DefaultConcurrency so that no invocation waits in the
// candidate's queue while its timeout runs.
const DefaultConcurrency = 8

// Clock paces a replay at the original pace. Tests give a fake one.
type Clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx ends.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Options configure a replay.
type Options struct {
	// Candidate is the version under test.
	Candidate Candidate
	// Baseline, when set, is the recorded version, replayed beside the
	// candidate to find noise: per invocation, the fields where the
	// baseline's result differs from the recorded one are masked from the
	// candidate's diff.
	Baseline *Candidate
	// Mask lists JSON Pointers masked from every diff; a token "*" matches
	// any one token ("/kw/*/at"). A pointer masks everything below it.
	Mask []string
	// Pace replays at the original pace: invocations are sent as far apart
	// as they were recorded, divided by Speed. Otherwise at full speed.
	Pace bool
	// Speed divides the recorded gaps when Pace is set: 2 replays twice
	// as fast. Defaults to 1.
	Speed float64
	// Concurrency bounds the invocations in flight. Defaults to
	// DefaultConcurrency. 1 replays strictly one at a time.
	Concurrency int
	// KeepIdentical keeps identical invocations in Report.Results too
	// (memory grows with the history).
	KeepIdentical bool
	// OnResult is called for every invocation, in stream order, from one
	// goroutine: write JSON lines from here to stream a long replay.
	OnResult func(Result)
	// Progress is called after every invocation, from the same goroutine.
	Progress func(Progress)
	// ReplayID names the replay namespace. Defaults to a random id.
	ReplayID string
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// Clock paces the replay. Defaults to the wall clock.
	Clock Clock
}

func (o *Options) withDefaults() error {
	if o.Speed == 0 {
		o.Speed = 1
	}
	if o.Speed < 0 {
		return fmt.Errorf("speed %v: must be positive", o.Speed)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Concurrency < 0 {
		return fmt.Errorf("concurrency %d: must be positive", o.Concurrency)
	}
	if o.ReplayID == "" {
		o.ReplayID = NewReplayID()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	return nil
}

// NewReplayID returns a fresh replay id.
func NewReplayID() string { return "replay-" + uuid.NewString()[:8] }

// source is where recorded invocations come from: the log or a file.
type source interface {
	each(ctx context.Context, fn func(Record) error, skipped func(seq uint64, err error)) error
	total(ctx context.Context) int
}

// Run replays the recorded invocations of plugin that f selects, from the
// live bus's log, against opts.Candidate, and compares its answers with
// the recorded ones. The live bus is only read. The returned report is
// complete when err is nil; on error it holds what was done.
func Run(ctx context.Context, live *bus.Bus, plugin string, f Filter, opts Options) (*Report, error) {
	src, err := newLogSource(live, plugin, f)
	if err != nil {
		return nil, err
	}
	return run(ctx, src, plugin, opts)
}

// RunFile replays an export file (see Export) against opts.Candidate.
// With a Candidate.Spec, nothing but the plugin runs: this is how a plugin
// author replays recorded history inside go test. f selects invocations as
// for Run, except Last.
func RunFile(ctx context.Context, r io.Reader, f Filter, opts Options) (*Report, error) {
	src, plugin, err := newFileSource(r, f)
	if err != nil {
		return nil, err
	}
	if plugin == "" {
		if opts.Candidate.Spec != nil {
			plugin = opts.Candidate.Spec.Name
		}
		if plugin == "" {
			return nil, errors.New("the export holds no invocations, and the candidate has no name")
		}
	}
	return run(ctx, src, plugin, opts)
}

type engine struct {
	opts    Options
	cand    answerer
	base    answerer
	mask    *mask
	active  chan struct{}
	rep     *Report
	total   int
	skipped int
	// recorded versions seen, bounded
	versions map[string]bool
}

func run(ctx context.Context, src source, plugin string, opts Options) (*Report, error) {
	if err := opts.withDefaults(); err != nil {
		return nil, err
	}
	m, err := newMask(opts.Mask)
	if err != nil {
		return nil, err
	}
	e := &engine{
		opts: opts, mask: m, active: make(chan struct{}, opts.Concurrency),
		versions: make(map[string]bool),
		rep:      &Report{Plugin: plugin, ReplayID: opts.ReplayID, Started: time.Now().UTC(), Results: []Result{}},
	}
	log := opts.Logger.With("component", "replay", "plugin", plugin, "replay", opts.ReplayID)
	e.cand, err = opts.Candidate.start(ctx, plugin, opts.ReplayID, log.With("role", "candidate"))
	if err != nil {
		return nil, fmt.Errorf("starting candidate: %w", err)
	}
	defer func() { _ = e.cand.close(context.WithoutCancel(ctx)) }()
	e.rep.Candidate = e.cand.info().Version
	if opts.Baseline != nil {
		e.base, err = opts.Baseline.start(ctx, plugin, opts.ReplayID+"-baseline", log.With("role", "baseline"))
		if err != nil {
			return nil, fmt.Errorf("starting baseline: %w", err)
		}
		defer func() { _ = e.base.close(context.WithoutCancel(ctx)) }()
		e.rep.Baseline = e.base.info().Version
	}
	e.total = src.total(ctx)
	log.InfoContext(ctx, "replaying", "candidate", e.rep.Candidate, "kind", e.cand.kind(), "baseline", e.rep.Baseline, "expected", e.total)

	var t0, wall0 time.Time
	skipped := func(seq uint64, err error) {
		e.skipped++
		e.warn(fmt.Sprintf("seq %d: not a valid invocation: %v", seq, err))
	}
	// Invocations are sent in stream order, at most Concurrency at a time
	// (with 1, strictly one after another), and their verdicts collected
	// in stream order.
	err = pipeline(ctx, 4*opts.Concurrency, func(ctx context.Context, submit func(func(context.Context) (Result, error)) error) error {
		return src.each(ctx, func(r Record) error {
			if opts.Pace && !r.Invocation.Time.IsZero() {
				if t0.IsZero() {
					t0, wall0 = r.Invocation.Time, opts.Clock.Now()
				} else {
					due := wall0.Add(time.Duration(float64(r.Invocation.Time.Sub(t0)) / opts.Speed))
					if d := due.Sub(opts.Clock.Now()); d > 0 {
						if err := opts.Clock.Sleep(ctx, d); err != nil {
							return err
						}
					}
				}
			}
			select {
			case e.active <- struct{}{}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			return submit(func(ctx context.Context) (Result, error) {
				defer func() { <-e.active }()
				return e.one(ctx, r)
			})
		}, skipped)
	}, e.collect)
	e.rep.Totals.Skipped = e.skipped
	e.rep.Recorded = slices.Sorted(maps.Keys(e.versions))
	if e.base != nil && len(e.versions) > 0 && !e.versions[e.rep.Baseline] {
		e.warn(fmt.Sprintf("baseline version %q is not a recorded version (%v): its noise may hide real changes", e.rep.Baseline, e.rep.Recorded))
	}
	e.rep.Finished = time.Now().UTC()
	log.InfoContext(ctx, "replayed", "invocations", e.rep.Totals.Invocations, "divergent", e.rep.Totals.Divergent())
	return e.rep, err
}

const maxWarnings = 100

func (e *engine) warn(s string) {
	if len(e.rep.Warnings) < maxWarnings {
		e.rep.Warnings = append(e.rep.Warnings, s)
	}
}

// collect runs on one goroutine, in stream order.
func (e *engine) collect(r Result) error {
	e.rep.Totals.add(r.Status)
	if len(r.Masked) > 0 {
		e.rep.Totals.Masked++
		if e.rep.Noise == nil {
			e.rep.Noise = make(map[string]int)
		}
		seen := map[string]bool{}
		for _, m := range r.Masked {
			if seen[m.Path] {
				continue
			}
			seen[m.Path] = true
			if _, ok := e.rep.Noise[m.Path]; ok || len(e.rep.Noise) < maxNoisePaths {
				e.rep.Noise[m.Path]++
			}
		}
	}
	if v := r.Recorded.Version; v != "" && !e.versions[v] && len(e.versions) < 20 {
		e.versions[v] = true
	}
	if r.Status != Identical || e.opts.KeepIdentical {
		e.rep.Results = append(e.rep.Results, r)
	}
	if e.opts.OnResult != nil {
		e.opts.OnResult(r)
	}
	if e.opts.Progress != nil {
		e.opts.Progress(Progress{Totals: e.rep.Totals, Total: e.total})
	}
	return nil
}

// one replays one invocation.
func (e *engine) one(ctx context.Context, r Record) (Result, error) {
	inv := &r.Invocation
	res := Result{Seq: r.Seq, Invocation: inv.ID, TaskID: inv.TaskID, TaskName: inv.TaskName, Trigger: inv.Trigger, Time: inv.Time}
	t, ok := events.Lookup(inv.Trigger)
	if !ok {
		return Result{}, fmt.Errorf("invocation %s: unknown trigger %q", inv.ID, inv.Trigger)
	}
	var base *Answer
	baseDone := make(chan struct{})
	if e.base != nil {
		go func() {
			defer close(baseDone)
			ev, err := e.base.answer(ctx, *inv)
			a := answerOf(t, inv.Data, &ev, err)
			base = &a
		}()
	} else {
		close(baseDone)
	}
	start := time.Now()
	ev, err := e.cand.answer(ctx, *inv)
	res.LatencyUS = time.Since(start).Microseconds()
	<-baseDone
	if ctx.Err() != nil {
		return Result{}, context.Cause(ctx)
	}
	res.Recorded = answerOf(t, inv.Data, r.Patch, nil)
	res.Recorded.Seq = r.PatchSeq
	res.Candidate = answerOf(t, inv.Data, &ev, err)
	if base != nil {
		res.Baseline = base
	}
	res.Status, res.Reason, res.Diff, res.Masked, err = judge(res.Recorded, res.Candidate, base, e.mask)
	if err != nil {
		return Result{}, fmt.Errorf("invocation %s: %w", inv.ID, err)
	}
	return res, nil
}

// answerOf describes an answer: patch is the patch event (nil when none
// was recorded), err why there is none. The answer is judged as the
// executor judges it (events.Answer.Judge).
func answerOf(t events.Trigger, payload []byte, patch *events.Event, err error) Answer {
	if err == nil && patch == nil {
		return Answer{Outcome: OutcomeMissing, Error: "no patch recorded: the call timed out"}
	}
	ea := candidateAnswer(patch, err)
	var call events.PluginCall
	out := ea.Judge(t, payload, &call)
	a := Answer{Outcome: call.Outcome, Version: call.Version, Error: call.Reason}
	if ea.Failed == "" && ea.Error == "" && len(ea.Patch) > 0 {
		a.ContentType, a.Patch = ea.ContentType, jsonOrString(ea.Patch)
	}
	if call.Outcome == events.OutcomeApplied || call.Outcome == events.OutcomeNoChange {
		a.effect = out
	}
	return a
}

// candidateAnswer is an answer as the chain judges it: a timeout, another
// failure to answer (the plugin's error: its process exited, say), or the
// patch event ev.
func candidateAnswer(ev *events.Event, err error) events.Answer {
	switch {
	case errors.Is(err, bus.ErrPluginTimeout):
		return events.Answer{Failed: events.OutcomeTimeout, Reason: err.Error()}
	case err != nil:
		return events.Answer{Failed: events.OutcomeError, Reason: err.Error()}
	}
	return events.PatchAnswer(ev)
}

// judge compares the candidate's answer with the recorded one
// (verdict.Compare's rules), explains it, and masks the differences that
// are noise.
func judge(rec, cand Answer, base *Answer, m *mask) (Status, string, []DiffOp, []DiffOp, error) {
	v, rule, ops, err := verdict.Compare(rec.jsonEffect(), cand.jsonEffect())
	if err != nil {
		return "", "", nil, nil, err
	}
	switch rule {
	case verdict.RuleCandidateTimeout:
		return CandidateTimeout, cand.Error, nil, nil, nil
	case verdict.RuleCandidateError:
		if v == verdict.Identical {
			return Identical, "", nil, nil, nil
		}
		return CandidateError, cand.Error, nil, nil, nil
	case verdict.RuleNothingRecorded:
		return Different, "nothing was recorded (the call timed out); the candidate answered", nil, nil, nil
	case verdict.RuleRecordedError:
		return Different, "the recorded call failed (" + rec.Error + "); the candidate answered", nil, nil, nil
	case verdict.RuleBothRejected:
		return Identical, "", nil, nil, nil
	case verdict.RuleRecordedRejected:
		return Different, "the recorded patch was rejected (" + rec.Error + "); the candidate's applies", nil, nil, nil
	case verdict.RuleCandidateRejected:
		return Different, "the candidate's patch is rejected: " + cand.Error, nil, nil, nil
	case verdict.RuleEffects:
	}
	if v == verdict.Identical {
		return Identical, "", nil, nil, nil
	}
	mk := m
	if base != nil && base.effect != nil {
		noise, err := Diff(rec.effect, base.effect)
		if err != nil {
			return "", "", nil, nil, err
		}
		mk = m.withNoise(noise)
	}
	kept, masked := mk.split(diffOps(ops))
	if len(kept) == 0 {
		return Identical, "", nil, masked, nil
	}
	return Different, "", kept, masked, nil
}

// jsonEffect is the answer as jsondiff compares it.
func (a *Answer) jsonEffect() verdict.Effect {
	return verdict.Effect{Outcome: a.Outcome, Payload: a.effect, Error: a.Error}
}
