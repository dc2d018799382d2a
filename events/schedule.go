package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// TypeSchedule is an event of a periodic schedule (QTasks' timers): added,
// removed, paused, resumed by someone, or one of its ticks. Only executors
// and operators write it, on ScheduleSubject, which no plugin's rights
// include.
const TypeSchedule = "io.qtasks.schedule"

// SubjectSchedule prefixes schedule events: qtasks.schedule.<name>.
const SubjectSchedule = SubjectRoot + ".schedule"

// ScheduleSubject is where the events of schedule name are recorded.
func ScheduleSubject(name string) string { return SubjectSchedule + "." + name }

// Schedule actions (ScheduleEvent.Action).
const (
	ScheduleAdd    = "add"
	ScheduleRemove = "remove"
	SchedulePause  = "pause"
	ScheduleResume = "resume"
	// ScheduleTick records a tick whose task was submitted.
	ScheduleTick = "tick"
	// ScheduleMissed records ticks missed while no scheduler ran (or the
	// schedule was late), which the catch-up policy did not fire.
	ScheduleMissed = "missed"
)

// Catch-up policies (Schedule.CatchUp): what a scheduler does with the
// ticks that passed while none ran.
const (
	// CatchUpSkip fires none of them: the schedule goes on with its next
	// tick. A tick is missed once it is ScheduleLateness late. The default.
	CatchUpSkip = "skip"
	// CatchUpOne fires the latest of them, once.
	CatchUpOne = "one"
	// CatchUpAll fires each of them, the latest CatchUpMax at most.
	CatchUpAll = "all"
)

// Bounds of schedules.
const (
	// ScheduleLateness is how late a tick may fire and still count as on
	// time (CatchUpSkip): a scheduler wakes within milliseconds of a tick,
	// so only downtime makes a tick this late.
	ScheduleLateness = 30 * time.Second
	// MinScheduleInterval is the shortest interval (EveryMS) a schedule
	// may have, as a cron expression's finest field is seconds: each tick
	// is a task, its facts and two conditional writes.
	MinScheduleInterval = time.Second
	// DefaultCatchUpMax is Schedule.CatchUpMax's default; MaxCatchUp its
	// bound.
	DefaultCatchUpMax = 10
	MaxCatchUp        = 1000
)

// Schedule is a periodic schedule: a task submitted at every tick of a cron
// expression (in a time zone) or of an interval. Ticks are instants that
// every scheduler computes alike (cron times; for an interval, the
// multiples of it since the Unix epoch), so that a tick names its task: the
// task's idempotency key is ScheduleTickKey(name, tick), and however many
// schedulers fire it, it is one task.
type Schedule struct {
	Name string `json:"name"`
	// Task is the task name; Queue its queue (empty: the task's own, else
	// the submitting process's); Kw and Args its arguments.
	Task  string          `json:"task"`
	Queue string          `json:"queue,omitempty"`
	Kw    json.RawMessage `json:"kw,omitempty"`
	Args  json.RawMessage `json:"args,omitempty"`
	// Cron is a cron expression: five fields (minute hour day-of-month
	// month day-of-week), six with seconds first, or a descriptor
	// (@hourly, @daily, @weekly, @monthly, @yearly). TimeZone is the IANA
	// zone it is read in (default UTC).
	Cron     string `json:"cron,omitempty"`
	TimeZone string `json:"time_zone,omitempty"`
	// EveryMS is an interval in milliseconds, the alternative to Cron.
	EveryMS int64 `json:"every_ms,omitempty"`
	// CatchUp is the catch-up policy (CatchUpSkip when empty); CatchUpMax
	// bounds CatchUpAll (DefaultCatchUpMax when 0).
	CatchUp    string `json:"catch_up,omitempty"`
	CatchUpMax int    `json:"catch_up_max,omitempty"`
}

// cronParser reads five fields, six with seconds first, and descriptors.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Check reports what makes s invalid, or nil; the error wraps
// ErrInvalidEvent.
func (s *Schedule) Check() error {
	var errs []error
	if !ValidName(s.Name) {
		errs = append(errs, fmt.Errorf("schedule name %q: want letters, digits, '-' and '_', at most 64 bytes", s.Name))
	}
	if !ValidToken(s.Task) {
		errs = append(errs, fmt.Errorf("task name %q: must be one NATS subject token", s.Task))
	}
	if s.Queue != "" && !ValidToken(s.Queue) {
		errs = append(errs, fmt.Errorf("queue %q: must be one NATS subject token", s.Queue))
	}
	if len(s.Kw) > 0 && s.Kw[0] != '{' {
		errs = append(errs, errors.New("kw must be a JSON object"))
	}
	if len(s.Args) > 0 && s.Args[0] != '[' {
		errs = append(errs, errors.New("args must be a JSON array"))
	}
	if len(s.Kw)+len(s.Args) > MaxPayloadSize {
		errs = append(errs, fmt.Errorf("kw and args are %d bytes, at most %d", len(s.Kw)+len(s.Args), MaxPayloadSize))
	}
	switch {
	case s.Cron != "" && s.EveryMS != 0:
		errs = append(errs, errors.New("cron and every are both set: want one"))
	case s.Cron == "" && s.EveryMS == 0:
		errs = append(errs, errors.New("want a cron expression or an interval (every)"))
	case s.EveryMS != 0:
		if time.Duration(s.EveryMS)*time.Millisecond < MinScheduleInterval {
			errs = append(errs, fmt.Errorf("every %v: at least %v", time.Duration(s.EveryMS)*time.Millisecond, MinScheduleInterval))
		}
		if s.TimeZone != "" {
			errs = append(errs, errors.New("a time zone applies to a cron expression, not an interval"))
		}
	default:
		if strings.HasPrefix(s.Cron, "@every") || strings.Contains(s.Cron, "TZ=") {
			errs = append(errs, fmt.Errorf("cron %q: give an interval with every, a time zone with time_zone", s.Cron))
		} else if _, err := s.cron(); err != nil {
			errs = append(errs, err)
		}
	}
	switch s.CatchUp {
	case "", CatchUpSkip, CatchUpOne, CatchUpAll:
	default:
		errs = append(errs, fmt.Errorf("catch-up %q: want %s, %s or %s", s.CatchUp, CatchUpSkip, CatchUpOne, CatchUpAll))
	}
	if s.CatchUpMax < 0 || s.CatchUpMax > MaxCatchUp {
		errs = append(errs, fmt.Errorf("catch-up max %d: want 0 (default %d) to %d", s.CatchUpMax, DefaultCatchUpMax, MaxCatchUp))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}

// cron parses s.Cron in s.TimeZone.
func (s *Schedule) cron() (cron.Schedule, error) {
	loc := time.UTC
	if s.TimeZone != "" {
		l, err := time.LoadLocation(s.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("time zone %q: %w", s.TimeZone, err)
		}
		loc = l
	}
	c, err := cronParser.Parse(s.Cron)
	if err != nil {
		return nil, fmt.Errorf("cron %q: %w", s.Cron, err)
	}
	return inZone{c, loc}, nil
}

// inZone reads a cron schedule in a time zone.
type inZone struct {
	c   cron.Schedule
	loc *time.Location
}

func (z inZone) Next(t time.Time) time.Time { return z.c.Next(t.In(z.loc)) }

// Ticker returns the function giving s's first tick after t (a valid s:
// Check first).
func (s *Schedule) Ticker() (func(t time.Time) time.Time, error) {
	if s.EveryMS > 0 {
		every := time.Duration(s.EveryMS) * time.Millisecond
		return func(t time.Time) time.Time {
			// The multiples of the interval since the epoch: every
			// scheduler computes the same ticks.
			return t.Truncate(every).Add(every).UTC()
		}, nil
	}
	c, err := s.cron()
	if err != nil {
		return nil, err
	}
	return func(t time.Time) time.Time { return c.Next(t).UTC() }, nil
}

// ScheduleTickKey is the idempotency key of the task of schedule name's
// tick: the same in every scheduler, so a tick is one task.
func ScheduleTickKey(name string, tick time.Time) string {
	return "schedule:" + name + ":" + strconv.FormatInt(tick.UnixMilli(), 10)
}

// ScheduleEvent is the data of a schedule event.
type ScheduleEvent struct {
	Action   string `json:"action"`
	Schedule string `json:"schedule"`
	// By is who acted (add, remove, pause, resume), or the node that fired
	// a tick; Reason is why, in their words.
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	// Spec is the schedule as added (add).
	Spec *Schedule `json:"spec,omitempty"`
	// Tick is the tick's time (tick; for missed, the latest tick missed);
	// TaskID the task submitted for it (tick).
	Tick   time.Time `json:"tick,omitzero"`
	TaskID string    `json:"task_id,omitempty"`
	// Error says why the tick's task was refused (a plugin failed its
	// submission, or its arguments are invalid): the tick is over, and no
	// task runs for it. Empty when the task was queued.
	Error string `json:"error,omitempty"`
	// Missed counts the ticks the catch-up policy did not fire (missed).
	Missed int `json:"missed,omitempty"`
}

// Check reports what makes e invalid, or nil.
func (e *ScheduleEvent) Check() error {
	var errs []error
	if !ValidName(e.Schedule) {
		errs = append(errs, fmt.Errorf("schedule name %q is not valid", e.Schedule))
	}
	if e.By == "" || len(e.By) > MaxReasonSize || len(e.Reason) > MaxReasonSize {
		errs = append(errs, fmt.Errorf("by: want 1 to %d bytes; reason at most %d", MaxReasonSize, MaxReasonSize))
	}
	switch e.Action {
	case ScheduleAdd:
		if e.Spec == nil || e.Spec.Name != e.Schedule {
			errs = append(errs, errors.New("an add records the schedule added, with its name"))
		} else if err := e.Spec.Check(); err != nil {
			errs = append(errs, err)
		}
	case ScheduleRemove, SchedulePause, ScheduleResume:
	case ScheduleTick:
		if e.Tick.IsZero() || !ValidToken(e.TaskID) {
			errs = append(errs, errors.New("a tick records its time and its task's id"))
		}
	case ScheduleMissed:
		if e.Tick.IsZero() || e.Missed < 1 {
			errs = append(errs, errors.New("a missed event records the latest tick missed and how many"))
		}
	default:
		errs = append(errs, fmt.Errorf("action %q: want add, remove, pause, resume, tick or missed", e.Action))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, errors.Join(errs...))
	}
	return nil
}
