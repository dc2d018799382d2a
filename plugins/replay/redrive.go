package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/jsonout"
)

// RedriveOptions configure Redrive.
type RedriveOptions struct {
	// TaskIDs are the tasks whose last run is re-driven.
	TaskIDs []string
	// Candidates run in the replay namespace: each is started once, a
	// Command on a replay server of its own. A candidate takes the place
	// of the live plugin of the same name (Candidate.Name, or its Spec's
	// Name) in today's chain; one no live plugin has is added to the
	// chains of the triggers it is registered for.
	Candidates []Candidate
	// Only makes the chain the candidates alone, in the order given
	// (those named for a trigger before global ones, as QTasks orders a
	// chain). Otherwise the chain is today's: the live registry's.
	Only bool
	// Mask lists JSON Pointers masked from the per-trigger diffs.
	Mask []string
	// ReplayID names the replay namespace. Defaults to a random id.
	ReplayID string
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// OnRun is called with each run's report as it is done.
	OnRun func(RunReport)
	// CreatedAt, when set, gives a task's creation time when its record
	// is gone from the live bus (finished records expire; see
	// bus.Config.FinishedTaskTTL), e.g. from the projection; ok false if
	// unknown. A task's facts are read from that time; without it, from
	// the start of the log.
	CreatedAt func(ctx context.Context, taskID string) (t time.Time, ok bool)
}

// Outcome is how a task run ended.
type Outcome struct {
	Status string          `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Reason string          `json:"reason,omitempty"`
}

func (o Outcome) equal(p Outcome) bool {
	if o.Status != p.Status || o.Error != p.Error || o.Reason != p.Reason {
		return false
	}
	if len(o.Result) == 0 || len(p.Result) == 0 {
		return len(o.Result) == len(p.Result)
	}
	d, err := Diff(o.Result, p.Result)
	return err == nil && len(d) == 0
}

// Call sources in a re-driven chain.
const (
	// SourceCandidate: a candidate answered in the replay namespace.
	SourceCandidate = "candidate"
	// SourceRecorded: no candidate stands for the plugin; its recorded
	// patch of that firing was applied to the re-driven payload.
	SourceRecorded = "recorded"
	// SourceSkipped: no candidate and no recorded call: not run.
	SourceSkipped = "skipped"
)

// CallResult is one plugin's part in a re-driven firing.
type CallResult struct {
	Plugin  string         `json:"plugin"`
	Version string         `json:"version,omitempty"`
	Source  string         `json:"source"`
	Outcome events.Outcome `json:"outcome,omitempty"`
	Reason  string         `json:"reason,omitempty"`
}

// TriggerResult is one re-driven firing of a returnable trigger.
type TriggerResult struct {
	Trigger string `json:"trigger"`
	// N is the firing's index among the run's firings of Trigger.
	N int `json:"n"`
	// Seq is the recorded fact's stream sequence.
	Seq uint64 `json:"seq"`
	// Status is identical or different (the output against the recorded
	// one), or error when the chain failed under policy fail.
	Status Status       `json:"status"`
	Calls  []CallResult `json:"calls"`
	Diff   []DiffOp     `json:"diff,omitempty"`
	Masked []DiffOp     `json:"masked,omitempty"`
	// Failed is the failure that ended the re-driven run here.
	Failed string `json:"failed,omitempty"`
}

// RunReport is what one re-driven run would have become.
type RunReport struct {
	TaskID   string `json:"task_id"`
	TaskName string `json:"task_name,omitempty"`
	Attempt  int    `json:"attempt"`
	Run      int    `json:"run"`
	// Triggers are the returnable firings, in recorded order.
	Triggers []TriggerResult `json:"triggers"`
	Recorded Outcome         `json:"recorded"`
	Redriven Outcome         `json:"redriven"`
	// Changed is set when the outcome differs.
	Changed bool `json:"changed"`
	// Incomplete is set when the recorded run stopped (a plugin failed
	// it) where the re-driven one goes on: what follows was never
	// recorded, and the task function would have to run to know.
	Incomplete bool     `json:"incomplete,omitempty"`
	Notes      []string `json:"notes,omitempty"`
	// Error is set when the run could not be re-driven (nothing recorded).
	Error string `json:"error,omitempty"`
}

// RedriveTotals count the runs of a re-drive.
type RedriveTotals struct {
	Runs       int `json:"runs"`
	Changed    int `json:"changed"`
	Unchanged  int `json:"unchanged"`
	Incomplete int `json:"incomplete"`
	Missing    int `json:"missing"`
	// TriggersDifferent counts firings whose output changed.
	TriggersDifferent int `json:"triggers_different"`
}

// RedriveReport is the outcome of a re-drive.
type RedriveReport struct {
	ReplayID string        `json:"replay_id"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Totals   RedriveTotals `json:"totals"`
	Runs     []RunReport   `json:"runs"`
}

// Changed reports whether any run would have ended otherwise, or could not
// be re-driven to the end.
func (r *RedriveReport) Changed() bool {
	return r.Totals.Changed+r.Totals.Incomplete+r.Totals.Missing > 0
}

// WriteJSON writes the report as JSON.
func (r *RedriveReport) WriteJSON(w io.Writer) error {
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

// WriteSummary writes a human summary.
func (r *RedriveReport) WriteSummary(w io.Writer) error {
	ew := &errWriter{w: w}
	t := r.Totals
	ew.printf("re-drive %s: %d runs, %d changed, %d unchanged, %d incomplete, %d missing; %d firings changed\n",
		r.ReplayID, t.Runs, t.Changed, t.Unchanged, t.Incomplete, t.Missing, t.TriggersDifferent)
	for i := range r.Runs {
		run := &r.Runs[i]
		switch {
		case run.Error != "":
			ew.printf("  task %s: %s\n", run.TaskID, run.Error)
			continue
		case !run.Changed && !run.Incomplete && !slices.ContainsFunc(run.Triggers, func(t TriggerResult) bool { return t.Status != Identical }):
			continue
		}
		ew.printf("  task %s (%s) attempt %d run %d: %s -> %s", run.TaskID, run.TaskName, run.Attempt, run.Run,
			describe(run.Recorded), describe(run.Redriven))
		if run.Incomplete {
			ew.printf(" (incomplete)")
		}
		ew.printf("\n")
		for _, tr := range run.Triggers {
			if tr.Status == Identical {
				continue
			}
			ew.printf("    %s #%d: %s", tr.Trigger, tr.N, tr.Status)
			if tr.Failed != "" {
				ew.printf(": %s", tr.Failed)
			}
			ew.printf("\n")
			for _, d := range tr.Diff {
				ew.printf("      %s\n", d)
			}
		}
		for _, n := range run.Notes {
			ew.printf("    note: %s\n", n)
		}
	}
	// A task with no recorded facts did not change: nothing was re-driven.
	// It is said as such, not counted among the changed runs.
	if n := t.Changed + t.Incomplete; n > 0 {
		ew.printf("CHANGED: %d of %d runs\n", n, t.Runs-t.Missing)
	}
	if t.Missing > 0 {
		ew.printf("NOT FOUND: %d of %d tasks have no recorded facts (unknown ids?)\n", t.Missing, t.Runs)
	}
	if !r.Changed() {
		ew.printf("OK: no run would end differently\n")
	}
	return ew.err
}

func describe(o Outcome) string {
	s := o.Status
	if len(o.Result) > 0 {
		s += " " + string(o.Result)
	}
	if o.Error != "" {
		s += " (" + o.Error + ")"
	}
	return s
}

// link is one plugin of a re-driven chain.
type link struct {
	info events.PluginInfo
	ans  answerer // nil: play the recorded call back
}

// redriver holds what a re-drive shares across runs.
type redriver struct {
	live  *bus.Bus
	opts  RedriveOptions
	mask  *mask
	cands []answerer
	byNam map[string]answerer
}

// Redrive pushes the last run of each of opts.TaskIDs through today's
// plugin chain (or the candidates alone), in a replay namespace, using the
// recorded task results: no task function runs, nothing is written to the
// live log. For each returnable firing of the run, in recorded order, the
// recorded input (with a result changed by an earlier firing carried
// over) goes through the chain, and the output is compared with the
// recorded one; the report says what the run would have become.
func Redrive(ctx context.Context, live *bus.Bus, opts RedriveOptions) (*RedriveReport, error) {
	if opts.ReplayID == "" {
		opts.ReplayID = NewReplayID()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMask(opts.Mask)
	if err != nil {
		return nil, err
	}
	rd := &redriver{live: live, opts: opts, mask: m, byNam: map[string]answerer{}}
	defer func() {
		for _, a := range rd.cands {
			_ = a.close(context.WithoutCancel(ctx))
		}
	}()
	log := opts.Logger.With("component", "redrive", "replay", opts.ReplayID)
	for i := range opts.Candidates {
		c := &opts.Candidates[i]
		name := c.Name
		if name == "" && c.Spec != nil {
			name = c.Spec.Name
		}
		if name == "" {
			return nil, fmt.Errorf("candidate %d: name the plugin it stands for (Candidate.Name)", i)
		}
		if _, dup := rd.byNam[name]; dup {
			return nil, fmt.Errorf("two candidates for plugin %s", name)
		}
		a, err := c.start(ctx, name, opts.ReplayID+"-"+name, log.With("candidate", name))
		if err != nil {
			return nil, fmt.Errorf("starting candidate %s: %w", name, err)
		}
		rd.cands = append(rd.cands, a)
		rd.byNam[name] = a
	}
	rep := &RedriveReport{ReplayID: opts.ReplayID, Started: time.Now().UTC(), Runs: []RunReport{}}
	seen := map[string]bool{}
	for _, id := range opts.TaskIDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		run, err := rd.run(ctx, id)
		if err != nil {
			return rep, err
		}
		rep.Totals.Runs++
		switch {
		case run.Error != "":
			rep.Totals.Missing++
		case run.Incomplete:
			rep.Totals.Incomplete++
		case run.Changed:
			rep.Totals.Changed++
		default:
			rep.Totals.Unchanged++
		}
		for _, t := range run.Triggers {
			if t.Status != Identical {
				rep.Totals.TriggersDifferent++
			}
		}
		rep.Runs = append(rep.Runs, run)
		if opts.OnRun != nil {
			opts.OnRun(run)
		}
	}
	rep.Finished = time.Now().UTC()
	return rep, nil
}

// chain is the chain of trigger t for the re-drive.
func (rd *redriver) chain(t string) []link {
	handles := func(p events.PluginInfo) bool { return p.Global() || p.Handles(t) }
	var named, global []link
	add := func(l link) {
		if l.info.Handles(t) {
			named = append(named, l)
		} else {
			global = append(global, l)
		}
	}
	if !rd.opts.Only {
		var out []link
		for _, p := range rd.live.Registry().Chain(t) {
			l := link{info: p}
			if a, ok := rd.byNam[p.Name]; ok {
				l.ans = a
				l.info = a.info()
				l.info.Policy = p.Policy // the live registration's policy applies
			}
			out = append(out, l)
		}
		for _, a := range rd.cands {
			if _, live := rd.live.Registry().Get(a.info().Name); !live && handles(a.info()) {
				add(link{info: a.info(), ans: a})
			}
		}
		return append(append(out, named...), global...)
	}
	for _, a := range rd.cands {
		if handles(a.info()) {
			add(link{info: a.info(), ans: a})
		}
	}
	return append(named, global...)
}

type storedFact struct {
	seq  uint64
	ev   events.Event
	fact events.Fact
	n    int
}

// Triggers whose output carries the task's result on to later firings.
var resultKey = map[string]string{
	events.TaskExecutorRunTask:                   "result",
	events.TaskExecutorRunTaskGen:                "results",
	events.TaskExecutorRunTaskTriggerError:       "result",
	events.TaskExecutorAfterExecuteResultReplace: "result",
	events.TaskExecutorDecode:                    "result",
}

// Triggers whose input takes the carried result: at the top level, or in
// the model.
var (
	resultIn = map[string]bool{events.TaskExecutorAfterExecuteResultReplace: true, events.TaskExecutorDecode: true}
	modelIn  = map[string]bool{events.WorkerRemoveFinishedTask: true, events.BrokerRemoveFinishedTask: true, events.WorkerTaskErrorRetry: true}
	// Triggers whose output carries the task's arguments to the function.
	argsOut = map[string]bool{
		events.StorageGet: true, events.BrokerGet: true, events.BrokerAddWorker: true, events.WorkerAdd: true,
		events.WorkerRunTaskBefore: true, events.TaskExecutorArgsReplace: true,
	}
)

func (rd *redriver) run(ctx context.Context, id string) (RunReport, error) {
	rr := RunReport{TaskID: id, Triggers: []TriggerResult{}}
	if !events.ValidToken(id) {
		rr.Error = "not a valid task id"
		return rr, nil
	}
	// The record's creation time bounds where the task's facts are;
	// without a record or CreatedAt the whole log is read.
	var since time.Time
	if rec, err := rd.live.GetTask(ctx, id); err == nil {
		since = rec.Task.CreatedAt
	} else if !errors.Is(err, bus.ErrTaskNotFound) {
		return rr, fmt.Errorf("reading the record of task %s: %w", id, err)
	} else if rd.opts.CreatedAt != nil {
		if at, ok := rd.opts.CreatedAt(ctx, id); ok {
			since = at
		}
	}
	var facts []storedFact
	err := rd.live.TaskEvents(ctx, id, since, []string{events.SubjectTrigger + ".>"}, func(st bus.Stored) error {
		var f events.Fact
		if json.Unmarshal(st.Event.Data, &f) != nil {
			return nil //nolint:nilerr // a fact that does not decode is skipped: the read goes on
		}
		sf := storedFact{seq: st.Seq, ev: st.Event, fact: f}
		if i := strings.LastIndexByte(st.Event.ID, ':'); i >= 0 {
			sf.n, _ = strconv.Atoi(st.Event.ID[i+1:])
		}
		facts = append(facts, sf)
		return nil
	})
	if err != nil {
		return rr, fmt.Errorf("reading the facts of task %s: %w", id, err)
	}
	if len(facts) == 0 {
		rr.Error = "no facts recorded"
		return rr, nil
	}
	// The last run of the last attempt.
	for _, f := range facts {
		if f.ev.Attempt > rr.Attempt || (f.ev.Attempt == rr.Attempt && f.ev.Run > rr.Run) {
			rr.Attempt, rr.Run = f.ev.Attempt, f.ev.Run
		}
	}
	facts = slices.DeleteFunc(facts, func(f storedFact) bool { return f.ev.Attempt != rr.Attempt || f.ev.Run != rr.Run })
	rr.TaskName = facts[0].ev.TaskName
	for _, f := range facts {
		if f.ev.Trigger == events.StorageRemoveFinishedTask {
			var in struct {
				Model events.Task `json:"model"`
			}
			if json.Unmarshal(f.fact.Input, &in) == nil {
				rr.Recorded = Outcome{Status: in.Model.Status, Result: in.Model.Result, Error: in.Model.Error, Reason: in.Model.Reason}
			}
		}
	}
	if rr.Recorded.Status == "" {
		rr.Notes = append(rr.Notes, "the run has no final fact: it was interrupted")
	}
	rr.Redriven = rr.Recorded

	var carry json.RawMessage // the result, where the re-drive changed it
	argsChanged := ""
	failed := ""
	for _, f := range facts {
		t, ok := events.Lookup(f.ev.Trigger)
		if !ok || !t.Returnable || len(f.fact.Calls) == 0 && len(rd.chain(t.Name)) == 0 {
			continue
		}
		input := []byte(f.fact.Input)
		if carry != nil && resultIn[t.Name] {
			input = setKey(input, carry, "result")
		}
		if carry != nil && modelIn[t.Name] {
			input = setKey(input, carry, "model", "result")
		}
		tr, out, failure, err := rd.fire(ctx, t, f, input)
		if err != nil {
			return rr, err
		}
		recOut := []byte(f.fact.Output)
		if len(recOut) == 0 {
			recOut = []byte(f.fact.Input)
		}
		if failure != "" {
			tr.Status, tr.Failed = CandidateError, failure
			rr.Triggers = append(rr.Triggers, tr)
			failed = failure
			break
		}
		ops, err := Diff(recOut, out)
		if err != nil {
			return rr, fmt.Errorf("task %s, fact %d: %w", id, f.seq, err)
		}
		tr.Diff, tr.Masked = rd.mask.split(ops)
		tr.Status = Identical
		if len(tr.Diff) > 0 {
			tr.Status = Different
			if argsOut[t.Name] && argsChanged == "" {
				argsChanged = t.Name
			}
		}
		rr.Triggers = append(rr.Triggers, tr)
		if k, ok := resultKey[t.Name]; ok {
			carry = changed(readKey(recOut, k), readKey(out, k))
		}
		if modelIn[t.Name] {
			carry = changed(readKey(readKey(recOut, "model"), "result"), readKey(readKey(out, "model"), "result"))
		}
		if f.fact.Failed != "" {
			// The recorded run stopped here; the re-driven one would not.
			rr.Incomplete = true
			rr.Notes = append(rr.Notes, fmt.Sprintf("the recorded run was failed at %s (%s); re-driven, it goes on, but the rest was never recorded", t.Name, f.fact.Failed))
			break
		}
	}
	switch {
	case failed != "":
		rr.Redriven = Outcome{Status: events.StatusError, Error: failed, Reason: failed}
	case carry != nil:
		rr.Redriven.Result = carry
	}
	if argsChanged != "" && failed == "" {
		rr.Notes = append(rr.Notes, fmt.Sprintf("the task's arguments changed at %s; the task function is not run again, so the recorded result stands", argsChanged))
	}
	rr.Changed = !rr.Incomplete && !rr.Recorded.equal(rr.Redriven)
	return rr, nil
}

// changed returns now when it differs from recorded, else nil (nothing to
// carry): a later firing that restores the recorded value ends the carry.
func changed(recorded, now json.RawMessage) json.RawMessage {
	if len(recorded) == 0 && len(now) == 0 {
		return nil
	}
	if len(recorded) > 0 && len(now) > 0 {
		if d, err := Diff(recorded, now); err == nil && len(d) == 0 {
			return nil
		}
	}
	if len(now) == 0 {
		return json.RawMessage("null")
	}
	return now
}

// fire runs the chain of t over input, as the executor would
// (events.MutatorChain: the same judgement of answers, the same failure
// policy). It returns the output, and the failure under policy fail, if
// any.
func (rd *redriver) fire(ctx context.Context, t events.Trigger, f storedFact, input []byte) (TriggerResult, []byte, string, error) {
	tr := TriggerResult{Trigger: t.Name, N: f.n, Seq: f.seq, Calls: []CallResult{}}
	links := rd.chain(t.Name)
	mc := events.NewMutatorChain(t, input, len(links))
	for _, l := range links {
		cr := CallResult{Plugin: l.info.Name, Version: l.info.Version}
		var a events.Answer
		if l.ans != nil {
			cr.Source = SourceCandidate
			inv := events.Event{
				ID:              events.InvocationID(f.ev.TaskID, f.ev.Attempt, f.ev.Run, t.Name, f.n, l.info.Name),
				Source:          "qtasks/replay/" + rd.opts.ReplayID,
				Subject:         f.ev.TaskID,
				DataContentType: events.ContentTypeJSON,
				Data:            mc.Payload(),
				TaskID:          f.ev.TaskID,
				TaskName:        f.ev.TaskName,
				Trigger:         t.Name,
				Attempt:         f.ev.Attempt,
				Run:             f.ev.Run,
				TraceParent:     f.ev.TraceParent,
			}
			ev, err := l.ans.answer(ctx, inv)
			if ctx.Err() != nil {
				return tr, nil, "", context.Cause(ctx)
			}
			a = candidateAnswer(&ev, err)
		} else {
			i := slices.IndexFunc(f.fact.Calls, func(c events.PluginCall) bool { return c.Plugin == l.info.Name && !c.Shadow })
			if i < 0 {
				cr.Source, cr.Reason = SourceSkipped, "no candidate, and no call recorded in this firing"
				tr.Calls = append(tr.Calls, cr)
				continue
			}
			cr.Source = SourceRecorded
			cr.Version = f.fact.Calls[i].Version
			a = events.RecordedAnswer(f.fact.Calls[i])
		}
		goOn := mc.Step(events.PluginCall{Plugin: l.info.Name, Version: cr.Version, Policy: l.info.Policy}, &a)
		call := mc.Calls()[len(mc.Calls())-1]
		cr.Version, cr.Outcome, cr.Reason = call.Version, call.Outcome, call.Reason
		tr.Calls = append(tr.Calls, cr)
		if !goOn {
			return tr, mc.Payload(), mc.Failure().Error(), nil
		}
	}
	return tr, mc.Payload(), "", nil
}

// readKey returns the value at key of a JSON object, nil when absent or
// null.
func readKey(doc []byte, key string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(doc, &m) != nil {
		return nil
	}
	v := m[key]
	if bytes.Equal(v, []byte("null")) {
		return nil
	}
	return v
}

// setKey sets the value at the path key, rest... (keys of nested objects)
// of a JSON object; doc is returned unchanged when a level is not an object.
func setKey(doc []byte, v json.RawMessage, key string, rest ...string) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(doc, &m) != nil || m == nil {
		return doc
	}
	if len(rest) == 0 {
		m[key] = v
	} else {
		m[key] = setKey(m[key], v, rest[0], rest[1:]...)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return doc
	}
	return out
}
