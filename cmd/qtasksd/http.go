package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/cli"
)

// newHTTPHandler serves:
//
//	GET  /healthz             200 when connected to NATS
//	GET  /tasks/{id}          a task's record
//	POST /tasks/{name}        submit; body is the kw object; ?wait=10s waits
func newHTTPHandler(app *executor.App) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !app.Bus().Conn().IsConnected() {
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		t, err := app.Get(r.Context(), r.PathValue("id"))
		if errors.Is(err, bus.ErrTaskNotFound) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
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
		opts := &executor.SubmitOptions{IdempotencyKey: r.Header.Get("Idempotency-Key"), TraceParent: r.Header.Get("traceparent")}
		t, err := app.Submit(r.Context(), r.PathValue("name"), kw, opts)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if ws := r.URL.Query().Get("wait"); ws != "" {
			d, err := time.ParseDuration(ws)
			if err != nil {
				http.Error(w, "wait: "+err.Error(), http.StatusBadRequest)
				return
			}
			ctx, cancel := contextWithTimeout(r, d)
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
	_ = cli.WriteJSON(w, b)
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
