package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// startScheduler runs the scheduler of the periodic schedules in this
// process (executor.Scheduler; any number of processes may: one task per
// tick between them), and returns what stops it.
func startScheduler(ctx context.Context, app *executor.App) (stop func(), err error) {
	s := executor.NewScheduler(app)
	if err := s.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting the scheduler: %w", err)
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(sctx)
	}, nil
}

const scheduleUsage = `qtasksd schedule add NAME --task T (--cron EXPR [--tz ZONE] | --every D) [flags]
qtasksd schedule list
qtasksd schedule remove|pause|resume NAME [--by WHO] [--reason WHY]`

// schedule runs qtasksd schedule add|list|remove|pause|resume.
func (m *Main) schedule(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		// The usage and every flag (add's are a superset of the others').
		args = []string{"add", "-h"}
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return &usageError{Msg: "schedule needs add, list, remove, pause or resume", Hint: scheduleUsage}
	}
	verb, args := args[0], args[1:]
	var conn connFlags
	fs := newFlagSet("qtasksd schedule "+verb, m.Stderr, scheduleUsage)
	conn.register(fs, DefaultClientURL)
	by := fs.String("by", defaultBy(), "who acts, recorded in the log")
	reason := fs.String("reason", "", "why, recorded in the log with the action")
	var spec events.Schedule
	var every time.Duration
	var kw, posArgs string
	if verb == "add" {
		fs.StringVar(&spec.Task, "task", "", "the task to submit at each tick (required)")
		fs.StringVar(&spec.Cron, "cron", "", "cron expression: 5 fields (minute hour dom month dow), 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly")
		fs.StringVar(&spec.TimeZone, "tz", "", "IANA time zone the cron expression is read in (default UTC)")
		fs.DurationVar(&every, "every", 0, "an interval instead of --cron (at least 1s; ticks at multiples of it since the Unix epoch)")
		fs.StringVar(&spec.Queue, "queue", "", "queue of the tasks (default: the task's)")
		fs.StringVar(&kw, "kw", "", "keyword arguments of the tasks, a JSON object")
		fs.StringVar(&posArgs, "args", "", "positional arguments of the tasks, a JSON array")
		fs.StringVar(&spec.CatchUp, "catch-up", events.CatchUpSkip, "ticks missed while no scheduler ran: skip (none), one (the latest), all (each, the latest --catch-up-max)")
		fs.IntVar(&spec.CatchUpMax, "catch-up-max", 0, fmt.Sprintf("bound of --catch-up all (default %d)", events.DefaultCatchUpMax))
	}
	name, rest := "", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, rest = args[0], args[1:]
	}
	if err := parse(fs, rest, scheduleUsage); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if verb != "list" && !events.ValidName(name) {
		return &usageError{Msg: fmt.Sprintf("schedule %s needs a NAME (letters, digits, '-' and '_'), got %q", verb, name), Hint: scheduleUsage}
	}
	if *by == "" || len(*by) > events.MaxReasonSize || len(*reason) > events.MaxReasonSize {
		return &usageError{Msg: fmt.Sprintf("--by must be 1 to %d bytes and --reason at most %d", events.MaxReasonSize, events.MaxReasonSize), Hint: scheduleUsage}
	}
	if verb == "add" {
		spec.Name, spec.EveryMS = name, every.Milliseconds()
		if kw != "" {
			spec.Kw = json.RawMessage(kw)
			if !json.Valid(spec.Kw) {
				return &usageError{Msg: "--kw must be a JSON object", Hint: "--kw '{\"a\":1}'"}
			}
		}
		if posArgs != "" {
			spec.Args = json.RawMessage(posArgs)
			if !json.Valid(spec.Args) {
				return &usageError{Msg: "--args must be a JSON array", Hint: "--args '[1,2]'"}
			}
		}
		if err := spec.Check(); err != nil {
			return &usageError{Msg: err.Error(), Hint: scheduleUsage}
		}
	}
	switch verb {
	case "add", "list", "remove", "pause", "resume":
	default:
		return &usageError{Msg: fmt.Sprintf("unknown schedule command %q", verb), Hint: scheduleUsage}
	}
	b, err := openClient(ctx, &conn, false)
	if err != nil {
		return err
	}
	defer b.Close()
	app, err := executor.New(b, nil)
	if err != nil {
		return err
	}
	act := executor.Action{By: *by, Reason: *reason}
	var st bus.ScheduleState
	switch verb {
	case "list":
		all, err := app.Schedules(ctx)
		if err != nil {
			return err
		}
		return m.printJSON(all)
	case "add":
		st, err = app.AddSchedule(ctx, spec, act)
	case "remove":
		err = app.RemoveSchedule(ctx, name, act)
	case "pause":
		st, err = app.PauseSchedule(ctx, name, act)
	case "resume":
		st, err = app.ResumeSchedule(ctx, name, act)
	}
	switch {
	case errors.Is(err, bus.ErrScheduleNotFound):
		return &exitError{Code: exitNotFound, Err: err}
	case errors.Is(err, bus.ErrScheduleExists):
		return &exitError{Code: exitRefused, Err: err}
	case err != nil:
		return err
	}
	if verb == "remove" {
		fmt.Fprintf(m.Stdout, "schedule %s: removed\n", name)
		return nil
	}
	return m.printJSON(st)
}

// maxScheduleBody bounds the body of POST /schedules: a schedule's
// arguments are bounded by events.MaxPayloadSize.
const maxScheduleBody = events.MaxPayloadSize + 64<<10

// scheduleRoutes serves the periodic schedules:
//
//	GET    /schedules               list (role read)
//	POST   /schedules               add; body is an events.Schedule (role operate)
//	DELETE /schedules/{name}        remove (role operate)
//	POST   /schedules/{name}/pause  pause (role operate)
//	POST   /schedules/{name}/resume resume (role operate)
//
// An action's "by" is the authenticated user (else the client's address);
// ?reason= says why. Both are recorded in the log.
func scheduleRoutes(mux *http.ServeMux, app *executor.App, auth *httpAuth) {
	who := func(r *http.Request) executor.Action {
		by := "http:" + r.RemoteAddr
		if u, _, ok := r.BasicAuth(); ok && u != "" && auth != nil {
			by = u
		}
		return executor.Action{By: by, Reason: r.URL.Query().Get("reason")}
	}
	fail := func(w http.ResponseWriter, err error) {
		switch {
		case errors.Is(err, bus.ErrScheduleNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		case errors.Is(err, bus.ErrScheduleExists), errors.Is(err, bus.ErrConflict):
			http.Error(w, err.Error(), http.StatusConflict)
		case errors.Is(err, executor.ErrInvalidInput):
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	}
	mux.Handle("GET /schedules", auth.require(roleRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		all, err := app.Schedules(r.Context())
		if err != nil {
			fail(w, err)
			return
		}
		if all == nil {
			all = []bus.ScheduleState{}
		}
		writeJSON(w, http.StatusOK, all)
	})))
	mux.Handle("POST /schedules", auth.require(roleOperate, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxScheduleBody))
		if err != nil {
			http.Error(w, "body: "+err.Error()+" (no schedule was added)", http.StatusBadRequest)
			return
		}
		var spec events.Schedule
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			http.Error(w, "body must be a schedule (JSON): "+err.Error()+" (no schedule was added)", http.StatusBadRequest)
			return
		}
		st, err := app.AddSchedule(r.Context(), spec, who(r))
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, st)
	})))
	mux.Handle("DELETE /schedules/{name}", auth.require(roleOperate, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := app.RemoveSchedule(r.Context(), r.PathValue("name"), who(r)); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))
	for _, verb := range []string{"pause", "resume"} {
		mux.Handle("POST /schedules/{name}/"+verb, auth.require(roleOperate, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			act := app.PauseSchedule
			if verb == "resume" {
				act = app.ResumeSchedule
			}
			st, err := act(r.Context(), r.PathValue("name"), who(r))
			if err != nil {
				fail(w, err)
				return
			}
			writeJSON(w, http.StatusOK, st)
		})))
	}
}

// delayParams reads a submission's ?run_at= (RFC 3339) and ?run_in= (a Go
// duration): the body is the task's kw, so a delay is not a field of it.
func delayParams(r *http.Request) (at time.Time, in time.Duration, err error) {
	q := r.URL.Query()
	if s := q.Get("run_at"); s != "" {
		if at, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return at, 0, fmt.Errorf("run_at %q: want an RFC 3339 time such as 2026-12-24T18:00:00Z", s)
		}
	}
	if s := q.Get("run_in"); s != "" {
		if in, err = time.ParseDuration(s); err != nil || in < 0 {
			return at, 0, fmt.Errorf("run_in %q: want a duration such as 90s or 2h", s)
		}
	}
	if !at.IsZero() && in != 0 {
		return at, 0, errors.New("run_at and run_in: give at most one")
	}
	return at, in, nil
}
