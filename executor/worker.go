package executor

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// ErrStop is the cause of a task context cancelled because the worker is
// stopping after its grace period.
var ErrStop = errors.New("worker stopping")

// errTimeLimit is the cause of a task context that ran out of MaxTime.
var errTimeLimit = errors.New("time limit exceeded")

type item struct {
	m    jetstream.Msg
	task events.Task
	err  error
	seq  uint64
}

type queue []*item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].task.Priority != q[j].task.Priority {
		return q[i].task.Priority < q[j].task.Priority // lower first, as QTasks
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

type worker struct {
	a    *App
	cons jetstream.Consumer
	// slots bounds the tasks the worker holds: running, waiting in q, or
	// asked for by the pull request under way (fetchBatch), which can
	// bring one per slot it took. Concurrency plus Prefetch of them.
	slots chan struct{}
	// cancelFetch abandons the pull request under way (release); nil
	// when none is; guarded by mu.
	cancelFetch context.CancelFunc

	ctl *controls // operators' cancels and pauses
	// suspects are records that looked orphaned in the janitor's last
	// sweep, by task id, at their revision then; the janitor's own.
	suspects  map[string]uint64
	ctlCancel context.CancelFunc

	mu      sync.Mutex
	cond    *sync.Cond
	q       queue
	n       uint64
	closing bool
	// busy counts the tasks taken out of q and not yet done with (their
	// slot not yet given back); guarded by mu. Those of the pull request
	// under way are neither here nor in q: an idle worker holds slots.
	busy    int
	running map[string]struct{} // attempts (task id#attempt) being run; guarded by mu
	// beating are the task messages of the runs under way, by attempt:
	// holdAlive tells JetStream they are in progress, as it does for the
	// tasks held; guarded by mu. A run leaves it before its ack or nak.
	beating map[string]jetstream.Msg

	runCtx    context.Context
	cancelRun context.CancelCauseFunc
	quit      chan struct{} // closed when Stop begins
	fetchDone chan struct{}
	wg        sync.WaitGroup
	stopped   chan struct{}
}

// Start starts a worker that pulls tasks of the app's queue and runs them,
// at most Config.Concurrency at a time. It returns once the worker's
// consumer and controls are in place: tasks queued from then on are its to
// pull. ctx bounds only the start-up.
func (a *App) Start(ctx context.Context) error {
	a.mu.Lock()
	if a.worker != nil {
		a.mu.Unlock()
		return errors.New("worker already started")
	}
	w := &worker{a: a, slots: make(chan struct{}, a.cfg.Concurrency+max(a.cfg.Prefetch, 0)), quit: make(chan struct{}), fetchDone: make(chan struct{}), stopped: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	// The operators' controls exist before the worker is published, so
	// that Pause and Resume can apply theirs at once (applyControl).
	w.ctl = newControls(a.cfg.Queue)
	w.ctl.onPause = w.release
	a.worker = w
	a.mu.Unlock()

	err := w.start(ctx)
	if err == nil {
		err = a.startFlow(ctx) // chains (executor/chain.go)
	}
	if err != nil {
		// A failed start leaves nothing behind: Start may be called again.
		if w.ctlCancel != nil {
			w.ctlCancel()
		}
		a.mu.Lock()
		a.worker = nil
		a.mu.Unlock()
		return err
	}
	w.runCtx, w.cancelRun = context.WithCancelCause(context.Background())
	go w.fetch()
	go w.watchConn()
	go w.holdAlive()
	go w.janitor()
	for range a.cfg.Concurrency {
		w.wg.Add(1)
		go w.loop()
	}
	a.log.InfoContext(ctx, "worker started", "queue", a.cfg.Queue, "concurrency", a.cfg.Concurrency)
	return nil
}

func (w *worker) start(ctx context.Context) error {
	a := w.a
	pf := a.processFiring()
	for _, t := range []string{events.StarterStart, events.WorkerStart, events.BrokerStart, events.StorageStart, events.GlobalConfigStart, events.GlobalConfigSetStatus} {
		if _, err := pf.fire(ctx, t, map[string]any{"node": a.cfg.NodeID, "queue": a.cfg.Queue, "concurrency": a.cfg.Concurrency}); err != nil {
			return err
		}
	}
	// The worker ends a task past MaxDeliveries itself (process), with a
	// final record; JetStream's bound is a backstop for when even that
	// keeps failing: the message then stays in the stream, undelivered.
	cons, err := a.b.TaskConsumer(ctx, a.cfg.Queue, a.cfg.AckWait, a.cfg.MaxDeliveries+maxDeliveriesBackstop)
	if err != nil {
		return err
	}
	w.cons = cons
	// The operators' controls before the first pull: a paused queue takes
	// nothing, even for a moment after a restart.
	cctx, cancel := context.WithCancel(context.Background())
	w.ctlCancel = cancel
	ready, err := a.b.WatchControl(cctx, w.ctl.update)
	if err != nil {
		return err
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return fmt.Errorf("reading the operators' controls: %w", context.Cause(ctx))
	}
	if _, err := pf.fire(ctx, events.BrokerListenStart, map[string]any{"node": a.cfg.NodeID, "queue": a.cfg.Queue}); err != nil {
		return err
	}
	return pf.acks.Wait(ctx)
}

// holdAlive tells JetStream that the tasks a worker holds, started or not,
// are still in hand: without it, a task held or running longer than the
// ack wait would be redelivered to another worker and run twice. One
// ticker for all of them, rather than a goroutine and a ticker per run.
func (w *worker) holdAlive() {
	tick := time.NewTicker(w.a.cfg.AckWait / 3)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			w.mu.Lock()
			held := make([]jetstream.Msg, 0, len(w.q)+len(w.beating))
			for _, it := range w.q {
				held = append(held, it.m)
			}
			for _, m := range w.beating {
				held = append(held, m)
			}
			w.mu.Unlock()
			for _, m := range held {
				_ = m.InProgress()
			}
		case <-w.runCtx.Done():
			// Runs go on after Stop begins, for the grace period: it
			// ends when they have, or were cancelled.
			return
		}
	}
}

func (a *App) processFiring() *firing {
	f := a.newFiring(&events.Task{ID: a.cfg.NodeID}, 0)
	f.nodeFac = true
	// A node restarted under the same id must not have its facts taken for
	// duplicates of the previous start's.
	f.idBase = a.cfg.NodeID + "~" + a.startToken
	return f
}

// Stop stops taking tasks, lets in-flight ones finish for the grace period
// (or until ctx ends), then cancels them with cause ErrStop; their tasks are
// redelivered to another worker. Tasks pulled but not started are handed
// back at once. Stop is idempotent.
func (a *App) Stop(ctx context.Context) error {
	a.mu.Lock()
	w := a.worker
	a.mu.Unlock()
	if w == nil {
		return nil
	}
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		<-w.stopped
		return nil
	}
	w.closing = true
	w.mu.Unlock()
	close(w.quit)
	defer close(w.stopped)
	a.stopFlow() // chains (executor/chain.go)

	pf := a.processFiring()
	_, _ = pf.fire(ctx, events.QTasksStop, map[string]any{"node": a.cfg.NodeID})
	_, _ = pf.fire(ctx, events.StarterStop, map[string]any{"node": a.cfg.NodeID})
	_, _ = pf.fire(ctx, events.BrokerStop, map[string]any{"node": a.cfg.NodeID})

	w.release()
	<-w.fetchDone
	w.mu.Lock()
	for w.q.Len() > 0 {
		it := heap.Pop(&w.q).(*item)
		_ = it.m.Nak()
		<-w.slots
	}
	w.cond.Broadcast()
	w.mu.Unlock()

	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	grace := time.NewTimer(a.cfg.GracePeriod)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		w.cancelRun(ErrStop)
		<-done
	case <-ctx.Done():
		w.cancelRun(ErrStop)
		<-done
	}
	w.cancelRun(ErrStop)
	_, _ = pf.fire(ctx, events.WorkerStop, map[string]any{"node": a.cfg.NodeID})
	_, _ = pf.fire(ctx, events.StorageStop, map[string]any{"node": a.cfg.NodeID})
	_, _ = pf.fire(ctx, events.GlobalConfigStop, map[string]any{"node": a.cfg.NodeID})
	w.ctlCancel()
	err := pf.acks.Wait(context.WithoutCancel(ctx))
	a.log.InfoContext(ctx, "worker stopped")
	return err
}

// fetchWait is how long one pull request of a worker waits for tasks: one
// that ends with slots still free is followed by another.
const fetchWait = 30 * time.Second

// fetch pulls tasks into the worker's heap, never more than it has free
// slots for: a task the worker cannot start soon stays in the queue, for an
// idle worker to take (Config.Prefetch). A client-side buffer of pulled
// tasks (jetstream.Consumer.Messages) would hold tasks beyond the slots,
// neither in the heap nor kept alive by holdAlive.
func (w *worker) fetch() {
	defer close(w.fetchDone)
	for {
		// With every slot taken, wait for one or for Stop: Stop must not
		// wait here for a running task to end.
		select {
		case w.slots <- struct{}{}:
		case <-w.quit:
			return
		}
		n := w.takeFree(1)
		if paused, _ := w.ctl.pausedNow(); paused {
			w.free(n)
			if !w.waitResumed() {
				return
			}
			continue
		}
		got, err := w.fetchBatch(n)
		w.free(n - got)
		if errors.Is(err, nats.ErrConnectionClosed) {
			// The bus was closed under the worker: nothing to pull from.
			w.a.log.Error("pulling tasks: the connection is closed", "queue", w.a.cfg.Queue)
			return
		}
		if err != nil {
			w.a.log.Warn("pulling tasks", "err", err)
			select {
			case <-w.quit:
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// takeFree takes the slots free besides the n taken, and returns how many
// it holds then.
func (w *worker) takeFree(n int) int {
	for n < cap(w.slots) {
		select {
		case w.slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

// free gives back n slots.
func (w *worker) free(n int) {
	for range n {
		<-w.slots
	}
}

// fetchBatch asks for up to n tasks, one per slot taken, and puts those
// that come into the heap until the request is filled, expires or is
// abandoned (release). It returns how many it put there: their slots are
// theirs now, the others are the caller's to give back.
func (w *worker) fetchBatch(n int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchWait)
	defer cancel()
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return 0, nil
	}
	w.cancelFetch = cancel
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.cancelFetch = nil
		w.mu.Unlock()
	}()
	// A pause applied before cancelFetch was set did not cancel it.
	if paused, _ := w.ctl.pausedNow(); paused {
		return 0, nil
	}
	batch, err := w.cons.Fetch(n, jetstream.FetchContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("pulling tasks: %w", err)
	}
	got := 0
	for m := range batch.Messages() {
		if paused, _ := w.ctl.pausedNow(); paused {
			// Pulled as the pause came: back to the queue at once, so
			// that a paused queue holds none (they would wait out the
			// ack wait otherwise). A stopping worker's are Stop's to
			// hand back, from the heap.
			_ = m.Nak()
			continue
		}
		w.hold(m)
		got++
	}
	// An abandoned or expired request ends with its context's error.
	if err := batch.Error(); err != nil && ctx.Err() == nil {
		return got, fmt.Errorf("pulling tasks: %w", err)
	}
	return got, nil
}

// hold puts a pulled task message into the heap, decoded; a malformed
// one too, for process to dead-letter.
func (w *worker) hold(m jetstream.Msg) {
	it := &item{m: m}
	ev, err := events.Decode(events.Headers(m.Headers()), m.Data())
	if err == nil && ev.Type != events.TypeTask {
		err = fmt.Errorf("%w: type %q on the task queue", events.ErrInvalidEvent, ev.Type)
	}
	if err == nil {
		if err = events.DecodeTask(m.Data(), &it.task); err != nil {
			err = fmt.Errorf("%w: task data: %w", events.ErrInvalidEvent, err)
		} else if !events.ValidToken(it.task.ID) || it.task.Name == "" || it.task.Attempt < 1 {
			err = fmt.Errorf("%w: task message lacks a valid id, name or attempt", events.ErrInvalidEvent)
		}
	}
	it.err = err
	w.mu.Lock()
	w.n++
	it.seq = w.n
	heap.Push(&w.q, it)
	w.cond.Signal()
	w.mu.Unlock()
}

// release abandons the pull request under way: when the queue is paused
// or the worker stops, so that it brings no more tasks, and when the
// connection comes back, as the server may have lost the request with the
// old one. The tasks it brought before are held or handed back as
// fetchBatch says.
func (w *worker) release() {
	w.mu.Lock()
	cancel := w.cancelFetch
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// watchConn abandons the pull request under way when the connection comes
// back after a loss (release), rather than wait for its heartbeats to
// be missed; until Stop.
func (w *worker) watchConn() {
	nc := w.a.b.Conn()
	ch := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(ch)
	for {
		select {
		case <-ch:
			w.release()
		case <-w.quit:
			return
		}
	}
}

// waitResumed waits while the queue is paused; false when Stop came first.
func (w *worker) waitResumed() bool {
	paused, resumed := w.ctl.pausedNow()
	if !paused {
		return true
	}
	w.a.log.Info("queue paused: taking no task", "queue", w.a.cfg.Queue)
	for {
		select {
		case <-resumed:
		case <-w.quit:
			return false
		}
		if paused, resumed = w.ctl.pausedNow(); !paused {
			break
		}
	}
	w.a.log.Info("queue resumed: taking tasks", "queue", w.a.cfg.Queue)
	return true
}

func (w *worker) loop() {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		for w.q.Len() == 0 && !w.closing {
			w.cond.Wait()
		}
		if w.closing {
			// Tasks held but not started are Stop's to hand back.
			w.mu.Unlock()
			return
		}
		it := heap.Pop(&w.q).(*item)
		w.busy++
		w.mu.Unlock()
		w.process(it)
		w.mu.Lock()
		w.busy--
		w.mu.Unlock()
		<-w.slots
	}
}

// deliveries is the message's delivery count as an int. The conversion is
// exact: a delivery past Config.MaxDeliveries ends the message (a malformed
// one ends at its first), so the count stays near that small bound, far
// below 2^31.
func deliveries(md *jetstream.MsgMetadata) int {
	return int(md.NumDelivered) //nolint:gosec // G115: see above
}

func (w *worker) process(it *item) {
	a := w.a
	ctx := w.runCtx
	if it.err != nil {
		a.log.Error("rejecting malformed task message", "err", it.err)
		md, _ := it.m.Metadata()
		dl := events.DeadLetter{Stream: bus.StreamTasks, Subject: it.m.Subject(), Reason: it.err.Error()}
		if md != nil {
			dl.Sequence, dl.Consumer, dl.Deliveries = md.Sequence.Stream, md.Consumer, deliveries(md)
		}
		if err := a.b.DeadLetter(ctx, events.ExecutorDeadLetters, a.source, dl); err != nil {
			a.log.Error("recording dead letter", "err", err)
			_ = it.m.Nak()
			return
		}
		a.m.deadLettered()
		_ = it.m.Term()
		return
	}
	t := it.task
	if d := t.NotBefore.Sub(a.cfg.Now()); d > 0 {
		_ = it.m.NakWithDelay(d)
		return
	}
	// A delivery of an attempt this worker is running already (the
	// consumer lost its state in a server crash and delivered it again) is
	// left alone: the run holds the message, and its ack or nak settles it.
	attempt := t.ID + "#" + strconv.Itoa(t.Attempt)
	if !w.enter(attempt) {
		a.log.Warn("task delivered again while this worker runs it; the delivery is ignored", "task_id", t.ID, "attempt", t.Attempt)
		return
	}
	defer w.leave(attempt)
	// The run number is claimed in the task record below (claimRun); the
	// delivery count is only its floor, as the consumer may lose it.
	run := 1
	if md, err := it.m.Metadata(); err == nil {
		run = deliveries(md)
	}
	// The record decides what this delivery does: read it from the
	// leader (a lagging replica can show an attempt still new that another
	// run has finished, or no record at all).
	// On a first delivery the record holds the task message's bytes: the
	// task decoded from them is not decoded again.
	rec, err := a.b.GetTaskLatestLike(ctx, t.ID, it.m.Data(), &it.task)
	// A run started before if the delivery count says so, or the record
	// does: a server can lose the count, never the record's run.
	if err == nil && (run > 1 || rec.Task.Run > 0) && w.mayBeDecided(rec.Task, t) {
		// A redelivery: the previous run may have decided this attempt
		// (its final fact is in the log) and died before updating the
		// record and acking.
		if final, ok, ferr := w.loggedFinal(ctx, rec.Task); ferr != nil {
			a.log.Error("reading the log for a final record", "task_id", t.ID, "err", ferr)
			_ = it.m.NakWithDelay(time.Second)
			return
		} else if ok {
			if err := w.finishDecided(ctx, final, rec.Revision); err != nil {
				a.log.Error("completing a decided task", "task_id", t.ID, "err", err)
				_ = it.m.Nak()
				return
			}
			_ = it.m.Ack()
			return
		}
	}
	switch {
	case errors.Is(err, bus.ErrTaskNotFound):
		rec, _, err = a.b.CreateTask(ctx, t)
		if err != nil {
			a.log.Error("recreating task record", "task_id", t.ID, "err", err)
			_ = it.m.Nak()
			return
		}
	case errors.Is(err, bus.ErrNotRecord):
		// Not written by an executor (a plugin had the server write an
		// answer there): the task message says what the record was.
		a.log.Warn("replacing a forged task record", "task_id", t.ID, "err", err)
		rec, err = a.b.ReplaceForgedTask(ctx, t)
		if err != nil {
			a.log.Error("replacing a forged task record", "task_id", t.ID, "err", err)
			_ = it.m.NakWithDelay(time.Second)
			return
		}
	case err != nil:
		a.log.Error("reading task record", "task_id", t.ID, "err", err)
		_ = it.m.NakWithDelay(time.Second)
		return
	case rec.Task.Attempt > t.Attempt:
		_ = it.m.Ack() // a later attempt exists: this message is stale
		return
	case rec.Task.Attempt == t.Attempt && events.FinalStatus(rec.Task.Status):
		// A previous run decided this attempt but died before acking:
		// finish its bookkeeping (idempotently) and drop the message.
		if err := w.finishDecided(ctx, rec.Task, 0); err != nil {
			a.log.Error("completing a decided task", "task_id", t.ID, "err", err)
			_ = it.m.Nak()
			return
		}
		_ = it.m.Ack()
		return
	}
	// The bound counts deliveries by the durable run count too: a server
	// can lose the consumer's delivery count, never the record's run.
	deliveries := run
	if rec.Task.Attempt == t.Attempt {
		deliveries = max(run, rec.Task.Run+1)
	}
	if deliveries > a.cfg.MaxDeliveries {
		if err := w.endExhausted(ctx, t, deliveries); err != nil {
			a.log.Error("ending a task past its delivery bound", "task_id", t.ID, "err", err)
			_ = it.m.Nak()
			return
		}
		_ = it.m.Ack()
		return
	}
	// A run resumes an interrupted one when the record shows this attempt
	// in process: a run claimed it (claimRun) and did not finish. A
	// hand-back (a retry waiting out its backoff, tasks held at shutdown)
	// happens before a claim, and leaves the record as it was.
	resumed := rec.Task.Attempt == t.Attempt && rec.Task.Status == events.StatusProcess
	claim, run := w.claimRun(rec, t, run)
	a.m.runningAdd(1)
	defer a.m.runningAdd(-1)
	w.beat(attempt, it.m)
	err = w.run(ctx, t, claim, run, resumed)
	w.beat(attempt, nil)
	if err != nil {
		if errors.Is(err, errClaim) {
			a.log.Warn("claiming a run of the task; it will be redelivered", "task_id", t.ID, "err", err)
			_ = it.m.NakWithDelay(time.Second)
			return
		}
		if errors.Is(context.Cause(ctx), ErrStop) {
			a.log.Warn("task interrupted by shutdown; it will be redelivered", "task_id", t.ID)
		} else {
			a.log.Error("task run failed; it will be redelivered", "task_id", t.ID, "err", err)
		}
		_ = it.m.Nak()
		return
	}
	// A plain ack, not waited for: should it be lost, the message comes
	// back after the ack wait, and the redelivery finds the attempt decided
	// (its final fact is in the log) and only acks it.
	if err := it.m.Ack(); err != nil {
		a.log.Warn("acking task", "task_id", t.ID, "err", err)
	}
}

// maxDeliveriesBackstop is how many deliveries past Config.MaxDeliveries
// JetStream still makes, for endExhausted to succeed in.
const maxDeliveriesBackstop = 3

// endExhausted ends attempt t, whose task message was delivered run times,
// more than Config.MaxDeliveries, in status error: its runs keep failing
// before they finish (a crash, a failure that repeats), and another would
// only repeat their work. Nothing runs: no plugin is invoked (one may be
// the cause), only the final fact and record are written.
func (w *worker) endExhausted(ctx context.Context, t events.Task, run int) error {
	a := w.a
	final := t
	final.Status = events.StatusError
	final.Worker = a.cfg.NodeID
	final.UpdatedAt = a.cfg.Now().UTC()
	final.Run = run
	final.Result, final.DelayMS, final.RetryChild = nil, 0, ""
	final.Error = fmt.Sprintf("the task message was delivered %d times, more than the limit of %d, without a run finishing", run, a.cfg.MaxDeliveries)
	final.Reason = "deliveries exhausted"
	a.log.ErrorContext(ctx, "ending a task attempt past its delivery bound", "task_id", t.ID, "attempt", t.Attempt, "deliveries", run, "max_deliveries", a.cfg.MaxDeliveries)
	f := a.newFiring(&final, run)
	rec := encodeRecord(final)
	decided, seq, err := w.publishFinal(ctx, f, final, rec)
	if err != nil {
		return err
	}
	if !decided {
		if final, err = w.decidedFinal(ctx, seq); err != nil {
			return err
		}
	} else {
		a.m.exhaustedInc()
		a.countFinished(&final)
	}
	return w.finishDecided(ctx, final, 0)
}

// enter records that this worker runs attempt (task id#attempt); false if
// it runs it already.
func (w *worker) enter(attempt string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.running[attempt]; ok {
		return false
	}
	if w.running == nil {
		w.running = make(map[string]struct{})
	}
	w.running[attempt] = struct{}{}
	return true
}

// beat adds m, the task message of a run of attempt, to those holdAlive
// keeps in progress; nil takes the attempt's out.
func (w *worker) beat(attempt string, m jetstream.Msg) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m == nil {
		delete(w.beating, attempt)
		return
	}
	if w.beating == nil {
		w.beating = make(map[string]jetstream.Msg)
	}
	w.beating[attempt] = m
}

func (w *worker) leave(attempt string) {
	w.mu.Lock()
	delete(w.running, attempt)
	w.mu.Unlock()
}

// claimRun claims the number of the run about to start in the task record:
// one more than the record's last run, and at least the delivery count.
// The record is durable where the consumer's delivery count is not (a
// single server killed -9 can lose it, and deliver a resumed run as run 1
// again), and the compare-and-set gives two deliveries racing for one
// attempt different numbers: every run's facts and invocations get ids of
// their own (events.FactMsgID). It returns the claim under way and the run
// number it claims: the claim is sent at once and waited for only before
// the first message of the run leaves (firing.claimed), so that the
// run's intake does not wait for it; no message with that run number is
// sent unless the claim is stored.
func (w *worker) claimRun(rec bus.TaskRecord, t events.Task, floor int) (*bus.TaskWrite, int) {
	claimed := rec.Task
	if claimed.Attempt != t.Attempt {
		// The first run of a retry's next attempt: the record still shows
		// the attempt before, which the run's status process replaces.
		claimed = t
		claimed.Run = 0
	}
	claimed.Run = max(floor, claimed.Run+1)
	// The claim is the run's one write to the record before its final one
	// (issue #15, design (d)): it shows the attempt in process from here,
	// which tells a resumed run from a hand-back (process), Get and the
	// console what runs, and where loggedFinal starts (UpdatedAt).
	claimed.Status = events.StatusProcess
	claimed.Worker = w.a.cfg.NodeID
	claimed.UpdatedAt = w.a.cfg.Now().UTC()
	return w.a.b.UpdateTaskAsync(claimed, rec.Revision), claimed.Run
}

// errClaim marks the error of a run whose claim (claimRun) failed: it
// sent nothing, and its task message is handed back after a pause.
var errClaim = errors.New("claiming the run")

// finishDecided completes the bookkeeping of an attempt whose final fact is
// in the log: the task record, and the next attempt of a retried task. Both
// steps are idempotent. rev is the record's revision as the caller last
// wrote it, 0 if unknown (see storeFinal).
func (w *worker) finishDecided(ctx context.Context, final events.Task, rev uint64) error {
	return w.finishDecidedEncoded(ctx, final, nil, rev)
}

// finishDecidedEncoded is finishDecided for a caller that holds final
// encoded as rec (encodeRecord), or nil.
func (w *worker) finishDecidedEncoded(ctx context.Context, final events.Task, rec []byte, rev uint64) error {
	final, err := w.storeFinal(ctx, final, rec, rev)
	if err != nil {
		return err
	}
	if final.Status == events.StatusRetry {
		return w.a.b.Enqueue(ctx, nextAttempt(final, w.a.cfg.Now()), w.a.source)
	}
	return nil
}

// loggedFinal returns the final record of t's attempt if the log has one.
// It reads the final facts of t's queue written since the record's last
// update, which a run makes before it publishes its final fact.
func (w *worker) loggedFinal(ctx context.Context, rec events.Task) (events.Task, bool, error) {
	var final events.Task
	found := false
	subject := events.FactSubject(events.StorageRemoveFinishedTask, rec.Queue)
	err := w.a.b.TaskEvents(ctx, rec.ID, rec.UpdatedAt, []string{subject}, func(s bus.Stored) error {
		if !ownFinal(s, subject) {
			return nil // only executors write there; a check that costs nothing
		}
		m, err := finalModel(s)
		if err != nil {
			return err
		}
		if m.Attempt == rec.Attempt {
			final, found = m, true
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return events.Task{}, false, err
	}
	return final, found, nil
}

// mayBeDecided reports whether the log must be searched for a final fact of
// t's attempt that rec, its record, does not show. A run that got as far as
// status process may have decided the attempt. One that failed earlier
// (a plugin's veto at intake, an unknown task) decided it without updating
// the record, and a new run's final fact would be dropped as a duplicate of
// it, unless the duplicate window has passed since.
func (w *worker) mayBeDecided(rec, t events.Task) bool {
	if rec.Attempt != t.Attempt || events.FinalStatus(rec.Status) {
		return false
	}
	return rec.Status == events.StatusProcess ||
		w.a.cfg.Now().Sub(rec.UpdatedAt) > bus.DefaultDuplicateWindow-bus.TaskClockSkew
}

// errFound ends a read of the log early.
var errFound = errors.New("found")

// decidedFinal returns the final record stored at seq: the one that decided
// an attempt before this run's.
func (w *worker) decidedFinal(ctx context.Context, seq uint64) (events.Task, error) {
	s, err := w.a.b.Event(ctx, seq)
	if err != nil {
		return events.Task{}, err
	}
	if s.Err != nil {
		return events.Task{}, s.Err
	}
	if !ownFinal(s, "") {
		return events.Task{}, fmt.Errorf("message %d on %s is not a final fact: not taken for one", s.Seq, s.Subject)
	}
	return finalModel(s)
}

// ownFinal reports whether s is a final fact as executors write it: on a
// fact subject (subject, when not empty), which no plugin may write, with
// the final fact's type and id. Anything else is not taken for one.
func ownFinal(s bus.Stored, subject string) bool {
	if s.Err != nil || s.Event.Type != events.TypeTriggerPrefix+events.StorageRemoveFinishedTask ||
		s.Event.ID != events.FinalMsgID(s.Event.TaskID, s.Event.Attempt) {
		return false
	}
	if subject != "" {
		return s.Subject == subject
	}
	ps, err := events.ParseSubject(s.Subject)
	return err == nil && ps.Kind == "trigger" && ps.Trigger == events.StorageRemoveFinishedTask
}

// finalModel decodes the task record of a final fact.
func finalModel(s bus.Stored) (events.Task, error) {
	var fact struct {
		Input struct {
			Model events.Task `json:"model"`
		} `json:"input"`
	}
	if err := json.Unmarshal(s.Event.Data, &fact); err != nil {
		return events.Task{}, fmt.Errorf("decoding final fact %d of %s: %w", s.Seq, s.Event.TaskID, err)
	}
	if fact.Input.Model.ID != s.Event.TaskID {
		return events.Task{}, fmt.Errorf("final fact %d of %s records task %q", s.Seq, s.Event.TaskID, fact.Input.Model.ID)
	}
	return fact.Input.Model, nil
}

// storeFinal writes a decided final record to the task record, unless the
// record already moved on to a later attempt or holds a final record of
// this attempt. It returns the final record that stands: final, or the one
// the record holds (the first one written decides).
// With rev > 0, the revision this run last wrote, the record is written
// against it without reading it first: if nobody wrote since, it is this
// attempt's, not final. It is read only when rev is 0 or the write
// conflicts.
// enc is final encoded (encodeRecord), or nil: it is encoded here then.
func (w *worker) storeFinal(ctx context.Context, final events.Task, enc []byte, rev uint64) (events.Task, error) {
	if enc == nil {
		enc = encodeRecord(final)
	}
	b := w.a.b
	for {
		if rev == 0 {
			rec, err := b.GetTaskLatest(ctx, final.ID)
			if err != nil {
				return final, err
			}
			// A final record of this attempt stands: two final facts of one
			// attempt can be stored when its final-fact id was taken by a
			// forgery (bus.PublishOwn), and the first record decides.
			if rec.Task.Attempt > final.Attempt {
				return final, nil
			}
			if rec.Task.Attempt == final.Attempt && events.FinalStatus(rec.Task.Status) {
				return rec.Task, nil
			}
			rev = rec.Revision
		}
		_, err := b.UpdateTaskEncoded(ctx, &final, enc, rev)
		if errors.Is(err, bus.ErrConflict) {
			rev = 0
			continue
		}
		return final, err
	}
}

func nextAttempt(t events.Task, now time.Time) events.Task {
	c := t
	c.Attempt = t.Attempt + 1
	c.Status = events.StatusNew
	c.Result, c.Error, c.Reason, c.Worker = nil, "", "", ""
	c.RetryParent = fmt.Sprintf("%s#%d", t.ID, t.Attempt)
	c.RetryChild = ""
	c.DelayMS, c.Run = 0, 0
	c.NotBefore = t.UpdatedAt.Add(time.Duration(t.DelayMS) * time.Millisecond)
	if c.NotBefore.Before(now) {
		c.NotBefore = time.Time{}
	}
	c.UpdatedAt = now
	return c
}

// publishFinal writes the final fact of an attempt, final encoded as rec
// (encodeRecord). Its message id leaves
// out the run, so of two runs racing to finish the same attempt only the
// first is stored: decided reports whether that was this one, and seq is
// where the deciding fact is.
func (w *worker) publishFinal(ctx context.Context, f *firing, final events.Task, rec []byte) (decided bool, seq uint64, err error) {
	fact := events.Fact{Input: modelInput(rec)}
	data, err := fact.AppendJSON(nil)
	if err != nil {
		return false, 0, err
	}
	id := events.FinalMsgID(final.ID, final.Attempt)
	ev := f.event(events.StorageRemoveFinishedTask, id, data)
	// PublishOwn takes a duplicate only if it is this executor's kind of
	// final fact: a plugin may publish under any id on its own subjects,
	// and must not have its message taken for the attempt's final fact.
	ack, err := w.a.b.PublishOwn(ctx, w.a.source, f.subject(events.StorageRemoveFinishedTask), id, &ev)
	if err != nil {
		return false, 0, err
	}
	return !ack.Duplicate, ack.Sequence, nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on types that always encode
	}
	return b
}

// encodeRecord encodes a task record: the bytes the task bucket stores and
// a final fact's payload carries (modelInput).
func encodeRecord(t events.Task) []byte {
	b, err := t.AppendJSON(nil)
	if err != nil {
		panic(err) // a record read or built here always encodes
	}
	return b
}

// modelInput is events.ModelPayload{t} encoded, built from rec, t encoded by
// encodeRecord: the same bytes json.Marshal writes for it
// (TestModelInputIsModelPayload).
func modelInput(rec []byte) json.RawMessage {
	b := make([]byte, 0, len(`{"model":}`)+len(rec))
	b = append(b, `{"model":`...)
	b = append(b, rec...)
	return append(b, '}')
}
