package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// DefaultOrphanAge is Config.OrphanAge's default.
const DefaultOrphanAge = 5 * time.Minute

// sweepTimeout bounds one sweep of the janitor at least.
const sweepTimeout = 30 * time.Second

// OrphanReason is the reason of the final record the janitor gives a task
// that was never queued.
const OrphanReason = "never queued"

// janitor ends orphans: task records of the worker's queue that say new and
// have no task message, so that no worker will ever run them and nothing
// else would ever end them. They come from submissions that did not finish:
// a record created whose enqueue failed and whose taking back failed too, or
// a record whose creation was acknowledged too late for its Submit, which
// had already returned an error.
//
// Every OrphanAge/4 it reads the writes of the task bucket made between
// where it stopped and OrphanAge ago (each write once: the bucket's writes
// are read again, as the projector reads the log), and takes those that
// wrote a new record of its queue. One is an orphan when no task message of
// it is in the task stream (a message stays there until a worker acks it,
// after the final record), and the record is still at the revision of that
// write (no worker has claimed a run of it). Its submission enqueued it
// within OrphanAge/2 of the write or never did (Submit's publishes are
// bounded by seconds, a retry's re-enqueue by the duplicate window), so no
// message of it can come later. The janitor then writes its final
// fact and record (status error, reason OrphanReason), as a run would, once:
// several workers' janitors racing for one record write one final fact
// between them, and a run that claimed the task meanwhile wins the record.
//
// A janitor starts reading 2 × OrphanAge back: a record orphaned while no
// worker of its queue ran for longer than that is not found.
func (w *worker) janitor() {
	a := w.a
	age := a.cfg.OrphanAge
	if age < 0 {
		return
	}
	every := max(age/4, 500*time.Millisecond)
	cursor := a.cfg.Now().Add(-2 * age)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-w.quit:
			return
		}
		ctx, cancel := context.WithTimeout(w.runCtx, max(every, sweepTimeout))
		next, err := w.sweep(ctx, cursor, a.cfg.Now().Add(-age))
		cancel()
		if err != nil && w.runCtx.Err() == nil {
			a.log.Warn("janitor: looking for tasks never queued", "err", err)
		}
		cursor = next
	}
}

// sweep ends the orphans among the new records written in [since, until)
// and returns where the next sweep starts.
func (w *worker) sweep(ctx context.Context, since, until time.Time) (time.Time, error) {
	a := w.a
	b := a.b
	var cands []bus.TaskRecord
	last, err := b.NewTaskRecords(ctx, since, until, func(rec bus.TaskRecord, _ time.Time) error {
		if rec.Task.Queue != a.cfg.Queue || rec.Task.Attempt != 1 || rec.Task.Run > 0 {
			return nil // another queue's; or a run was claimed: it had a message
		}
		cands = append(cands, rec)
		return nil
	})
	if err != nil {
		// The writes before the failure were seen; the failed one is read
		// again next time.
		return since, err
	}
	if last.Before(until) {
		last = until
	}
	if len(cands) == 0 && len(w.suspects) == 0 {
		return last, nil
	}
	queued, err := b.QueuedTaskIDs(ctx, a.cfg.Queue)
	if err != nil {
		return since, err
	}
	// A record looks orphaned in two sweeps in a row before it is ended:
	// one reading of the task stream can miss a message (a replica that
	// lags behind a new leader answers the reads), and ending a queued task
	// would end one that was acknowledged. The fault suite saw it once.
	for id, rev := range w.suspects {
		delete(w.suspects, id)
		if waiting, err := w.waiting(ctx, queued, id); err != nil {
			return since, err
		} else if waiting {
			continue
		}
		cur, err := b.GetTaskLatest(ctx, id)
		if errors.Is(err, bus.ErrTaskNotFound) || (err == nil && cur.Revision != rev) {
			continue // taken back, taken by a worker, or written since
		}
		if err != nil {
			return since, err
		}
		if err := w.endOrphan(ctx, cur); err != nil {
			return since, err
		}
	}
	for _, rec := range cands {
		if waiting, err := w.waiting(ctx, queued, rec.Task.ID); err != nil {
			return since, err
		} else if waiting {
			continue // its task message waits for a worker, or for its time
		}
		cur, err := b.GetTaskLatest(ctx, rec.Task.ID)
		if errors.Is(err, bus.ErrTaskNotFound) {
			continue // taken back
		}
		if err != nil {
			return since, err
		}
		if cur.Revision != rec.Revision {
			continue // a worker took it, or it was written since
		}
		if w.suspects == nil {
			w.suspects = make(map[string]uint64)
		}
		w.suspects[rec.Task.ID] = cur.Revision // ended next sweep if still so
	}
	return last, nil
}

// endOrphan writes the final fact and record of a task never queued.
func (w *worker) endOrphan(ctx context.Context, rec bus.TaskRecord) error {
	a := w.a
	final := rec.Task
	final.Status, final.Reason = events.StatusError, OrphanReason
	final.Error = fmt.Sprintf("the task was never queued: its submission did not finish, and no task message for it was stored within %v", a.cfg.OrphanAge/2)
	final.Worker = a.cfg.NodeID
	final.UpdatedAt = a.cfg.Now().UTC()
	f := a.newFiring(&final, 0)
	decided, seq, err := w.publishFinal(ctx, f, final, encodeRecord(final))
	if err != nil {
		return err
	}
	if !decided {
		if final, err = w.decidedFinal(ctx, seq); err != nil {
			return err
		}
	}
	if err := w.finishDecided(ctx, final, rec.Revision); err != nil {
		return err
	}
	if decided {
		a.countFinished(&final)
		a.log.WarnContext(ctx, "janitor: ended a task that was never queued", "task_id", final.ID, "task_name", final.Name, "created_at", final.CreatedAt)
	}
	return nil
}

// waiting reports whether task id has a task message: in queued (read from
// the queue), or scheduled for later (a delayed task, which waits on a
// subject of its own: looked up one by one, so that the sweep's cost does
// not grow with the delayed tasks waiting).
func (w *worker) waiting(ctx context.Context, queued map[string]bool, id string) (bool, error) {
	if queued[id] {
		return true, nil
	}
	return w.a.b.Delayed(ctx, w.a.cfg.Queue, id)
}
