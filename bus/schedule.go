package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// BucketSchedules holds the periodic schedules, one key per schedule name:
// its definition, whether it is paused, and its last tick. Schedulers
// (executor.Scheduler) watch it and claim each tick with a compare-and-set
// on the schedule's key. Only executors and operators write it.
const BucketSchedules = "qtasks_schedules"

// Errors of the schedule store.
var (
	ErrScheduleNotFound = errors.New("schedule not found")
	ErrScheduleExists   = errors.New("a schedule with this name exists")
)

// ScheduleState is a schedule as stored: its definition, who added it, its
// pause, and where its ticks are.
type ScheduleState struct {
	Spec    events.Schedule `json:"spec"`
	AddedBy string          `json:"added_by"`
	AddedAt time.Time       `json:"added_at"`
	// Paused stops its ticks; a resume starts again from the next tick.
	Paused bool `json:"paused,omitempty"`
	// LastTick is the latest tick decided (fired, or missed): the next
	// tick is the first after it. The time of adding (or resuming) at
	// first.
	LastTick time.Time `json:"last_tick"`
	// Pending are ticks claimed whose task and tick event are not yet
	// confirmed, with who claimed them and when: should the claimer die,
	// another scheduler fires them (idempotently) after a grace period.
	Pending   []time.Time `json:"pending,omitempty"`
	ClaimedBy string      `json:"claimed_by,omitempty"`
	ClaimedAt time.Time   `json:"claimed_at,omitzero"`
}

// ScheduleEntry is a stored schedule with its revision, for compare-and-set
// updates.
type ScheduleEntry struct {
	State    ScheduleState
	Revision uint64
}

func (b *Bus) schedules() (jetstream.KeyValue, error) {
	if b.schKV == nil {
		return nil, ErrNoControl
	}
	return b.schKV, nil
}

// CreateSchedule stores a new schedule; ErrScheduleExists if its name is
// taken.
func (b *Bus) CreateSchedule(ctx context.Context, st ScheduleState) (uint64, error) {
	kv, err := b.schedules()
	if err != nil {
		return 0, err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	rev, err := kv.Create(ctx, st.Spec.Name, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s", ErrScheduleExists, st.Spec.Name)
	}
	if err != nil {
		return 0, fmt.Errorf("storing schedule %s: %w", st.Spec.Name, err)
	}
	return rev, nil
}

// GetSchedule returns schedule name; ErrScheduleNotFound if there is none.
func (b *Bus) GetSchedule(ctx context.Context, name string) (ScheduleEntry, error) {
	if _, err := b.schedules(); err != nil {
		return ScheduleEntry{}, err
	}
	if !events.ValidName(name) {
		return ScheduleEntry{}, fmt.Errorf("%w: invalid name %q", ErrScheduleNotFound, name)
	}
	// kvGet, not KeyValue.Get: the headers as stored tell an echo.
	e, err := b.kvGet(ctx, BucketSchedules, name)
	if err != nil {
		return ScheduleEntry{}, fmt.Errorf("reading schedule %s: %w", name, err)
	}
	if e == nil || e.Deleted {
		return ScheduleEntry{}, fmt.Errorf("%w: %s", ErrScheduleNotFound, name)
	}
	return decodeSchedule(e)
}

// ErrNotSchedule is a value of the schedule bucket that is not a schedule
// as executors and operators write it (a plugin can have the server write
// its answers there, kv.go). It is refused, never read as the schedule.
var ErrNotSchedule = errors.New("not a schedule")

// decodeSchedule reads the schedule stored as e: one that checks, under its
// own name, with who added it and when, not an echo (kvEcho).
func decodeSchedule(e *kvMsg) (ScheduleEntry, error) {
	if err := e.echo(); err != nil {
		return ScheduleEntry{}, fmt.Errorf("decoding schedule %s: %w: %w", e.Key, ErrNotSchedule, err)
	}
	var st ScheduleState
	if err := json.Unmarshal(e.Value, &st); err != nil {
		return ScheduleEntry{}, fmt.Errorf("decoding schedule %s: %w: %w", e.Key, ErrNotSchedule, err)
	}
	if err := st.Spec.Check(); err != nil {
		return ScheduleEntry{}, fmt.Errorf("decoding schedule %s: %w: %w", e.Key, ErrNotSchedule, err)
	}
	if st.Spec.Name != e.Key || st.AddedBy == "" || st.AddedAt.IsZero() {
		return ScheduleEntry{}, fmt.Errorf("decoding schedule %s: %w: named %q, added by %q at %v", e.Key, ErrNotSchedule, st.Spec.Name, st.AddedBy, st.AddedAt)
	}
	return ScheduleEntry{State: st, Revision: e.Revision}, nil
}

// UpdateSchedule writes st if its key is still at revision rev (ErrConflict
// otherwise).
func (b *Bus) UpdateSchedule(ctx context.Context, st ScheduleState, rev uint64) (uint64, error) {
	kv, err := b.schedules()
	if err != nil {
		return 0, err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	n, err := kv.Update(ctx, st.Spec.Name, data, rev)
	if err != nil {
		if revisionMoved(err) {
			return 0, fmt.Errorf("%w: schedule %s", ErrConflict, st.Spec.Name)
		}
		return 0, fmt.Errorf("updating schedule %s: %w", st.Spec.Name, err)
	}
	return n, nil
}

// DeleteSchedule removes schedule name if it is still at revision rev.
func (b *Bus) DeleteSchedule(ctx context.Context, name string, rev uint64) error {
	kv, err := b.schedules()
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, name, jetstream.LastRevision(rev)); err != nil {
		if revisionMoved(err) {
			return fmt.Errorf("%w: schedule %s", ErrConflict, name)
		}
		return fmt.Errorf("removing schedule %s: %w", name, err)
	}
	return nil
}

// ListSchedules returns every schedule, by name.
func (b *Bus) ListSchedules(ctx context.Context) ([]ScheduleEntry, error) {
	if _, err := b.schedules(); err != nil {
		return nil, err
	}
	updates, err := b.watchKV(ctx, BucketSchedules, ">")
	if err != nil {
		return nil, fmt.Errorf("listing schedules: %w", err)
	}
	// The watch ends with the list.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []ScheduleEntry
	for {
		select {
		case e := <-updates:
			if e == nil { // the current values are all sent
				return out, nil
			}
			if e.Deleted {
				continue
			}
			se, err := decodeSchedule(e)
			if err != nil {
				// Not written by an executor or an operator: left out,
				// so that one forgery does not hide every schedule.
				b.log.WarnContext(ctx, "leaving out a schedule that is not one", "schedule", e.Key, "revision", e.Revision, "err", err)
				continue
			}
			out = append(out, se)
		case <-ctx.Done():
			return nil, fmt.Errorf("listing schedules: %w", context.Cause(ctx))
		}
	}
}

// ScheduleUpdate is a change of the schedule bucket: Entry is nil when the
// schedule was removed.
type ScheduleUpdate struct {
	Name  string
	Entry *ScheduleEntry
}

// WatchSchedules sends every schedule, then each change, until ctx ends;
// an update with Name "" marks the end of the initial values.
func (b *Bus) WatchSchedules(ctx context.Context) (<-chan ScheduleUpdate, error) {
	if _, err := b.schedules(); err != nil {
		return nil, err
	}
	updates, err := b.watchKV(ctx, BucketSchedules, ">")
	if err != nil {
		return nil, fmt.Errorf("watching schedules: %w", err)
	}
	out := make(chan ScheduleUpdate, 16)
	go func() {
		defer close(out)
		for {
			var u ScheduleUpdate
			select {
			case e := <-updates:
				switch {
				case e == nil:
				case e.Deleted:
					u.Name = e.Key
				default:
					se, err := decodeSchedule(e)
					if err != nil {
						// The scheduler keeps what it had of it.
						b.log.WarnContext(ctx, "ignoring a schedule that is not one", "schedule", e.Key, "revision", e.Revision, "err", err)
						continue
					}
					u.Name, u.Entry = e.Key, &se
				}
			case <-ctx.Done():
				return
			}
			select {
			case out <- u:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// RecordSchedule writes a schedule event to the log. msgID, when not empty,
// deduplicates it (a tick recorded by two schedulers is stored once).
func (b *Bus) RecordSchedule(ctx context.Context, source, msgID string, e events.ScheduleEvent) (uint64, error) {
	if err := e.Check(); err != nil {
		return 0, err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	id := msgID
	if id == "" {
		id = "sched:" + uuid.NewString()
	}
	ev := events.Event{
		ID: id, Source: source, Type: events.TypeSchedule, Subject: e.Schedule, Time: time.Now().UTC(),
		DataContentType: events.ContentTypeJSON, Data: data, TaskID: e.TaskID,
	}
	ack, err := b.Publish(ctx, events.ScheduleSubject(e.Schedule), msgID, &ev)
	if err != nil {
		return 0, fmt.Errorf("recording the schedule %s in the log: %w", e.Action, err)
	}
	return ack.Sequence, nil
}
