package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/jsonout"
)

// HTTP limits. A request is read within httpReadTimeout, headers and body
// (a slow body is cut: it used to be waited on forever); ?wait= may ask for
// at most maxHTTPWait, and the response must be written within
// maxHTTPWait plus httpWriteSlack.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpWriteSlack        = 30 * time.Second
	// maxHTTPWait bounds ?wait=: a longer wait is a 400.
	maxHTTPWait = 2 * time.Minute
	// maxHTTPBody bounds a submission's body: twice the payload limit, so
	// that a body whose compact JSON fits is not refused for its spaces.
	maxHTTPBody = 2 * events.MaxPayloadSize
	// defaultHTTPMaxWaits bounds the requests waiting at once on ?wait=,
	// each of which holds a watcher of the task bucket.
	defaultHTTPMaxWaits = 256
)

// httpConfig configures newHTTPHandler and newHTTPServer; the zero value
// is no authentication and the default limits.
type httpConfig struct {
	// Auth checks credentials and roles; nil lets everyone in (no --users).
	Auth *httpAuth
	// MaxWaits bounds the requests waiting on ?wait= at once; beyond it a
	// request with ?wait= is a 429 and submits nothing. Defaults to
	// defaultHTTPMaxWaits.
	MaxWaits int
	// ReadTimeout is the server's; defaults to httpReadTimeout (tests
	// shorten it).
	ReadTimeout time.Duration
	// Pprof also serves Go's profiles, to admins.
	Pprof bool
	// Console is the operator console (its API and pages); nil serves none.
	Console http.Handler
}

// newHTTPServer is the HTTP server of h with the timeouts of c.
func newHTTPServer(h http.Handler, c httpConfig) *http.Server {
	if c.ReadTimeout == 0 {
		c.ReadTimeout = httpReadTimeout
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(httpReadHeaderTimeout, c.ReadTimeout),
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.ReadTimeout + maxHTTPWait + httpWriteSlack,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
}

// newHTTPHandler serves:
//
//	GET  /healthz             200 when NATS and JetStream take writes (health; no authentication)
//	GET  /tasks/{id}          a task's record (role read)
//	POST /tasks/{name}        submit; body is the kw object; ?unique=args,queue and
//	                          ?unique_period=1h make it unique; ?on_conflict=existing (role submit):
//	                          201 created, 200 the key's task existed (Qtasks-Duplicate: true);
//	                          ?wait=10s waits: 200 ended within the wait, 202 not yet
//	                          ?run_at=<RFC 3339> or ?run_in=<duration> delays the task
//	POST /tasks               submit a batch: a JSON array of submissions (role submit)
//	/schedules...             periodic schedules (schedule.go)
//	POST /chains, GET /chains/{id}, GET /state/{scope}: httpflow.go
//	GET  /metrics             Prometheus metrics (role operate)
//	/debug/pprof/             Go's profiles, with --pprof (role admin)
//	/api/v1/..., /            the operator console (internal/console): reads
//	                          need role read, actions (POST) role operate
//
// With c.Auth, every endpoint but /healthz wants HTTP basic credentials of
// the users file.
func newHTTPHandler(app *executor.App, metrics http.Handler, c httpConfig) http.Handler {
	if c.MaxWaits <= 0 {
		c.MaxWaits = defaultHTTPMaxWaits
	}
	waits := make(chan struct{}, c.MaxWaits)
	auth := c.Auth
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", auth.require(roleOperate, metrics))
	if c.Console != nil {
		// The console's pages and reads are a reader's; its actions
		// (cancel, retry, pause, resume) an operator's.
		read, operate := auth.require(roleRead, c.Console), auth.require(roleOperate, c.Console)
		mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				read.ServeHTTP(w, r)
				return
			}
			operate.ServeHTTP(w, r)
		}))
	}
	// /healthz says only whether qtasksd can write to JetStream: open, so
	// that a load balancer's or orchestrator's probe needs no credentials.
	mux.Handle("GET /healthz", &health{b: app.Bus()})
	handleFlow(mux, app, auth, waits) // chains and shared state (httpflow.go)
	mux.Handle("GET /tasks/{id}", auth.require(roleRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := app.Get(r.Context(), r.PathValue("id"))
		if errors.Is(err, bus.ErrTaskNotFound) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, t)
	})))
	mux.Handle("POST /tasks/{name}", auth.require(roleSubmit, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every check of the request before the submission: a 4xx must
		// mean that nothing was written and no task was queued, so that
		// the client may fix and resend.
		const none = " (no task was submitted)"
		name := r.PathValue("name")
		if !events.ValidToken(name) {
			http.Error(w, fmt.Sprintf("task name %q: must be one NATS subject token (no '.', '*', '>' or spaces; at most 128 bytes)", name)+none, http.StatusBadRequest)
			return
		}
		var wait time.Duration
		if ws := r.URL.Query().Get("wait"); ws != "" {
			var err error
			if wait, err = time.ParseDuration(ws); err != nil || wait < 0 || wait > maxHTTPWait {
				http.Error(w, fmt.Sprintf("wait %q: want a duration such as 10s, at most %v", ws, maxHTTPWait)+none, http.StatusBadRequest)
				return
			}
		}
		tp := r.Header.Get("traceparent")
		if tp != "" {
			if _, err := events.ParseTraceParent(tp); err != nil {
				http.Error(w, "traceparent header: "+err.Error()+none, http.StatusBadRequest)
				return
			}
		}
		runAt, runIn, derr := delayParams(r)
		if derr != nil {
			http.Error(w, derr.Error()+none, http.StatusBadRequest)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		if err := events.CheckIdempotencyKey(key); err != nil {
			http.Error(w, "Idempotency-Key header: "+err.Error()+none, http.StatusBadRequest)
			return
		}
		q := r.URL.Query()
		unique, err := parseUnique(q.Get("unique"), q.Get("unique_period"), q.Has("unique") || q.Has("unique_period"))
		if err != nil {
			http.Error(w, err.Error()+none, http.StatusBadRequest)
			return
		}
		allowConflict, err := parseOnConflict(q.Get("on_conflict"))
		if err != nil {
			http.Error(w, err.Error()+none, http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHTTPBody))
		if err != nil {
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &mbe):
				http.Error(w, fmt.Sprintf("body: more than %d bytes", maxHTTPBody)+none, http.StatusRequestEntityTooLarge)
			case errors.Is(err, os.ErrDeadlineExceeded):
				http.Error(w, "body: not received in time"+none, http.StatusRequestTimeout)
			default:
				http.Error(w, "body: "+err.Error()+none, http.StatusBadRequest)
			}
			return
		}
		var kw map[string]any
		if len(body) > 0 {
			if err := json.Unmarshal(body, &kw); err != nil {
				http.Error(w, "body must be a JSON object (the task's kw): "+err.Error()+none, http.StatusBadRequest)
				return
			}
		}
		if wait > 0 {
			select {
			case waits <- struct{}{}:
				defer func() { <-waits }()
			default:
				w.Header().Set("Retry-After", "1")
				http.Error(w, fmt.Sprintf("%d requests are waiting on ?wait= already, the most this server allows: retry later, or submit without ?wait and poll GET /tasks/{id}", c.MaxWaits)+none, http.StatusTooManyRequests)
				return
			}
		}
		opts := &executor.SubmitOptions{IdempotencyKey: key, TraceParent: tp, Unique: unique, AllowKeyConflict: allowConflict, RunAt: runAt, RunIn: runIn}
		res, err := app.SubmitOne(r.Context(), name, kw, opts)
		t := res.Task
		if err != nil {
			submitError(w, t, err)
			return
		}
		w.Header().Set("Idempotency-Key", t.IdempotencyKey)
		// Without ?wait: 201, this request made the task (Location names
		// it), or 200, the key's task existed. With ?wait: 200, the task
		// ended within the wait (the record says how), or 202, it had not
		// (Location names it). Qtasks-Duplicate says which in both.
		code := http.StatusCreated
		if res.Duplicate {
			code = http.StatusOK
		}
		w.Header().Set("Qtasks-Duplicate", strconv.FormatBool(res.Duplicate))
		if wait > 0 {
			ctx, cancel := contextWithTimeout(r, wait)
			defer cancel()
			t, code = waited(ctx, app, t)
		}
		if code == http.StatusAccepted || code == http.StatusCreated {
			w.Header().Set("Location", "/tasks/"+t.ID)
		}
		writeJSON(w, code, t)
	})))
	mux.Handle("POST /tasks", auth.require(roleSubmit, submitBatch(app)))
	scheduleRoutes(mux, app, auth) // schedule.go
	if c.Pprof {
		pp := http.NewServeMux()
		pp.HandleFunc("/debug/pprof/", pprof.Index)
		pp.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pp.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pp.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pp.HandleFunc("/debug/pprof/trace", pprof.Trace)
		// Go's profiles of a running qtasksd, for an operator finding
		// where memory or CPU goes.
		mux.Handle("/debug/pprof/", auth.require(roleAdmin, pp))
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = jsonout.Write(w, b)
}

// waited waits until task t ends or ctx is done, and returns the record to
// answer with and the status of the answer: 200 when the task ended within
// the wait, whatever its status (the request did what it asked, submit and
// wait; a task that ended in error or cancel says so in its status and
// error, as GET /tasks/{id} does), 202 when it has not ended yet (the record
// as last seen, queued or running; poll GET /tasks/{id}). 202 used to
// answer every submission, a finished one included (issue #16).
func waited(ctx context.Context, app *executor.App, t events.Task) (events.Task, int) {
	done, err := app.Wait(ctx, t.ID)
	if done.ID != "" {
		t = done
	}
	if err != nil {
		return t, http.StatusAccepted
	}
	return t, http.StatusOK
}
