package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// runState is one run of one task attempt.
type runState struct {
	w *worker
	f *firing
	t events.Task // the record as submitted; args/kw here are what runs
	// orig is the record as the task message carried it, before any
	// plugin patched it: it fits in the log (it was in a message).
	orig events.Task
	rev  uint64
	def  *taskDef
	// modelP, gotP and storedP are the payloads of the run's firings that
	// carry its record (fireRecord): fire reads a payload only to encode
	// it, and a record converted to an interface is a copy of its 416
	// bytes on the heap per firing, recorded or not.
	modelP  events.ModelPayload
	gotP    events.BrokerGetPayload
	storedP events.StorageGetPayload
}

// fireRecord fires trigger with t in the payload its key names ("model":
// events.ModelPayload, "task": BrokerGetPayload, "result":
// StorageGetPayload), built in the run's own (see modelP).
func (rs *runState) fireRecord(ctx context.Context, trigger, key string, t *events.Task) (json.RawMessage, error) {
	switch key {
	case "result":
		rs.storedP.Result = *t
		return rs.f.fire(ctx, trigger, &rs.storedP)
	case "task":
		rs.gotP.Task = *t
		return rs.f.fire(ctx, trigger, &rs.gotP)
	default:
		rs.modelP.Model = *t
		return rs.f.fire(ctx, trigger, &rs.modelP)
	}
}

// run walks a task attempt through the worker side of its lifecycle. It
// returns an error only when the run could not be completed (JetStream
// unreachable, shutdown): the task message is then redelivered. Every
// outcome of the task itself, failures included, returns nil.
func (w *worker) run(ctx context.Context, t events.Task, claim *bus.TaskWrite, run int, resumed bool) (err error) {
	a := w.a
	ctx, span := a.startAttempt(ctx, &t, run)
	defer func() { endAttempt(span, err) }()
	t.Run = run
	rs := &runState{w: w, t: t, orig: t}
	rs.f = a.newFiring(&rs.t, run)
	f := rs.f
	f.phase = events.PhaseIntake
	f.pooled = true // finish waits for its messages with waitAcks
	f.claim, f.claimCtx = claim, ctx

	if resumed {
		// A resumption is rare: its claim is waited for here, before it
		// is counted, rather than at the first message of the run.
		if err := f.claimed(); err != nil {
			return err
		}
		a.m.resumed()
		// The previous run of this attempt was interrupted: QTasks'
		// running_older_tasks resumption, which here really fires.
		if _, err := f.fire(ctx, events.BrokerRunningOlderTasks, map[string]any{
			"task_id": t.ID, "run": run, "worker": a.cfg.NodeID,
		}); err != nil {
			return rs.finish(ctx, rs.failed(err), nil)
		}
	}
	if _, err := f.fire(ctx, events.StorageAddProcess, events.AddProcessPayload{TaskID: t.ID, Priority: t.Priority, Worker: a.cfg.NodeID}); err != nil {
		return rs.finish(ctx, rs.failed(err), nil)
	}
	// Intake: the record as read, then as handed to the worker.
	if err := rs.fireModel(ctx, events.StorageGet, "result"); err != nil {
		return rs.finish(ctx, rs.failed(err), nil)
	}
	if err := rs.fireModel(ctx, events.BrokerGet, "task"); err != nil {
		return rs.finish(ctx, rs.failed(err), nil)
	}
	for _, trig := range []string{events.BrokerAddWorker, events.WorkerAdd} {
		out, err := f.fire(ctx, trig, events.WorkerAddPayload{
			TaskName: t.Name, TaskID: t.ID, Priority: rs.t.Priority,
			Args: rs.t.Args, Kw: rs.t.Kw, CreatedAt: t.CreatedAt,
		})
		if err != nil {
			return rs.finish(ctx, rs.failed(err), nil)
		}
		if err := rs.takeArgs(out, ""); err != nil {
			return rs.finish(ctx, rs.failed(err), nil)
		}
	}

	def, ok := a.task(t.Name)
	if !ok {
		// QTasks' unknown-task path: straight from new to error, without
		// worker_execute_before/after.
		final := rs.model(events.StatusError)
		final.Error = fmt.Sprintf("unknown task name %q: no worker of queue %s registers it", t.Name, t.Queue)
		final.Reason = "unknown task"
		return rs.finish(ctx, final, nil)
	}
	rs.def = def
	// The worker's registration is the authority on how a task runs: a
	// client that submits a task it does not register (qtasksd submit, an
	// HTTP client) cannot know its retry count or time limit. Later attempts
	// carry the count down from the first.
	if t.Attempt == 1 && rs.t.Retry == 0 {
		rs.t.Retry = def.opts.Retry
	}
	if rs.t.TimeoutMS == 0 {
		rs.t.TimeoutMS = def.opts.MaxTime.Milliseconds()
	}

	// Process.
	model := rs.model(events.StatusProcess)
	out, err := rs.fireRecord(ctx, events.WorkerExecuteBefore, "model", &model)
	if err != nil {
		return rs.finish(ctx, rs.failed(err), nil)
	}
	if out != nil {
		model.Extra = readExtra(out, "model")
	}
	for _, trig := range []string{events.BrokerUpdate, events.StorageUpdate} {
		out, err := f.fire(ctx, trig, events.UpdatePayload{Kw: events.UpdateKw{Name: t.ID, Mapping: model}})
		if err != nil {
			return rs.finish(ctx, rs.failed(err), nil)
		}
		if out == nil {
			continue
		}
		var p struct {
			Kw struct {
				Mapping events.Task `json:"mapping"`
			} `json:"kw"`
		}
		if json.Unmarshal(out, &p) == nil {
			model.Extra = p.Kw.Mapping.Extra
		}
	}
	// The record shows process since the run's claim (claimRun): it is
	// not written again until the final record (issue #15, design (d)).
	// Plugins may have patched the record's extra on the way to process;
	// the task and its final record see it.
	rs.t.Extra = model.Extra

	f.setPhase(events.PhasePrepare)
	out, err = f.fire(ctx, events.WorkerRunTaskBefore, events.RunTaskBeforePayload{
		TaskFunc: events.TaskFuncInfo{
			Name: def.name, Priority: def.opts.Priority, Retry: def.opts.Retry,
			MaxTimeMS: def.opts.MaxTime.Milliseconds(), Tags: def.opts.Tags,
			Description: def.opts.Description, Generating: def.seq,
		},
		TaskBroker: events.TaskBroker{ID: t.ID, Priority: rs.t.Priority, Args: rs.t.Args, Kw: rs.t.Kw},
	})
	if err != nil {
		return rs.finish(ctx, rs.failed(err), nil)
	}
	if err := rs.takeArgs(out, "task_broker"); err != nil {
		return rs.finish(ctx, rs.failed(err), nil)
	}

	final, taskErr := rs.execute(ctx)
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrStop) {
		return ErrStop // interrupted, not decided: redeliver
	}
	return rs.finish(ctx, final, taskErr)
}

// execute runs the task executor's part (QTASKS-SPEC §2.5 step 8) and
// returns the final model and the task's error, if any.
func (rs *runState) execute(ctx context.Context) (events.Task, error) {
	f, def := rs.f, rs.def
	tc := &TaskContext{
		ID: rs.t.ID, Name: rs.t.Name, Attempt: rs.t.Attempt, Run: f.run, Priority: rs.t.Priority,
		Queue: rs.t.Queue, Tags: rs.t.Tags, Extra: rs.t.Extra,
		Logger: rs.w.a.log.With("task_id", rs.t.ID, "task_name", rs.t.Name),
		app:    rs.w.a,
		own:    &ownState{},
	}
	tctx := context.WithValue(ctx, taskCtxKey{}, tc)
	closeFired := false
	closeTask := func(status string, err error) {
		if closeFired {
			return
		}
		closeFired = true
		p := events.ClosePayload{TaskID: rs.t.ID, Status: status}
		if err != nil {
			msg := err.Error()
			p.Error = &msg
		}
		_, _ = f.fire(ctx, events.TaskExecutorTaskClose, p)
	}
	fail := func(err error) (events.Task, error) {
		final := rs.failed(err)
		f.setPhase(events.PhaseFinish)
		closeTask(final.Status, err)
		return final, err
	}

	// The task's own code (its middlewares, its function) runs only in a
	// run whose claim is stored: what it writes, a limit's wait or its
	// state, may carry the run number. (The intake's storage_update, a
	// fact alone, waited for the claim already.)
	if err := f.claimed(); err != nil {
		return events.Task{}, err
	}
	// An attempt an operator cancelled before it ran never runs.
	if err := rs.w.ctl.cancelled(rs.t.ID, rs.t.Attempt); err != nil {
		return fail(err)
	}
	if _, err := f.fire(ctx, events.TaskExecutorMiddlewaresExecute, events.MiddlewaresPayload{Phase: "before", Middlewares: len(def.opts.MiddlewaresBefore)}); err != nil {
		return fail(err)
	}
	for i, mw := range def.opts.MiddlewaresBefore {
		if err := callSafely(func() error { return mw(tctx, tc) }); err != nil {
			return fail(fmt.Errorf("before-middleware %d: %w", i, err))
		}
	}
	out, err := f.fire(ctx, events.TaskExecutorArgsReplace, events.ArgsPayload{Args: rs.t.Args, Kw: rs.t.Kw})
	if err != nil {
		return fail(err)
	}
	var av struct {
		Args json.RawMessage `json:"args"`
		Kw   json.RawMessage `json:"kw"`
	}
	if out == nil {
		av.Args, av.Kw = rs.t.Args, rs.t.Kw
	} else if err := json.Unmarshal(out, &av); err != nil {
		return fail(fmt.Errorf("reading replaced arguments: %w", err))
	}
	args, kw := orEmpty(av.Args, "[]"), orEmpty(av.Kw, "{}")
	if _, err := f.fire(ctx, events.TaskExecutorBeforeExecute, events.TaskIDPayload{TaskID: rs.t.ID}); err != nil {
		return fail(err)
	}

	// The prepare phase is stored whole before the task function runs.
	f.setPhase(events.PhaseFinish)
	cctx, untrack := rs.w.ctl.track(tctx, rs.t.ID, rs.t.Attempt)
	result, results, err := rs.call(cctx, args, kw)
	untrack()
	// What the function wrote to its own state goes in the record's
	// extra.state, whatever its outcome, before the triggers that follow
	// see the record.
	rs.t.Extra = tc.own.close(rs.t.Extra)
	var pte *TaskPluginTriggerError
	switch {
	case err == nil && def.seq:
		out, err := f.fire(ctx, events.TaskExecutorRunTaskGen, map[string]any{"results": results})
		if err != nil {
			return fail(err)
		}
		if out == nil && results != nil {
			// The items come from json.Marshal: compact, valid.
			out = mustJSON(map[string]any{"results": results})
		}
		result = readKey(out, "results")
	case err == nil:
		out, err := f.fire(ctx, events.TaskExecutorRunTask, events.ResultPayload{Result: result})
		if err != nil {
			return fail(err)
		}
		result = resultOf(out, result)
	case errors.As(err, &pte):
		p := map[string]any{"reason": pte.Reason, "kw": pte.Kw, "result": nil}
		out, ferr := f.fire(ctx, events.TaskExecutorRunTaskTriggerError, p)
		if ferr != nil {
			return fail(ferr)
		}
		if !rs.handled(events.TaskExecutorRunTaskTriggerError) {
			return fail(err)
		}
		result = resultOf(out, nil)
	default:
		return fail(err)
	}

	if _, err := f.fire(ctx, events.TaskExecutorAfterExecute, events.TaskIDPayload{TaskID: rs.t.ID}); err != nil {
		return fail(err)
	}
	out, err = f.fire(ctx, events.TaskExecutorAfterExecuteResultReplace, events.ResultPayload{Result: result})
	if err != nil {
		return fail(err)
	}
	result = resultOf(out, result)
	if _, err := f.fire(ctx, events.TaskExecutorMiddlewaresExecute, events.MiddlewaresPayload{Phase: "after", Middlewares: len(def.opts.MiddlewaresAfter)}); err != nil {
		return fail(err)
	}
	for i, mw := range def.opts.MiddlewaresAfter {
		var r json.RawMessage
		if err := callSafely(func() (err error) { r, err = mw(tctx, tc, result); return err }); err != nil {
			return fail(fmt.Errorf("after-middleware %d: %w", i, err))
		}
		result = r
	}
	if def.opts.Decode != nil {
		var r json.RawMessage
		if err := callSafely(func() (err error) { r, err = def.opts.Decode(result); return err }); err != nil {
			return fail(fmt.Errorf("decode: %w", err))
		}
		if !json.Valid(r) {
			return fail(errors.New("decode returned invalid JSON"))
		}
		result = r
	}
	if len(def.opts.MiddlewaresAfter) > 0 || def.opts.Decode != nil {
		// What they return is the result as written, compact (as it would
		// be read back from an encoded payload).
		if result, err = compactJSON(result); err != nil {
			return fail(fmt.Errorf("encoding payload of %s: the result is not JSON: %w", events.TaskExecutorDecode, err))
		}
	}
	out, err = f.fire(ctx, events.TaskExecutorDecode, events.ResultPayload{Result: result})
	if err != nil {
		return fail(err)
	}
	result = resultOf(out, result)
	if len(result) > events.MaxPayloadSize {
		return fail(fmt.Errorf("result is %d bytes, at most %d: %w", len(result), events.MaxPayloadSize, events.ErrTooLarge))
	}
	final := rs.model(events.StatusSuccess)
	final.Result = result
	closeTask(final.Status, nil)
	return final, nil
}

// handled reports whether some plugin's patch was applied in the last
// firing of trigger: for the trigger-error path, any patch decides.
func (rs *runState) handled(trigger string) bool {
	return rs.f.tally(trigger).applied
}

// call runs the task function within MaxTime, recovering panics. A function
// that ignores its context past MaxTime is abandoned, not waited for.
func (rs *runState) call(ctx context.Context, args, kw json.RawMessage) (json.RawMessage, []json.RawMessage, error) {
	maxTime := time.Duration(rs.t.TimeoutMS) * time.Millisecond
	if maxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, maxTime, errTimeLimit)
		defer cancel()
	}
	type res struct {
		r  json.RawMessage
		rs []json.RawMessage
		e  error
	}
	done := make(chan res, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- res{e: fmt.Errorf("task panicked: %v\n%s", p, debug.Stack())}
			}
		}()
		start := time.Now()
		r, list, err := rs.def.run(ctx, args, kw)
		rs.w.a.observeRun(&rs.t, time.Since(start))
		done <- res{r, list, err}
	}()
	select {
	case r := <-done:
		var ce *CancelError
		if r.e != nil && errors.As(context.Cause(ctx), &ce) { // an operator's cancel
			return nil, nil, ce
		}
		if r.e != nil && errors.Is(context.Cause(ctx), errTimeLimit) {
			return nil, nil, fmt.Errorf("time limit exceeded for task %s: %v: %w", rs.t.Name, maxTime, r.e)
		}
		return r.r, r.rs, r.e
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), errTimeLimit) {
			return nil, nil, fmt.Errorf("time limit exceeded for task %s: %v", rs.t.Name, maxTime)
		}
		return nil, nil, context.Cause(ctx)
	}
}

func callSafely(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn()
}

// model returns the task record in status s, keeping the submitted
// priority and arguments (QTasks quirk Q9 fixed).
func (rs *runState) model(s string) events.Task {
	m := rs.t
	m.Status = s
	m.Worker = rs.w.a.cfg.NodeID
	m.UpdatedAt = rs.w.a.cfg.Now().UTC()
	return m
}

// failed is the final model of an attempt that failed with err, before the
// retry decision.
func (rs *runState) failed(err error) events.Task {
	if ce, ok := errors.AsType[*CancelError](err); ok {
		m := rs.model(events.StatusCancel)
		m.Error = ce.Reason
		if m.Error == "" {
			m.Error = rs.t.Name + ".cancel"
		}
		return m
	}
	m := rs.model(events.StatusError)
	m.Error = err.Error()
	if pf, ok := errors.AsType[*PluginFailure](err); ok {
		m.Reason = pf.Error()
	}
	if pte, ok := errors.AsType[*TaskPluginTriggerError](err); ok {
		m.Error, m.Reason = pte.Reason, "no plugin handled "+events.TaskExecutorRunTaskTriggerError
	}
	if m.Reason == "" && errors.Is(err, events.ErrTooLarge) {
		// No retry can mend it: say so, the error says what outgrew what.
		m.Reason = "too large for the log: " + err.Error()
	}
	return m
}

// fireModel fires a trigger whose payload is the record under key, "result"
// (storage_get) or "task" (broker_get); patched args, kw, priority and
// extra are taken for the rest of the run.
func (rs *runState) fireModel(ctx context.Context, trigger, key string) error {
	out, err := rs.fireRecord(ctx, trigger, key, &rs.t)
	if err != nil {
		return err
	}
	if out == nil {
		rs.t.Args, rs.t.Kw = orEmpty(rs.t.Args, "[]"), orEmpty(rs.t.Kw, "{}")
		return nil
	}
	var m map[string]events.Task
	if err := json.Unmarshal(out, &m); err != nil {
		return fmt.Errorf("reading patched %s: %w", trigger, err)
	}
	nt := m[key]
	rs.t.Args, rs.t.Kw, rs.t.Priority, rs.t.Extra = orEmpty(nt.Args, "[]"), orEmpty(nt.Kw, "{}"), nt.Priority, nt.Extra
	return nil
}

// takeArgs reads patched args, kw and priority from out (under key, or at
// the top level when key is empty); nil out leaves them as they are.
func (rs *runState) takeArgs(out json.RawMessage, key string) error {
	if out == nil {
		rs.t.Args, rs.t.Kw = orEmpty(rs.t.Args, "[]"), orEmpty(rs.t.Kw, "{}")
		return nil
	}
	if key != "" {
		out = readKey(out, key)
	}
	var p struct {
		Priority *int            `json:"priority"`
		Args     json.RawMessage `json:"args"`
		Kw       json.RawMessage `json:"kw"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		return fmt.Errorf("reading patched arguments: %w", err)
	}
	rs.t.Args, rs.t.Kw = orEmpty(p.Args, "[]"), orEmpty(p.Kw, "{}")
	if p.Priority != nil {
		rs.t.Priority = *p.Priority
	}
	return nil
}

func readKey(out json.RawMessage, key string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(out, &m) != nil {
		return nil
	}
	v := m[key]
	if string(v) == "null" {
		return nil
	}
	return v
}

// resultOf is the value under "result" of a trigger's output, as readKey
// reads it; when the output is nil (unchanged), it is v, the compact JSON
// value the trigger fired with under "result", read the same way.
func resultOf(out, v json.RawMessage) json.RawMessage {
	if out != nil {
		return readKey(out, "result")
	}
	if string(v) == "null" {
		return nil
	}
	return v
}

// compactJSON returns v without insignificant space, as json.Marshal writes
// a json.RawMessage, or an error if v is not JSON. Empty v stays empty.
func compactJSON(v json.RawMessage) (json.RawMessage, error) {
	if len(v) == 0 {
		return v, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return nil, err
	}
	if b.Len() == len(v) {
		return v, nil
	}
	return b.Bytes(), nil
}

func readExtra(out json.RawMessage, key string) map[string]json.RawMessage {
	var m map[string]events.Task
	if json.Unmarshal(out, &m) != nil {
		return nil
	}
	return m[key].Extra
}

// finish decides the attempt's fate: retry or not, the remove chain, the
// final record (exactly once), the final fact, the next attempt, and waits
// until every fact of the run is stored.
func (rs *runState) finish(ctx context.Context, final events.Task, taskErr error) error {
	a, f := rs.w.a, rs.f
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrStop) {
		return ErrStop // interrupted, not decided: redeliver
	}
	// A run whose claim failed sent nothing and decides nothing.
	if err := f.claimed(); err != nil {
		return err
	}
	rs.rev = f.claimRev
	// A run that failed before its task function ends here too: the facts
	// of the phase it was in are stored whole, the rest are finish's.
	f.setPhase(events.PhaseFinish)
	// A fact too large for the log would be as large on the next attempt:
	// no retry for it.
	if final.Status == events.StatusError && rs.t.Retry > 0 && rs.def != nil && taskErr != nil && rs.def.retryable(taskErr) &&
		!errors.Is(taskErr, events.ErrTooLarge) {
		retry := final
		retry.Status = events.StatusRetry
		retry.Retry = rs.t.Retry - 1
		retry.RetryChild = rs.t.ID + "#" + strconv.Itoa(rs.t.Attempt+1)
		retry.DelayMS = a.retryDelay(rs.t.Attempt) // the default; plugins may patch it
		out, err := f.fire(ctx, events.WorkerTaskErrorRetry, map[string]any{
			"model": retry, "error": final.Error, "errors": errorChain(taskErr),
		})
		if err == nil {
			var m struct {
				Model struct {
					Status  string `json:"status"`
					DelayMS int64  `json:"delay_ms"`
				} `json:"model"`
			}
			var uerr error
			if out == nil {
				m.Model.Status, m.Model.DelayMS = retry.Status, retry.DelayMS
			} else {
				uerr = json.Unmarshal(out, &m)
			}
			switch {
			case uerr != nil:
				final.Reason = fmt.Sprintf("no retry: reading the output of %s: %v", events.WorkerTaskErrorRetry, uerr)
			case m.Model.Status == events.StatusRetry:
				retry.DelayMS = max(m.Model.DelayMS, 0)
				final = retry
			default:
				final.Reason = "retry vetoed on " + events.WorkerTaskErrorRetry
			}
		} else {
			final.Reason = err.Error()
		}
	}
	for _, trig := range []string{events.WorkerRemoveFinishedTask, events.BrokerRemoveFinishedTask} {
		out, err := rs.fireRecord(ctx, trig, "model", &final)
		if err != nil {
			final.Status, final.Reason = events.StatusError, err.Error()
			if final.Error == "" {
				final.Error = err.Error()
			}
			final.Result = nil
			continue
		}
		if out == nil {
			continue
		}
		var m map[string]events.Task
		if json.Unmarshal(out, &m) == nil {
			final.Result, final.Extra = m["model"].Result, m["model"].Extra
		}
	}
	// Every fact of the run is stored before the final one, and the final
	// fact before the task record says final: a caller that saw the record
	// can read the whole history.
	f.flush()
	if err := f.waitAcks(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	final, rec := rs.fitFinal(final)
	decided, seq, err := rs.w.publishFinal(ctx, f, final, rec)
	if err != nil {
		return err
	}
	if !decided {
		rec = nil // the record that stands is the deciding run's
		// Another run of this attempt finished first; its record stands.
		// A duplicate's ack gives the sequence of the fact stored first.
		a.log.WarnContext(ctx, "another run decided this attempt first", "task_id", final.ID, "attempt", final.Attempt)
		if final, err = rs.w.decidedFinal(ctx, seq); err != nil {
			return err
		}
	}
	if err := rs.w.finishDecidedEncoded(ctx, final, rec, rs.rev); err != nil {
		return err
	}
	noteFinal(ctx, &final)
	if decided {
		// Counted by the process whose final fact was stored first, once
		// the record says final: a run that completes another's decision
		// (a redelivery after a crash) does not count it again.
		a.countFinished(&final)
	}
	f.setPhase(events.PhaseEnd)
	if rs.def != nil {
		_, _ = rs.fireRecord(ctx, events.WorkerExecuteAfter, "model", &final)
	}
	f.flush()
	return f.waitAcks(context.WithoutCancel(ctx))
}

// fitFinal returns final, or, when its final fact would be too large for
// the log (plugins grew the arguments or the result past its limits), the
// attempt ended in error with the arguments as the task message carried
// them and no result: a fact the log refuses would fail on every retry.
// It returns the record it returns encoded too (encodeRecord), for the
// final fact: encoded once for the size check and the fact.
func (rs *runState) fitFinal(final events.Task) (events.Task, []byte) {
	rec := encodeRecord(final)
	size := len(rec) + len(`{"model":}`)
	if size+len(`{"input":}`) <= events.MaxDataSize {
		return final, rec
	}
	fit := final
	fit.Status = events.StatusError
	fit.Args, fit.Kw, fit.Extra, fit.Result = rs.orig.Args, rs.orig.Kw, rs.orig.Extra, nil
	fit.DelayMS = 0
	fit.RetryChild = ""
	fit.Reason = fmt.Sprintf("the final record is %d bytes, the log takes at most %d: %v", size, events.MaxDataSize, events.ErrTooLarge)
	if final.Error == "" {
		fit.Error = fit.Reason
	}
	fit.Reason += "; arguments as the task message carried them, result dropped"
	return fit, encodeRecord(fit)
}

// chainedError is one error of a failed attempt's error chain, as the
// payload of worker_task_error_retry carries it under "errors": a plugin in
// another process has no Go error values, but can match these.
type chainedError struct {
	// Type is the error's dynamic type, as fmt's %T prints it
	// ("*fs.PathError", "*errors.errorString", "*fmt.wrapError").
	Type string `json:"type"`
	// Message is its Error() text, cut to maxChainedMessage bytes.
	Message string `json:"message"`
}

// Bounds of the error chain carried by worker_task_error_retry.
const (
	maxErrorChain     = 32
	maxChainedMessage = 1024
)

// errorChain lists err and every error it wraps, depth first: through
// Unwrap() error and Unwrap() []error (errors.Join, fmt.Errorf with several
// %w), at most maxErrorChain entries.
func errorChain(err error) []chainedError {
	out := []chainedError{}
	var walk func(error)
	walk = func(e error) {
		for e != nil && len(out) < maxErrorChain {
			msg := e.Error()
			if len(msg) > maxChainedMessage {
				msg = strings.ToValidUTF8(msg[:maxChainedMessage], "")
			}
			out = append(out, chainedError{Type: fmt.Sprintf("%T", e), Message: msg})
			switch u := e.(type) { //nolint:errorlint // walks the chain itself, one link at a time
			case interface{ Unwrap() []error }:
				for _, c := range u.Unwrap() {
					walk(c)
				}
				return
			case interface{ Unwrap() error }:
				e = u.Unwrap()
			default:
				return
			}
		}
	}
	walk(err)
	return out
}
