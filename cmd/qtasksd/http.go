package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/jsonout"
)

// newHTTPHandler serves:
//
//	GET  /healthz             200 when NATS and JetStream take writes (health)
//	GET  /tasks/{id}          a task's record
//	POST /tasks/{name}        submit; body is the kw object; ?wait=10s waits
//	GET  /metrics             Prometheus metrics
func newHTTPHandler(app *executor.App, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("GET /healthz", &health{b: app.Bus()})
	mux.HandleFunc("GET /tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("POST /tasks/{name}", func(w http.ResponseWriter, r *http.Request) {
		var kw map[string]any
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &kw); err != nil {
				http.Error(w, "body must be a JSON object (the task's kw): "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		// Every check of the request before the submission: a 400 must mean
		// that no task was queued, so that the client may fix and resend.
		var wait time.Duration
		if ws := r.URL.Query().Get("wait"); ws != "" {
			if wait, err = time.ParseDuration(ws); err != nil || wait < 0 {
				http.Error(w, fmt.Sprintf("wait %q: want a duration such as 10s (no task was submitted)", ws), http.StatusBadRequest)
				return
			}
		}
		opts := &executor.SubmitOptions{IdempotencyKey: r.Header.Get("Idempotency-Key"), TraceParent: r.Header.Get("traceparent")}
		t, err := app.Submit(r.Context(), r.PathValue("name"), kw, opts)
		if err != nil {
			submitError(w, t, err)
			return
		}
		w.Header().Set("Idempotency-Key", t.IdempotencyKey)
		if wait > 0 {
			ctx, cancel := contextWithTimeout(r, wait)
			defer cancel()
			if done, err := app.Wait(ctx, t.ID); err == nil {
				t = done
			}
		}
		writeJSON(w, http.StatusAccepted, t)
	})
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

// withPprof serves Go's runtime profiles under /debug/pprof/ beside h, for
// an operator finding where memory or CPU goes in a running qtasksd.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
