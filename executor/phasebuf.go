package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// The phases of a firing (issue #15, design (f); docs/PROTOCOL.md §3, §4).
// A run's facts that do not travel alone (bus.TravelsAlone) are packed, in
// firing order, into one message per phase on events.PhaseSubject. The
// phase is where the code is, not a property of the trigger, so every
// trigger, on every path, has one (# as in PROTOCOL.md §6):
//
//	submit   Submit, before the task is queued: 1 2 (3 is lifecycle)
//	queued   Submit, once the task message is stored: 4 5
//	intake   a run, from its start up to worker_run_task_before: 6 (7) 8-13 (14),
//	         and nothing else: an intake that fails goes on in finish
//	prepare  worker_run_task_before up to the task function: 15 16 17 18
//	finish   after the task function, or from the failure that ends the run
//	         early, up to the final fact: 19-24 16 (25) 26 27
//	end      after the final record: 29
//
// (n) marks lifecycle triggers, which travel alone; the final fact (28)
// travels alone as well. Process facts (node start and stop, scope
// process) have no task and so no phase: they travel alone, on their
// trigger subjects keyed by node id, as in protocol 2.
//
// A pending batch is published (flushed) before a fact that travels alone,
// so that the stream holds the facts in firing order; at the end of each
// phase (setPhase): before the submission's record and task message,
// before the task function, before the final fact; and before a fact that
// would take the batch past events.MaxBatchSize. A phase message joins the
// run's Acks as a fact does: a worker acks a task only once every message
// of its run is stored.

// emit writes the event of a recorded firing: alone, or into the phase's
// batch. It reports whether ev.Data was copied (into the batch), so that
// the caller may write over it; otherwise the published message holds it.
func (f *firing) emit(trigger string, ev *events.Event) (copied bool) {
	if f.phase == "" || f.nodeFac || f.a.b.TravelsAlone(trigger) {
		f.publishAlone(ev)
		return false
	}
	if f.batch.Len() == 0 && f.pooled {
		f.reuseBatchBuf()
	}
	// The data is the fact as Fact.AppendJSON wrote it, from JSON the
	// executor encoded or checked: it goes in without being parsed again.
	err := f.batch.Add(ev, true)
	if errors.Is(err, events.ErrTooLarge) && f.batch.Len() > 0 {
		f.flush()
		if f.pooled {
			f.reuseBatchBuf()
		}
		err = f.batch.Add(ev, true)
	}
	if err != nil {
		// A batch cannot carry it (too large even alone in a batch, or an
		// attribute that is not UTF-8): binary mode can.
		f.publishAlone(ev)
		return false
	}
	return true
}

// publishAlone publishes ev in binary mode on its trigger subject, after
// the pending batch.
func (f *firing) publishAlone(ev *events.Event) {
	f.flush()
	if f.claimed() != nil {
		return // the run's acks report it
	}
	fut, err := f.a.b.PublishAsync(f.subject(ev.Trigger), "", ev)
	if err != nil {
		f.acks.Fail(err)
		return
	}
	f.acks.Add(fut)
}

// flush publishes the pending batch of the current phase, if any.
func (f *firing) flush() {
	if f.batch.Len() == 0 {
		return
	}
	batch := f.batch.Take()
	if f.claimed() != nil {
		return // the run's acks report it; the batch is dropped
	}
	fut, err := f.a.b.PublishPhase(f.phase, f.task.Queue, batch)
	if err != nil {
		f.acks.Fail(fmt.Errorf("publishing the %s phase of task %s: %w", f.phase, f.task.ID, err))
		return
	}
	f.acks.Add(fut)
	if f.pooled {
		f.sent = append(f.sent, batch)
	}
}

// The buffers of phase messages are reused once their messages are
// stored: a run with every trigger recorded writes four or five batches of
// several KB each, which were its largest allocations (issue #15, "cutting
// our cost above the floor", third round). A buffer returns to the pool
// only after waitAcks saw every message of the run acked: until its ack,
// the publisher may send the message again (bus.Acks.Wait, a no-responders
// retry), so the bytes must stay as they are.
var batchBufs sync.Pool // of *[]byte

// maxPooledBatch bounds the capacity of a pooled buffer: a batch that grew
// towards events.MaxBatchSize is left to the garbage collector rather than
// held by the pool.
const maxPooledBatch = 256 << 10

// reuseBatchBuf gives the phase's empty batch writer a pooled buffer, if
// the pool has one.
func (f *firing) reuseBatchBuf() {
	if p, ok := batchBufs.Get().(*[]byte); ok && !f.batch.Reuse(*p) {
		batchBufs.Put(p)
	}
}

// waitAcks waits until every message of the firing so far is stored
// (bus.Acks.Wait), then hands the buffers of its phase messages back to the
// pool. After an error they are dropped: a message whose outcome is not
// known may still be sent again.
func (f *firing) waitAcks(ctx context.Context) error {
	err := f.acks.Wait(ctx)
	if err == nil {
		for _, b := range f.sent {
			if cap(b) <= maxPooledBatch {
				batchBufs.Put(&b)
			}
		}
	}
	clear(f.sent)
	f.sent = f.sent[:0]
	return err
}

// setPhase ends the current phase (its batch is published) and starts p.
func (f *firing) setPhase(p events.Phase) {
	if f.phase == p {
		return
	}
	f.flush()
	f.phase = p
}

// phasePacker packs the phase batches of many submissions into as few
// phase messages as their size allows, one message per queue (and more
// when one would pass events.MaxBatchSize): SubmitMany's, whose chunk of
// submissions then stores one submit and one queued message in all,
// instead of one of each per task (PROTOCOL.md §4.4, protocol 3). Each
// firing's facts stay in its firing order and each message is stored
// whole or not at all, so a run's facts are still a prefix of what it
// fired. Only the batch pending at the end of a phase is packed: one that
// a fact travelling alone flushed in the middle of a phase was published
// then, ahead of that fact, as for Submit. A packer is used by one
// goroutine.
type phasePacker struct {
	a     *App
	phase events.Phase
	open  map[string]*packedMsg // by queue
	sent  []*packedMsg
}

// packedMsg is one phase message of a packer: its batch, the firings
// whose facts it holds, and its ack.
type packedMsg struct {
	queue string
	j     events.BatchJoiner
	by    []*firing
	acks  bus.Acks
}

func newPhasePacker(a *App, phase events.Phase) *phasePacker {
	return &phasePacker{a: a, phase: phase, open: map[string]*packedMsg{}}
}

// take moves f's pending batch, of the packer's phase, into the packer.
func (p *phasePacker) take(f *firing) {
	if f.batch.Len() == 0 {
		return
	}
	if f.phase != p.phase {
		// Not this packer's phase: f's batch goes out on its own.
		f.flush()
		return
	}
	q := f.task.Queue
	n := f.batch.Len()
	batch := f.batch.Take()
	m := p.open[q]
	if m != nil && m.j.Add(batch, n) != nil {
		p.send(m) // full: this one goes, the next starts with f's facts
		m = nil
	}
	if m == nil {
		m = &packedMsg{queue: q}
		p.open[q] = m
		_ = m.j.Add(batch, n) // f's batch fits alone (BatchWriter.Add saw to it)
	}
	m.by = append(m.by, f)
}

// send publishes m.
func (p *phasePacker) send(m *packedMsg) {
	delete(p.open, m.queue)
	m.acks.Bound(p.a.b.PublishTimeout())
	fut, err := p.a.b.PublishPhase(p.phase, m.queue, m.j.Take())
	if err != nil {
		m.acks.Fail(fmt.Errorf("publishing the %s phase of %d tasks: %w", p.phase, len(m.by), err))
	} else {
		m.acks.Add(fut)
	}
	p.sent = append(p.sent, m)
}

// flush publishes every message still open.
func (p *phasePacker) flush() {
	for _, m := range p.open {
		p.send(m)
	}
}

// wait waits for the acks of every message sent, and fails the acks of
// each firing whose facts were in one that is not surely stored, so that
// the firing's own wait reports it.
func (p *phasePacker) wait(ctx context.Context) {
	for _, m := range p.sent {
		if err := m.acks.Wait(ctx); err != nil {
			for _, f := range m.by {
				f.acks.Fail(err)
			}
		}
	}
	p.sent = nil
}
