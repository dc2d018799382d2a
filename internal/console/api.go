// Package console is qtasksd's operator console: the HTTP API v1 over the
// projection and the bus (docs/API.md, docs/openapi.json), and the web UI
// that uses it, embedded in the binary. Reads come from the SQLite
// projection; every answer says how far the projection lags the log.
package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/projections"
)

// Config wires the console to what it reads.
type Config struct {
	// Bus is qtasksd's bus: the registry, the queues, the log's position.
	Bus *bus.Bus
	// Projection is opened read-only; nil when qtasksd runs no projection
	// (the API then answers 503 for what needs it).
	Projection *projections.DB
	// Applied returns the last stream sequence the projector applied.
	Applied func() uint64
	// Operator carries out the operator actions; nil answers them 503.
	Operator Operator
	// User names who is making a request, for the log: the user the
	// server in front of the console authenticated. Without it, or when it
	// returns "", the console names "http:" and the client's address: a
	// basic-auth name nobody checked is the client's word, not who acted.
	User func(r *http.Request) string
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
}

// Operator carries out operators' actions (executor.App does).
type Operator interface {
	Cancel(ctx context.Context, id string, act executor.Action) (events.Task, error)
	Retry(ctx context.Context, id string, act executor.Action) (events.Task, error)
	Pause(ctx context.Context, queue string, act executor.Action) error
	Resume(ctx context.Context, queue string, act executor.Action) error
}

// server serves the API.
type server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	counts   map[string]int
	countsAt time.Time
	last     uint64 // the log's last sequence, read at lastAt
	lastAt   time.Time
}

// logLastTTL is how long the log's last sequence is reused: reading it is
// a JetStream request, which cost the tasks page four times its query
// (BenchmarkConsole), and a lag a fraction of a second old says as much.
const logLastTTL = 500 * time.Millisecond

// logLast returns the log's last sequence, at most logLastTTL old; 0 when
// the log cannot be read.
func (s *server) logLast(ctx context.Context) uint64 {
	if s.cfg.Bus == nil {
		return 0
	}
	s.mu.Lock()
	if !s.lastAt.IsZero() && time.Since(s.lastAt) < logLastTTL {
		last := s.last
		s.mu.Unlock()
		return last
	}
	s.mu.Unlock()
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := s.cfg.Bus.EventStream().Info(ictx)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	s.last, s.lastAt = info.State.LastSeq, time.Now()
	s.mu.Unlock()
	return info.State.LastSeq
}

// New returns the console's handler: the API under /api/v1/ and the UI
// under /. It routes nothing else, so it can be mounted beside qtasksd's
// other endpoints.
func New(cfg Config) http.Handler {
	s := &server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status", s.status)
	mux.HandleFunc("GET /api/v1/tasks", s.withDB(s.tasks))
	mux.HandleFunc("GET /api/v1/tasks/{id}", s.withDB(s.task))
	mux.HandleFunc("GET /api/v1/tasks/{id}/timeline", s.withDB(s.timeline))
	mux.HandleFunc("GET /api/v1/tasks/{id}/blame", s.withDB(s.blame))
	mux.HandleFunc("GET /api/v1/calls", s.withDB(s.calls))
	mux.HandleFunc("GET /api/v1/plugins", s.plugins)
	mux.HandleFunc("GET /api/v1/shadows", s.shadows)
	mux.HandleFunc("GET /api/v1/rejected", s.withDB(s.rejected))
	mux.HandleFunc("GET /api/v1/deadletters", s.withDB(s.deadLetters))
	mux.HandleFunc("GET /api/v1/queues", s.queues)
	mux.HandleFunc("GET /api/v1/throughput", s.withDB(s.throughput))
	mux.HandleFunc("POST /api/v1/tasks/{id}/cancel", s.act(events.ActionCancel))
	mux.HandleFunc("POST /api/v1/tasks/{id}/retry", s.act(events.ActionRetry))
	mux.HandleFunc("POST /api/v1/queues/{queue}/pause", s.act(events.ActionPause))
	mux.HandleFunc("POST /api/v1/queues/{queue}/resume", s.act(events.ActionResume))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	mux.Handle("/", ui())
	return mux
}

// Projection says how far the projection is behind the log.
type Projection struct {
	// Applied is the last stream sequence in the projection, LogLast the
	// log's last sequence, Lag the difference.
	Applied uint64 `json:"applied"`
	LogLast uint64 `json:"log_last"`
	Lag     uint64 `json:"lag"`
}

func (s *server) projection(ctx context.Context) Projection {
	var p Projection
	if s.cfg.Applied != nil {
		p.Applied = s.cfg.Applied()
	}
	p.LogLast = s.logLast(ctx)
	if p.LogLast > p.Applied {
		p.Lag = p.LogLast - p.Applied
	}
	return p
}

// withDB answers 503 when there is no projection to read.
func (s *server) withDB(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Projection == nil {
			writeError(w, http.StatusServiceUnavailable, "qtasksd runs without a projection (--no-projection, or another process projects its database)")
			return
		}
		h(w, r)
	}
}

// Status is GET /api/v1/status.
type Status struct {
	Connected  bool           `json:"connected"`
	Protocol   int            `json:"protocol"`
	Projection Projection     `json:"projection"`
	Tasks      map[string]int `json:"tasks,omitempty"`
	Time       time.Time      `json:"time"`
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st := Status{Protocol: events.ProtocolVersion, Projection: s.projection(r.Context()), Time: time.Now().UTC()}
	if s.cfg.Bus != nil {
		st.Connected = s.cfg.Bus.Conn().IsConnected()
	}
	if s.cfg.Projection != nil {
		counts, err := s.statusCounts(r.Context())
		if err != nil {
			s.fail(w, err)
			return
		}
		st.Tasks = counts
	}
	writeJSON(w, http.StatusOK, st)
}

// statusCounts caches the count by status for a few seconds: it reads an
// index from end to end, which a page polling every second must not repeat.
func (s *server) statusCounts(ctx context.Context) (map[string]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts != nil && time.Since(s.countsAt) < 5*time.Second {
		return s.counts, nil
	}
	c, err := s.cfg.Projection.StatusCounts(ctx)
	if err != nil {
		return nil, err
	}
	s.counts, s.countsAt = c, time.Now()
	return c, nil
}

// TaskList is GET /api/v1/tasks.
type TaskList struct {
	projections.TaskPage
	Projection Projection `json:"projection"`
}

func (s *server) tasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := projections.TaskFilter{Status: q.Get("status"), Name: q.Get("name"), Queue: q.Get("queue"), Tag: q.Get("tag"), Cursor: q.Get("cursor")}
	if f.Status != "" && !events.ValidStatus(f.Status) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("status %q: want one of %s", f.Status, strings.Join(events.Statuses(), ", ")))
		return
	}
	var err error
	if f.Limit, err = limitParam(q.Get("limit")); err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	if f.Since, err = timeParam(q.Get("since")); err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Until, err = timeParam(q.Get("until")); err != nil {
		writeError(w, http.StatusBadRequest, "until: "+err.Error())
		return
	}
	buf := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(buf)
	b, next, err := s.cfg.Projection.AppendTasksJSON(r.Context(), append((*buf)[:0], `{"tasks":`...), f)
	if err != nil {
		s.fail(w, err)
		return
	}
	b = appendTaskListEnd(b, next, s.projection(r.Context()))
	writeBody(w, http.StatusOK, b)
	if cap(b) <= maxPooledBody {
		*buf = b
	}
}

// appendTaskListEnd appends what json.Marshal writes for TaskList after
// its tasks, which projections.DB.AppendTasksJSON writes as it reads them:
// the page that lists them is the one polled every 2 s, and reflection,
// re-validating the tasks' JSON columns and building the tasks were most
// of its time beyond its query (BenchmarkConsole). TestTaskListJSON holds
// it to json.Marshal.
func appendTaskListEnd(dst []byte, next string, p Projection) []byte {
	if next != "" {
		dst = append(dst, `,"next":`...)
		dst = strconv.AppendQuote(dst, next) // base64url: nothing to escape
	}
	dst = appendProjection(append(dst, `,"projection":`...), p)
	return append(dst, '}')
}

// appendProjection appends p as json.Marshal writes it.
func appendProjection(dst []byte, p Projection) []byte {
	dst = append(dst, `{"applied":`...)
	dst = strconv.AppendUint(dst, p.Applied, 10)
	dst = append(dst, `,"log_last":`...)
	dst = strconv.AppendUint(dst, p.LogLast, 10)
	dst = append(dst, `,"lag":`...)
	dst = strconv.AppendUint(dst, p.Lag, 10)
	return append(dst, '}')
}

// TaskDetail is GET /api/v1/tasks/{id}.
type TaskDetail struct {
	Task       projections.Task `json:"task"`
	Projection Projection       `json:"projection"`
}

func (s *server) task(w http.ResponseWriter, r *http.Request) {
	t, err := s.cfg.Projection.Task(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, TaskDetail{Task: t, Projection: s.projection(r.Context())})
}

// TimelineDetail is GET /api/v1/tasks/{id}/timeline.
type TimelineDetail struct {
	projections.Timeline
	Projection Projection `json:"projection"`
}

// timeline writes the timeline as projections.DB.AppendTimelineJSON
// writes it, with the projection spliced in before the closing brace:
// what json.Marshal writes for a TimelineDetail (requireTimelineJSON in
// the API tests). The task page polls it every 2 s, and building the
// structs and encoding them by reflection was half its time
// (BenchmarkConsole).
func (s *server) timeline(w http.ResponseWriter, r *http.Request) {
	buf := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(buf)
	b, err := s.cfg.Projection.AppendTimelineJSON(r.Context(), (*buf)[:0], r.PathValue("id"), s.shadowOf())
	if err != nil {
		s.fail(w, err)
		return
	}
	b = appendProjection(append(b[:len(b)-1], `,"projection":`...), s.projection(r.Context()))
	writeBody(w, http.StatusOK, append(b, '}'))
	if cap(b) <= maxPooledBody {
		*buf = b
	}
}

// bodyBufs are the response buffers of the tasks page and the task's
// timeline, the pages polled every 2 s: tens of kilobytes, grown from
// nothing on every request otherwise.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// maxPooledBody bounds what bodyBufs keeps: a task with a long history
// must not pin its buffer.
const maxPooledBody = 1 << 20

// shadowOf names, from the registry, the live plugin each registered
// shadow plugin shadows: the log does not say, and a shadow's patch is
// diffed against what that plugin saw (projections.DB.TimelineOf). The
// registry is read on the first question, which only a firing with a
// shadow's patch asks.
func (s *server) shadowOf() func(string) string {
	if s.cfg.Bus == nil {
		return nil
	}
	var of map[string]string
	return func(shadow string) string {
		if of == nil {
			of = map[string]string{}
			for _, p := range s.cfg.Bus.Registry().List() {
				if p.Mode == events.ModeShadow {
					of[p.Name] = p.ShadowOf
				}
			}
		}
		return of[shadow]
	}
}

func (s *server) blame(w http.ResponseWriter, r *http.Request) {
	b, err := s.cfg.Projection.Blame(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"blame": b})
}

func (s *server) calls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := projections.CallFilter{
		Plugin: q.Get("plugin"), Version: q.Get("version"), Outcome: q.Get("outcome"),
		Trigger: q.Get("trigger"), TaskID: q.Get("task"), Cursor: q.Get("cursor"),
	}
	var err error
	if f.Limit, err = limitParam(q.Get("limit")); err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	page, err := s.cfg.Projection.PluginCalls(r.Context(), f)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// Plugin is one entry of GET /api/v1/plugins: the registration, and the
// statistics of its recent calls by version.
type Plugin struct {
	events.PluginInfo
	Stats []projections.PluginStat `json:"stats"`
}

// PluginList is GET /api/v1/plugins. Unregistered lists the statistics of
// plugins that made recent calls but are no longer registered.
type PluginList struct {
	Plugins      []Plugin                 `json:"plugins"`
	Unregistered []projections.PluginStat `json:"unregistered"`
	Window       int                      `json:"window"`
}

func (s *server) plugins(w http.ResponseWriter, r *http.Request) {
	var stats []projections.PluginStat
	if s.cfg.Projection != nil {
		var err error
		if stats, err = s.cfg.Projection.PluginStats(r.Context()); err != nil {
			s.fail(w, err)
			return
		}
	}
	out := PluginList{Plugins: []Plugin{}, Unregistered: []projections.PluginStat{}, Window: projections.StatsWindow}
	seen := map[string]bool{}
	if s.cfg.Bus != nil {
		for _, p := range s.cfg.Bus.Registry().List() {
			e := Plugin{PluginInfo: p, Stats: []projections.PluginStat{}}
			for _, st := range stats {
				if st.Plugin == p.Name {
					e.Stats = append(e.Stats, st)
				}
			}
			seen[p.Name] = true
			out.Plugins = append(out.Plugins, e)
		}
	}
	for _, st := range stats {
		if !seen[st.Plugin] {
			out.Unregistered = append(out.Unregistered, st)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// Shadow is one entry of GET /api/v1/shadows: a registered shadow plugin,
// the statistics of its recent calls by version, and how its answers
// compare with those of the live plugin it shadows.
type Shadow struct {
	events.PluginInfo
	Stats []projections.PluginStat `json:"stats"`
	// Divergence compares the shadow's calls with the live plugin's in the
	// same facts (projections.RecentShadowStats).
	Divergence projections.ShadowSummary `json:"divergence"`
}

// ShadowList is GET /api/v1/shadows, over the same window of calls as GET
// /api/v1/plugins.
type ShadowList struct {
	Shadows []Shadow `json:"shadows"`
	Window  int      `json:"window"`
}

func (s *server) shadows(w http.ResponseWriter, r *http.Request) {
	of := r.URL.Query().Get("of")
	if of != "" && !events.ValidName(of) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("of %q: not a plugin name", of))
		return
	}
	out := ShadowList{Shadows: []Shadow{}, Window: projections.StatsWindow}
	if s.cfg.Bus == nil {
		writeJSON(w, http.StatusOK, out)
		return
	}
	var stats []projections.PluginStat
	read := false // stats, once, and only when there is a shadow
	for _, p := range s.cfg.Bus.Registry().List() {
		if p.Mode != events.ModeShadow || (of != "" && p.ShadowOf != of) {
			continue
		}
		e := Shadow{
			PluginInfo: p, Stats: []projections.PluginStat{},
			Divergence: projections.ShadowSummary{Shadow: p.Name, ShadowOf: p.ShadowOf},
		}
		if s.cfg.Projection != nil { // without one, the registrations alone
			if !read {
				var err error
				if stats, err = s.cfg.Projection.PluginStats(r.Context()); err != nil {
					s.fail(w, err)
					return
				}
				read = true
			}
			for _, st := range stats {
				if st.Plugin == p.Name && st.Shadow {
					e.Stats = append(e.Stats, st)
				}
			}
			var err error
			if e.Divergence, err = s.cfg.Projection.RecentShadowStats(r.Context(), p.Name, p.ShadowOf); err != nil {
				s.fail(w, err)
				return
			}
		}
		out.Shadows = append(out.Shadows, e)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) rejected(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := uintParam(q.Get("after"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "after: "+err.Error())
		return
	}
	limit, err := limitParam(q.Get("limit"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	rs, err := s.cfg.Projection.RejectedEvents(r.Context(), after, limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rejected": rs})
}

func (s *server) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	before, err := uintParam(q.Get("before"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "before: "+err.Error())
		return
	}
	limit, err := limitParam(q.Get("limit"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "limit: "+err.Error())
		return
	}
	dls, err := s.cfg.Projection.DeadLetters(r.Context(), before, limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": dls})
}

// Queue is one entry of GET /api/v1/queues, read from the workers'
// consumer of the queue.
type Queue struct {
	Name string `json:"name"`
	// Paused says who paused the queue, when and why; absent when it runs.
	Paused *bus.Mark `json:"paused,omitempty"`
	// Queued tasks wait for a worker; Running are delivered and not yet
	// acknowledged; Redelivered of those were delivered more than once.
	Queued      uint64 `json:"queued"`
	Running     int    `json:"running"`
	Redelivered int    `json:"redelivered"`
	// Waiting counts the workers' pull requests waiting for a task: idle
	// capacity.
	Waiting int `json:"waiting"`
}

const workersPrefix = "workers-"

func (s *server) queues(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Bus == nil {
		writeError(w, http.StatusServiceUnavailable, "no bus")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	out := []Queue{}
	lister := s.cfg.Bus.TaskStream().ListConsumers(ctx)
	for ci := range lister.Info() {
		if !strings.HasPrefix(ci.Name, workersPrefix) {
			continue
		}
		q := queueOf(ci)
		var err error
		q.Paused, err = s.cfg.Bus.Paused(ctx, q.Name)
		switch {
		case errors.Is(err, bus.ErrNotMark):
			// Not written by an executor (a plugin had the server write
			// an answer there): no worker takes it for a pause, and one
			// queue's forged key must not take the page down.
			s.log.WarnContext(ctx, "ignoring a forged pause mark", "queue", q.Name, "err", err)
		case err != nil && !errors.Is(err, bus.ErrNoControl):
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		out = append(out, q)
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		writeError(w, http.StatusServiceUnavailable, "listing the queues' consumers: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"queues": out})
}

func queueOf(ci *jetstream.ConsumerInfo) Queue {
	return Queue{
		Name:        strings.TrimPrefix(ci.Name, workersPrefix),
		Queued:      ci.NumPending,
		Running:     ci.NumAckPending,
		Redelivered: ci.NumRedelivered,
		Waiting:     ci.NumWaiting,
	}
}

func (s *server) throughput(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	window, step := time.Hour, time.Minute
	var err error
	if v := q.Get("window"); v != "" {
		if window, err = time.ParseDuration(v); err != nil || window <= 0 || window > 7*24*time.Hour {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("window %q: want a duration between 1s and 168h", v))
			return
		}
	}
	if v := q.Get("step"); v != "" {
		if step, err = time.ParseDuration(v); err != nil || step < time.Second {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("step %q: want a duration of 1s or more", v))
			return
		}
	}
	if window/step > 1000 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("window/step = %d buckets: at most 1000", window/step))
		return
	}
	bs, err := s.cfg.Projection.Throughput(r.Context(), time.Now().Add(-window), step)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"step_seconds": step.Seconds(), "buckets": bs})
}

// ActionRequest is the body of an action: why, recorded in the log.
type ActionRequest struct {
	Reason string `json:"reason"`
}

// ActionResult answers an action on a task: the record as it was (cancel)
// or the new attempt's (retry).
type ActionResult struct {
	Task events.Task `json:"task"`
}

// act serves an operator action. The body must be JSON (Content-Type
// application/json): a cross-site form cannot send that without the
// browser asking first, so a page elsewhere cannot act with an operator's
// credentials.
func (s *server) act(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Operator == nil {
			writeError(w, http.StatusServiceUnavailable, "this qtasksd takes no operator actions")
			return
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			writeError(w, http.StatusUnsupportedMediaType, "send the action as JSON: Content-Type application/json, body {\"reason\": \"...\"}")
			return
		}
		var req ActionRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "body: want {\"reason\": \"...\"}: "+err.Error())
			return
		}
		act := executor.Action{By: s.user(r), Reason: req.Reason}
		var t events.Task
		var err error
		code := http.StatusOK
		switch action {
		case events.ActionCancel:
			t, err = s.cfg.Operator.Cancel(r.Context(), r.PathValue("id"), act)
		case events.ActionRetry:
			t, err = s.cfg.Operator.Retry(r.Context(), r.PathValue("id"), act)
			code = http.StatusCreated
		case events.ActionPause:
			err = s.cfg.Operator.Pause(r.Context(), r.PathValue("queue"), act)
		case events.ActionResume:
			err = s.cfg.Operator.Resume(r.Context(), r.PathValue("queue"), act)
		}
		switch {
		case errors.Is(err, bus.ErrTaskNotFound):
			writeError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, executor.ErrTaskFinished), errors.Is(err, executor.ErrNotRetryable), errors.Is(err, bus.ErrConflict):
			writeError(w, http.StatusConflict, err.Error())
		case errors.Is(err, events.ErrInvalidEvent):
			writeError(w, http.StatusBadRequest, err.Error())
		case err != nil:
			s.log.ErrorContext(r.Context(), "operator action failed", "action", action, "err", err)
			writeError(w, http.StatusServiceUnavailable, err.Error())
		case t.ID != "":
			writeJSON(w, code, ActionResult{Task: t})
		default:
			writeJSON(w, code, map[string]string{"queue": r.PathValue("queue"), "action": action})
		}
	}
}

// user names who makes request r.
func (s *server) user(r *http.Request) string {
	if s.cfg.User != nil {
		if u := s.cfg.User(r); u != "" {
			return u
		}
	}
	return "http:" + r.RemoteAddr
}

// fail answers an error of the projection: 404 for what is not there, 400
// for a cursor it did not write, 500 otherwise.
func (s *server) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, projections.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, projections.ErrBadCursor):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		s.log.Error("console query failed", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// Error is the body of every answer that is not 2xx.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeBody(w, code, b)
}

// writeBody answers JSON body b with code.
func writeBody(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	// Compact: the API is read by programs and the page; indenting cost
	// the tasks page a third of its time (BenchmarkConsole).
	_, _ = w.Write(b)
}

// limitParam reads a page's limit: 0 (the default) to
// projections.MaxLimit.
func limitParam(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > projections.MaxLimit {
		return 0, fmt.Errorf("%q: want an integer from 0 to %d", s, projections.MaxLimit)
	}
	return n, nil
}

func uintParam(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a stream sequence (a non-negative integer)", s)
	}
	return n, nil
}

// timeParam takes an RFC 3339 time or a duration ago (15m, 2h).
func timeParam(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration ago must not be negative", s)
		}
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time or a duration ago such as 2h", s)
	}
	return t, nil
}
