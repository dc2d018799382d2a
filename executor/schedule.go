package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// AddSchedule adds a periodic schedule: from its next tick on, every
// process running a Scheduler on the bus submits its task at each tick,
// one task per tick between them. The schedule is stored in JetStream (it
// survives restarts), then recorded in the log with who added it; should
// the log surely refuse the record, the schedule is taken back (if the
// record may be stored, it stays, and the error says so). A name taken is
// bus.ErrScheduleExists; an invalid schedule wraps ErrInvalidInput.
func (a *App) AddSchedule(ctx context.Context, spec events.Schedule, act Action) (bus.ScheduleState, error) {
	if spec.CatchUp == "" {
		spec.CatchUp = events.CatchUpSkip
	}
	if spec.CatchUp == events.CatchUpAll && spec.CatchUpMax == 0 {
		spec.CatchUpMax = events.DefaultCatchUpMax
	}
	if err := spec.Check(); err != nil {
		return bus.ScheduleState{}, fmt.Errorf("adding schedule %s: %w: %w", spec.Name, ErrInvalidInput, err)
	}
	ev := events.ScheduleEvent{Action: events.ScheduleAdd, Schedule: spec.Name, By: act.By, Reason: act.Reason, Spec: &spec}
	if err := ev.Check(); err != nil {
		return bus.ScheduleState{}, fmt.Errorf("adding schedule %s: %w: %w", spec.Name, ErrInvalidInput, err)
	}
	now := a.cfg.Now().UTC()
	st := bus.ScheduleState{Spec: spec, AddedBy: act.By, AddedAt: now, LastTick: now}
	rev, err := a.b.CreateSchedule(ctx, st)
	if err != nil {
		return bus.ScheduleState{}, err
	}
	if _, err := a.b.RecordSchedule(ctx, a.source, "", ev); err != nil {
		if !bus.SurelyNotStored(err) { // the log may hold it: it stays (actionUnknown)
			return st, actionUnknown("schedule "+spec.Name, err)
		}
		if derr := a.b.DeleteSchedule(context.WithoutCancel(ctx), spec.Name, rev); derr != nil {
			return st, fmt.Errorf("%w; and taking the schedule back failed, so the outcome is unknown: %w", err, derr)
		}
		return bus.ScheduleState{}, err
	}
	a.log.InfoContext(ctx, "schedule added", "schedule", spec.Name, "task_name", spec.Task, "by", act.By)
	return st, nil
}

// RemoveSchedule removes schedule name: no tick after it fires. A tick
// being fired as it is removed still makes its task.
func (a *App) RemoveSchedule(ctx context.Context, name string, act Action) error {
	ev := events.ScheduleEvent{Action: events.ScheduleRemove, Schedule: name, By: act.By, Reason: act.Reason}
	if err := ev.Check(); err != nil {
		return fmt.Errorf("removing schedule %s: %w: %w", name, ErrInvalidInput, err)
	}
	e, err := a.b.GetSchedule(ctx, name)
	if err != nil {
		return err
	}
	if err := a.b.DeleteSchedule(ctx, name, e.Revision); err != nil {
		return err
	}
	if _, err := a.b.RecordSchedule(ctx, a.source, "", ev); err != nil {
		if !bus.SurelyNotStored(err) {
			return actionUnknown("the removal of schedule "+name, err)
		}
		return fmt.Errorf("%w: the schedule is removed, but the log does not say so", err)
	}
	a.log.InfoContext(ctx, "schedule removed", "schedule", name, "by", act.By)
	return nil
}

// PauseSchedule stops schedule name's ticks until ResumeSchedule; the
// ticks in between are not fired, whatever the catch-up policy.
func (a *App) PauseSchedule(ctx context.Context, name string, act Action) (bus.ScheduleState, error) {
	return a.setSchedulePaused(ctx, name, true, act)
}

// ResumeSchedule lets schedule name tick again, from its next tick.
func (a *App) ResumeSchedule(ctx context.Context, name string, act Action) (bus.ScheduleState, error) {
	return a.setSchedulePaused(ctx, name, false, act)
}

func (a *App) setSchedulePaused(ctx context.Context, name string, paused bool, act Action) (bus.ScheduleState, error) {
	action := events.ScheduleResume
	if paused {
		action = events.SchedulePause
	}
	ev := events.ScheduleEvent{Action: action, Schedule: name, By: act.By, Reason: act.Reason}
	if err := ev.Check(); err != nil {
		return bus.ScheduleState{}, fmt.Errorf("%s schedule %s: %w: %w", action, name, ErrInvalidInput, err)
	}
	for {
		e, err := a.b.GetSchedule(ctx, name)
		if err != nil {
			return bus.ScheduleState{}, err
		}
		st, prev := e.State, e.State
		st.Paused = paused
		if !paused && prev.Paused {
			st.LastTick = a.cfg.Now().UTC() // no catch-up of the pause
		}
		rev, err := a.b.UpdateSchedule(ctx, st, e.Revision)
		if errors.Is(err, bus.ErrConflict) {
			continue // a scheduler claimed a tick meanwhile
		}
		if err != nil {
			return bus.ScheduleState{}, err
		}
		if _, err := a.b.RecordSchedule(ctx, a.source, "", ev); err != nil {
			if !bus.SurelyNotStored(err) { // the log may hold it: it stays (actionUnknown)
				return st, actionUnknown("the "+action+" of schedule "+name, err)
			}
			if _, rerr := a.b.UpdateSchedule(context.WithoutCancel(ctx), prev, rev); rerr != nil {
				return st, fmt.Errorf("%w; and taking the %s back failed, so the outcome is unknown: %w", err, action, rerr)
			}
			return prev, err
		}
		if paused {
			a.log.InfoContext(ctx, "schedule paused", "schedule", name, "by", act.By)
		} else {
			a.log.InfoContext(ctx, "schedule resumed", "schedule", name, "by", act.By)
		}
		return st, nil
	}
}

// Schedules lists the schedules, by name.
func (a *App) Schedules(ctx context.Context) ([]bus.ScheduleState, error) {
	es, err := a.b.ListSchedules(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]bus.ScheduleState, len(es))
	for i, e := range es {
		out[i] = e.State
	}
	return out, nil
}

// schedulePendingGrace is how long a tick claimed by a scheduler may stay
// unconfirmed (its task and tick event not written) before another
// scheduler fires it: the claimer may have died after the claim. Firing is
// idempotent, so a slow claimer and its stand-in make one task.
const schedulePendingGrace = 15 * time.Second

// maxTickWalk bounds how many missed ticks a scheduler walks through after
// downtime; past it, the ticks before now are all missed.
const maxTickWalk = 1_000_000

// Scheduler fires the ticks of the schedules (AddSchedule). Run one in each
// qtasksd: there is no leader. Each tick is claimed with a compare-and-set
// on the schedule's key (the last tick moves forward), and its task's
// idempotency key is events.ScheduleTickKey(schedule, tick), so whichever
// schedulers see the tick, and even if a claimer dies and another fires
// its claimed ticks, a tick makes one task. Each tick is recorded in the
// log (events.TypeSchedule, action tick, with the task id).
type Scheduler struct {
	a   *App
	mu  sync.Mutex
	ctx context.Context
	// cancel and done belong to a started scheduler.
	cancel context.CancelFunc
	done   chan struct{}

	entries map[string]bus.ScheduleEntry // guarded by the loop
	ticks   map[string]func(time.Time) time.Time
}

// NewScheduler returns a scheduler that submits ticks' tasks through a.
func NewScheduler(a *App) *Scheduler { return &Scheduler{a: a} }

// Start starts the scheduler; it returns once the schedules are watched.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	updates, err := s.a.b.WatchSchedules(runCtx)
	if err != nil {
		cancel()
		return err
	}
	s.ctx, s.cancel, s.done = runCtx, cancel, make(chan struct{})
	s.entries, s.ticks = map[string]bus.ScheduleEntry{}, map[string]func(time.Time) time.Time{}
	go s.loop(updates)
	return nil
}

// Stop stops the scheduler and waits for its loop, within ctx. A tick it
// was firing is left pending: another scheduler (or the next one started
// on the bus) fires it after the grace period, as the same task. A stopped
// Scheduler does not start again; make a new one.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *Scheduler) loop(updates <-chan bus.ScheduleUpdate) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				if s.ctx.Err() == nil {
					s.a.log.Error("the scheduler lost its watch of the schedules; it fires no more ticks")
				}
				return
			}
			s.apply(u)
			// Take every update queued before deciding.
			for more := true; more; {
				select {
				case u, ok := <-updates:
					if !ok {
						return
					}
					s.apply(u)
				default:
					more = false
				}
			}
		case <-timer.C:
		case <-s.ctx.Done():
			return
		}
		wake := s.step()
		// By the app's clock, which step read too.
		timer.Reset(max(wake.Sub(s.a.cfg.Now()), time.Millisecond))
	}
}

func (s *Scheduler) apply(u bus.ScheduleUpdate) {
	switch {
	case u.Name == "":
	case u.Entry == nil:
		delete(s.entries, u.Name)
		delete(s.ticks, u.Name)
	default:
		if cur, ok := s.entries[u.Name]; ok && cur.Revision >= u.Entry.Revision {
			return // this scheduler's own write, seen already
		}
		s.entries[u.Name] = *u.Entry
		tick, err := u.Entry.State.Spec.Ticker()
		if err != nil {
			s.a.log.Warn("ignoring a schedule that does not parse", "schedule", u.Name, "err", err)
			delete(s.ticks, u.Name)
			return
		}
		s.ticks[u.Name] = tick
	}
}

// step fires what is due and returns when it must run next.
func (s *Scheduler) step() time.Time {
	a := s.a
	now := a.cfg.Now().UTC()
	wake := now.Add(time.Hour)
	for _, name := range slices.Sorted(maps.Keys(s.entries)) {
		tick := s.ticks[name]
		if tick == nil {
			continue
		}
		e := s.entries[name]
		st := e.State
		if len(st.Pending) > 0 {
			if at := st.ClaimedAt.Add(schedulePendingGrace); !now.Before(at) {
				s.fire(name, st.Pending)
				wake = earliest(wake, now.Add(time.Second)) // look again soon, whether it worked or not
				continue
			} else if at.Before(wake) {
				wake = at
			}
		}
		if st.Paused {
			continue
		}
		first := tick(st.LastTick)
		if first.After(now) {
			if first.Before(wake) {
				wake = first
			}
			continue
		}
		fire, latest, missed := s.due(st.Spec, tick, first, now)
		claimed := st
		claimed.LastTick = latest
		claimed.Pending = append(slices.Clone(st.Pending), fire...)
		claimed.ClaimedBy, claimed.ClaimedAt = a.cfg.NodeID, now
		rev, err := a.b.UpdateSchedule(s.ctx, claimed, e.Revision)
		if err != nil {
			if !errors.Is(err, bus.ErrConflict) && s.ctx.Err() == nil {
				a.log.Warn("claiming a tick of a schedule", "schedule", name, "err", err)
				wake = earliest(wake, now.Add(time.Second))
			}
			// Another scheduler claimed it: its write is on its way
			// through the watch.
			continue
		}
		s.entries[name] = bus.ScheduleEntry{State: claimed, Revision: rev}
		if missed > 0 {
			ev := events.ScheduleEvent{Action: events.ScheduleMissed, Schedule: name, By: a.cfg.NodeID, Tick: latest, Missed: missed}
			if _, err := a.b.RecordSchedule(s.ctx, a.source, events.ScheduleTickKey(name, latest)+":missed", ev); err != nil {
				a.log.Warn("recording missed ticks", "schedule", name, "missed", missed, "err", err)
			}
		}
		if len(fire) > 0 {
			s.fire(name, claimed.Pending)
		}
		if next := tick(latest); next.Before(wake) {
			wake = next
		}
	}
	return wake
}

// due returns the ticks from first to now that the catch-up policy fires,
// the latest tick, and how many are not fired.
func (s *Scheduler) due(spec events.Schedule, tick func(time.Time) time.Time, first, now time.Time) (fire []time.Time, latest time.Time, missed int) {
	keep := 1
	if spec.CatchUp == events.CatchUpAll {
		keep = max(spec.CatchUpMax, 1)
	}
	var last []time.Time // the latest keep ticks, oldest first
	total := 0
	t := first
	for ; !t.After(now) && total < maxTickWalk; t = tick(t) {
		total++
		if len(last) == keep {
			last = last[1:]
		}
		last = append(last, t)
	}
	latest = last[len(last)-1]
	if total == maxTickWalk {
		latest = now // too many to walk: every tick up to now is missed
	}
	switch spec.CatchUp {
	case events.CatchUpOne, events.CatchUpAll:
		fire = last
	default: // skip: only a tick on time
		if now.Sub(last[len(last)-1]) <= events.ScheduleLateness {
			fire = last[len(last)-1:]
		}
	}
	return fire, latest, total - len(fire)
}

// fire submits the tasks of ticks of schedule name, records each tick, and
// takes them off the schedule's pending ticks. Each step is idempotent.
func (s *Scheduler) fire(name string, ticks []time.Time) {
	a := s.a
	e, ok := s.entries[name]
	if !ok {
		return
	}
	spec := e.State.Spec
	var args []any
	if len(spec.Args) > 0 {
		if err := json.Unmarshal(spec.Args, &args); err != nil {
			a.log.Error("schedule arguments do not decode", "schedule", name, "err", err)
			return
		}
	}
	var done []time.Time
	for _, tick := range ticks {
		key := events.ScheduleTickKey(name, tick)
		var kw any
		if len(spec.Kw) > 0 {
			kw = spec.Kw
		}
		t, err := a.Submit(s.ctx, spec.Task, kw, &SubmitOptions{
			Args: args, Queue: spec.Queue, IdempotencyKey: key, Tags: []string{"schedule:" + name},
		})
		ev := events.ScheduleEvent{Action: events.ScheduleTick, Schedule: name, By: a.cfg.NodeID, Tick: tick, TaskID: t.ID}
		var pf *PluginFailure
		switch {
		case err == nil:
		case errors.Is(err, ErrInvalidInput) || errors.Is(err, events.ErrTooLarge) || errors.As(err, &pf) && pf.Outcome != events.OutcomeTimeout:
			// Refused, and would be again: the tick is over, and says so.
			ev.TaskID, ev.Error = KeyTaskID(key), truncateError(err.Error())
			a.log.Warn("a schedule's tick was refused; no task runs for it", "schedule", name, "tick", tick, "err", err)
		default:
			a.log.Warn("submitting a schedule's tick; it is retried", "schedule", name, "tick", tick, "err", err)
			continue
		}
		if _, err := a.b.RecordSchedule(s.ctx, a.source, key, ev); err != nil {
			a.log.Warn("recording a schedule's tick; it is retried", "schedule", name, "tick", tick, "err", err)
			continue
		}
		done = append(done, tick)
	}
	if len(done) == 0 {
		return
	}
	for range 5 {
		st := e.State
		st.Pending = slices.DeleteFunc(slices.Clone(st.Pending), func(t time.Time) bool {
			return slices.ContainsFunc(done, t.Equal)
		})
		rev, err := a.b.UpdateSchedule(s.ctx, st, e.Revision)
		if err == nil {
			s.entries[name] = bus.ScheduleEntry{State: st, Revision: rev}
			return
		}
		if !errors.Is(err, bus.ErrConflict) {
			a.log.Warn("confirming a schedule's ticks", "schedule", name, "err", err)
			return
		}
		if e, err = a.b.GetSchedule(s.ctx, name); err != nil {
			return // removed meanwhile, or unreadable: nothing to confirm
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// truncateError bounds an error recorded in a schedule event.
func truncateError(s string) string {
	if len(s) > events.MaxReasonSize {
		return s[:events.MaxReasonSize]
	}
	return s
}
