package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// SubmitRequest is one submission of a batch (SubmitMany): Submit's
// arguments.
type SubmitRequest struct {
	Name string
	// Input becomes the task's kw, as Submit's input.
	Input   any
	Options *SubmitOptions
}

// ErrSomeNotQueued is wrapped by SubmitMany's error when some submissions
// of the batch failed; their results say which and why.
var ErrSomeNotQueued = errors.New("some submissions of the batch were not queued")

// batchChunk is how many submissions of a batch go in one chunk: the
// record creates, task messages and facts of batchChunks chunks stay
// within the bus's async publish window (bus.DefaultMaxPending) rather
// than stalling on it; and it bounds what one phase message of the chunk
// packs (phasePacker: two facts a submission; a message that would pass
// events.MaxBatchSize is split).
const batchChunk = 250

// batchChunks is how many chunks of a batch are on their way at once:
// while one waits for its acks, another's messages are being written.
const batchChunks = 4

// factsWaitSlack is how much longer than the bus's publish timeout a chunk
// waits for its facts' acks, as bus.Acks.Wait does for one firing.
const factsWaitSlack = 5 * time.Second

// existsReaders bounds the concurrent reads of a chunk's keyed records.
const existsReaders = 32

// retryWriters bounds the concurrent writes of a chunk asked again
// (askAgain) and of its records taken back (takeBack): in an election a
// chunk's writes wait for the new leader together rather than in turn.
const retryWriters = 32

// errKeyTaken is a record create's, asked again, that found the key's
// record another's (or the marker of one taken back).
var errKeyTaken = errors.New("the key's record exists")

// SubmitMany submits a batch: one SubmitResult per request, in order, each
// as Submit would answer that request alone (a task queued, a duplicate,
// or an error that means the task was not queued, unless it is an
// *OutcomeUnknownError), and a bad request fails alone. It costs about a
// third of the CPU per task of one Submit after another (docs/BENCHMARKS.md;
// its rate gains less on a loaded machine, which serves the caller that
// sleeps on each ack first): the record creates, task messages and facts
// of many submissions are published without waiting and their acks
// awaited together, so a batch waits for a few round trips per chunk of
// batchChunk submissions instead of a few per task, and batchChunks chunks
// are on their way at once; and the submit and queued facts of a chunk
// share one phase message per queue and phase (protocol 3, phasePacker),
// so a submission stores three messages of its own (its record, its task
// message, storage_add's fact) instead of five.
//
// A record create or task message that does not get through (no stream
// leader, during an election; an answer lost; a connection reconnecting)
// is asked again as Submit's are, within ctx's deadline (askAgain), so a
// batch rides out an election as Submit does.
//
// The error is nil when every submission was queued (or a duplicate);
// otherwise it wraps ErrSomeNotQueued and counts the failures.
//
// Submissions whose idempotency key another of the batch (or a Submit in
// flight) holds are made after the rest, one at a time, so that a key's
// submissions still take turns: the later ones are duplicates or
// conflicts of the first.
func (a *App) SubmitMany(ctx context.Context, reqs []SubmitRequest) ([]SubmitResult, error) {
	res := make([]SubmitResult, len(reqs))
	var (
		mu    sync.Mutex
		later []int
	)
	chunks := (len(reqs) + batchChunk - 1) / batchChunk
	parallel(chunks, batchChunks, func(c int) {
		lo := c * batchChunk
		hi := min(lo+batchChunk, len(reqs))
		l := a.submitChunk(ctx, reqs[lo:hi], res[lo:hi])
		mu.Lock()
		for _, i := range l {
			later = append(later, lo+i)
		}
		mu.Unlock()
	})
	slices.Sort(later)
	for _, i := range later {
		r := reqs[i]
		res[i].Task, res[i].Err = a.submit(ctx, r.Name, r.Input, r.Options, &res[i].Duplicate)
	}
	failed, unknown := 0, 0
	for i := range res {
		if res[i].Err != nil {
			failed++
			if errors.Is(res[i].Err, ErrOutcomeUnknown) {
				unknown++
			}
		}
	}
	if failed > 0 {
		return res, fmt.Errorf("%d of %d submissions failed (%d of them with their outcome unknown): %w", failed, len(reqs), unknown, ErrSomeNotQueued)
	}
	return res, nil
}

// batchEntry is one submission of a chunk on its way.
type batchEntry struct {
	i      int
	name   string
	o      SubmitOptions
	t      events.Task
	f      *firing
	unlock func()
	enc    []byte // t encoded (fireBefore)
	rec    bus.TaskRecord
	fut    jetstream.PubAckFuture
	err    error // the future's publish failed
	queued bool
}

// submitChunk submits reqs into res, in waves: every submission checked
// and its triggers before storage fired; every record created, the acks
// awaited together; every task message published, awaited together; the
// after-queue triggers fired and every fact awaited together. It returns
// the requests left to Submit one by one (their key taken).
func (a *App) submitChunk(ctx context.Context, reqs []SubmitRequest, res []SubmitResult) (later []int) {
	es := make([]*batchEntry, 0, len(reqs))
	defer func() {
		for _, e := range es {
			if e.unlock != nil {
				e.unlock()
			}
		}
	}()
	taken := make(map[string]bool)
	var keyed []*batchEntry
	for i, r := range reqs {
		e := &batchEntry{i: i, name: r.Name}
		if r.Options != nil {
			e.o = *r.Options
		}
		t, err := a.newTask(r.Name, r.Input, &e.o)
		if err != nil {
			res[i].Err = err
			continue
		}
		if e.o.IdempotencyKey == "" {
			id, err := uuid.NewV7()
			if err != nil {
				res[i].Err = fmt.Errorf("submitting %s: %w", r.Name, err)
				continue
			}
			t.ID = id.String()
			t.IdempotencyKey = GeneratedKeyPrefix + t.ID
		} else {
			t.ID = KeyTaskID(e.o.IdempotencyKey)
			if taken[t.ID] {
				later = append(later, i)
				continue
			}
			unlock, ok := a.tryLockID(t.ID)
			if !ok {
				later = append(later, i)
				continue
			}
			taken[t.ID], e.unlock = true, unlock
			keyed = append(keyed, e)
		}
		e.t = t
		es = append(es, e)
	}

	// A key that names a task already is answered as Submit answers it,
	// with no trigger fired.
	parallel(len(keyed), existsReaders, func(k int) {
		e := keyed[k]
		rec, err := a.b.GetTaskLatest(ctx, e.t.ID)
		switch {
		case err == nil:
			e.rec = rec
		case !errors.Is(err, bus.ErrTaskNotFound):
			e.err = fmt.Errorf("submitting %s: %w", e.name, err)
		}
	})
	live, dups := es[:0:0], es[:0:0]
	for _, e := range es {
		switch {
		case e.err != nil:
			res[e.i].Err = e.err
		case e.rec.Revision != 0:
			dups = append(dups, e)
		default:
			live = append(live, e)
		}
	}
	// A duplicate may be queued again (resubmitted): one round trip each,
	// overlapped.
	parallel(len(dups), existsReaders, func(k int) {
		e := dups[k]
		res[e.i].Task, res[e.i].Err = a.batchDuplicate(ctx, e)
		res[e.i].Duplicate = res[e.i].Err == nil
	})

	// Triggers before storage; the task is stored only if they pass.
	now := a.cfg.Now().UTC()
	ready := live[:0:0]
	for _, e := range live {
		e.t.CreatedAt, e.t.UpdatedAt = now, now
		e.t.NotBefore = e.o.runAt(now) // checked by checkDelay in newTask
		if err := checkPayloadSize(&e.t, "arguments and extra"); err != nil {
			res[e.i].Err = fmt.Errorf("submitting %s: %w", e.name, err)
			continue
		}
		e.f = a.newFiring(&e.t, 0)
		e.f.idBase = e.t.ID + "~" + uuid.NewString()[:8]
		e.f.hold = events.StorageAdd
		e.f.phase = events.PhaseSubmit
		ready = append(ready, e)
	}
	parallel(len(ready), fireWorkers(a), func(k int) {
		e := ready[k]
		e.enc, e.err = a.fireBefore(ctx, e.f, &e.t)
	})
	fail := func(e *batchEntry, err error) {
		e.f.release(err)
		e.f.flush()
		res[e.i].Err = fmt.Errorf("submitting %s: %w", e.name, err)
	}

	// The submission's facts so far go before the records, as Submit's:
	// the chunk's in one phase message per queue (phasePacker).
	submitted := newPhasePacker(a, events.PhaseSubmit)
	toStore := ready[:0:0]
	for _, e := range ready {
		if e.err != nil {
			fail(e, e.err)
			continue
		}
		submitted.take(e.f)
		toStore = append(toStore, e)
	}
	submitted.flush()

	// The records: every create published, the answers awaited together,
	// and those that did not get through (no stream leader, an answer
	// lost) asked again one by one, as Submit's CreateTask asks
	// (bus.CreateTaskAfter): a batch rides out a leader election as Submit
	// does.
	stored, again := ready[:0:0], ready[:0:0]
	for _, e := range toStore {
		if ctx.Err() != nil {
			// Nothing is stored once the caller gave up.
			fail(e, context.Cause(ctx))
			continue
		}
		if e.fut, e.err = a.b.CreateTaskAsync(e.t, e.enc); e.err != nil {
			again = append(again, e) // it did not leave (a connection reconnecting, say)
			continue
		}
		stored = append(stored, e)
	}
	a.awaitAll(ctx, stored)
	queue := stored[:0:0]
	keyTaken := func(e *batchEntry) {
		// Another process's submission of the key was first, or the key
		// holds the marker of a record taken back: CreateTask's case, left
		// to Submit.
		e.f.release(errors.New("the key's record exists, or was taken back: submitted again on its own"))
		e.f.flush()
		later = append(later, e.i)
	}
	for _, e := range stored {
		switch {
		case e.err == nil:
			e.rec = bus.TaskRecord{Task: e.t, Revision: e.rec.Revision}
			queue = append(queue, e)
		case bus.TaskExists(e.err):
			keyTaken(e)
		default:
			again = append(again, e)
		}
	}
	a.askAgain(ctx, again, func(ctx context.Context, e *batchEntry) {
		var created bool
		e.rec, created, e.err = a.b.CreateTaskAfter(ctx, e.t, e.enc, e.err)
		if e.err == nil && !created {
			e.err = errKeyTaken
		}
	})
	for _, e := range again {
		switch {
		case e.err == nil:
			e.rec = bus.TaskRecord{Task: e.t, Revision: e.rec.Revision}
			queue = append(queue, e)
		case errors.Is(e.err, errKeyTaken):
			keyTaken(e)
		default:
			// Not queued; a record stored all the same is the janitor's
			// (or a retry's), as with Submit.
			fail(e, e.err)
		}
	}

	// The task messages, the same way (bus.EnqueueAfter). A record whose
	// task message was surely not stored is taken back (takeBack).
	sent, again, back := queue[:0:0], queue[:0:0], queue[:0:0]
	for _, e := range queue {
		if ctx.Err() != nil {
			e.err = context.Cause(ctx)
			back = append(back, e)
			continue
		}
		if e.fut, e.err = a.b.EnqueueAsync(e.t, e.enc, a.source); e.err != nil {
			again = append(again, e)
			continue
		}
		sent = append(sent, e)
	}
	a.awaitAll(ctx, sent)
	answered := sent[:0:0]
	for _, e := range sent {
		if e.err != nil {
			again = append(again, e)
		} else {
			answered = append(answered, e)
		}
	}
	a.askAgain(ctx, again, func(ctx context.Context, e *batchEntry) {
		e.err = a.b.EnqueueAfter(ctx, e.t, e.enc, a.source, e.err)
	})
	answered = append(answered, again...)
	for _, e := range answered {
		switch {
		case e.err == nil:
			e.queued = true
			e.f.release(nil)
			e.f.setPhase(events.PhaseQueued)
			res[e.i].Task = e.t
		case !bus.SurelyNotStored(e.err):
			e.f.release(nil)
			e.f.flush()
			res[e.i].Task = e.t
			res[e.i].Err = &OutcomeUnknownError{TaskID: e.t.ID, IdempotencyKey: e.t.IdempotencyKey, Err: fmt.Errorf("submitting %s: %w", e.name, e.err)}
		default:
			back = append(back, e)
		}
	}
	a.takeBack(ctx, back, fail)
	parallel(len(answered), fireWorkers(a), func(k int) {
		if e := answered[k]; e.queued {
			a.fireAfter(ctx, e.f, &e.t, e.enc)
		}
	})
	queued := newPhasePacker(a, events.PhaseQueued)
	for _, e := range answered {
		if e.queued {
			queued.take(e.f)
		}
	}
	queued.flush()
	// Every fact of the chunk, awaited together: the packed messages
	// first, whose failures each of their firings then reports. One
	// deadline for all, as one Submit's wait: each wait alone is bounded,
	// but a log that stores nothing (no leader) would hold each failed
	// submission's wait to its bound in turn, the chunk to hundreds of
	// them.
	facts, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.b.PublishTimeout()+factsWaitSlack)
	defer cancel()
	queuedFacts, cancelQueued := context.WithDeadline(ctx, time.Now().Add(a.b.PublishTimeout()+factsWaitSlack))
	defer cancelQueued()
	submitted.wait(facts)
	queued.wait(facts)
	for _, e := range ready {
		wctx := queuedFacts
		if !e.queued {
			wctx = facts
		}
		if err := e.f.acks.Wait(wctx); err != nil && e.queued {
			a.log.WarnContext(ctx, "task queued; some of its submission facts are not confirmed stored", "task_id", e.t.ID, "err", err)
		}
		if e.queued {
			a.countSubmitted(&e.t)
		}
	}
	for _, e := range dups {
		if e.fut == nil {
			continue
		}
		select {
		case <-e.fut.Ok():
		case err := <-e.fut.Err():
			a.log.WarnContext(ctx, "a duplicate decision could not be recorded", "task_id", e.rec.Task.ID, "err", err)
		}
	}
	return later
}

// takeBack takes back the records of es, whose task messages were surely
// not stored (a record with no message would never run, and a
// resubmission of its key would return it as accepted), and fails them.
// The deletions share one deadline, a publish timeout, whatever ctx (the
// caller gone, the record must still go): one after another, each under
// its own, a task bucket with no leader held a chunk for one wait per
// entry. A record left is ended by the janitor.
func (a *App) takeBack(ctx context.Context, es []*batchEntry, fail func(*batchEntry, error)) {
	if len(es) == 0 {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.b.PublishTimeout())
	defer cancel()
	parallel(len(es), retryWriters, func(k int) {
		e := es[k]
		if derr := a.b.DeleteTask(dctx, e.t.ID, e.rec.Revision); derr != nil {
			e.err = errors.Join(e.err, fmt.Errorf("taking back the record of the unqueued task %s (the janitor will end it): %w", e.t.ID, derr))
		}
	})
	for _, e := range es {
		fail(e, e.err)
	}
}

// batchDuplicate answers e, whose key names the existing record e.rec, as
// Submit's duplicate does, its decision published without waiting (its
// future in e.fut).
func (a *App) batchDuplicate(ctx context.Context, e *batchEntry) (events.Task, error) {
	d, conflict := decide(&e.o, &e.t, e.rec.Task)
	var err error
	if e.fut, err = a.publishDecision(&d, &e.t); err != nil {
		a.log.WarnContext(ctx, "the duplicate decision could not be recorded", "task_id", d.TaskID, "decision", d.Decision, "err", err)
	}
	if conflict != nil {
		return events.Task{}, fmt.Errorf("submitting %s: %w", e.name, conflict)
	}
	return a.resubmitted(ctx, e.rec)
}

// awaitAll waits for the futures of es, the first attempts of their
// writes (bus.AwaitAttempts), setting each entry's err, and the revision
// of its ack (a record's). An entry whose answer did not come has an error
// that leaves its outcome unknown, for askAgain.
func (a *App) awaitAll(ctx context.Context, es []*batchEntry) {
	futs := make([]jetstream.PubAckFuture, len(es))
	for i, e := range es {
		futs[i] = e.fut
	}
	acks, errs := a.b.AwaitAttempts(ctx, futs)
	for i, e := range es {
		if e.err = errs[i]; e.err == nil {
			e.rec.Revision = acks[i].Sequence
		}
	}
}

// askAgain runs again(ctx, e) for each of es, whose write's first attempt
// did not get through (e.err says why), retryWriters at once, each asking
// again as one write of Submit does (bus.CreateTaskAfter,
// bus.EnqueueAfter), all within one bound: ctx's deadline, else a publish
// timeout from now, as one write's.
func (a *App) askAgain(ctx context.Context, es []*batchEntry, again func(ctx context.Context, e *batchEntry)) {
	if len(es) == 0 {
		return
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.b.PublishTimeout())
		defer cancel()
	}
	parallel(len(es), retryWriters, func(k int) { again(ctx, es[k]) })
}

// fireWorkers is how many submissions of a chunk fire their triggers at
// once: a few to use the cores when no plugin is on them, many when a
// plugin is, whose round trips then overlap.
func fireWorkers(a *App) int {
	reg := a.b.Registry()
	for _, tr := range []string{events.QTasksAddTaskBeforeBroker, events.BrokerAddBefore, events.StorageAdd, events.BrokerAddAfter, events.QTasksAddTaskAfterBroker} {
		if len(reg.Chain(tr)) > 0 {
			return 64
		}
	}
	return 4
}

// parallel runs fn(0..n-1) on at most limit goroutines and waits.
func parallel(n, limit int, fn func(int)) {
	if n == 0 {
		return
	}
	if limit <= 1 || n == 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(limit, n) {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// tryLockID takes the submission lock of task id if it is free (lockID).
func (a *App) tryLockID(id string) (unlock func(), ok bool) {
	a.submitMu.Lock()
	defer a.submitMu.Unlock()
	l := a.submitting[id]
	if l == nil {
		l = &idLock{ch: make(chan struct{}, 1)}
		a.submitting[id] = l
	}
	select {
	case l.ch <- struct{}{}:
	default:
		return nil, false
	}
	l.refs++
	return func() {
		<-l.ch
		a.submitMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(a.submitting, id)
		}
		a.submitMu.Unlock()
	}, true
}
