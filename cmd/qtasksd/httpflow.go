package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// chainRequest is the body of POST /chains.
type chainRequest struct {
	Steps []struct {
		Name     string            `json:"name"`
		Args     []json.RawMessage `json:"args,omitempty"`
		Kw       json.RawMessage   `json:"kw,omitempty"`
		Queue    string            `json:"queue,omitempty"`
		Priority *int              `json:"priority,omitempty"`
	} `json:"steps"`
}

// chainStatus is what GET /chains/{id} and POST /chains?wait= answer.
type chainStatus struct {
	ID    string `json:"id"`
	Steps int    `json:"steps"`
	// Status is running until the chain ends, then success, error or
	// cancel (events.ChainAfter).
	Status string `json:"status"`
	// Tasks are the records of the steps submitted so far, in order.
	Tasks []events.Task `json:"tasks"`
}

// handleFlow adds the endpoints of chains and shared state:
//
//	POST /chains          start a chain; body {"steps":[{"name","args","kw","queue","priority"}]};
//	                      ?wait=10s waits for its end (role submit); 201 with its status
//	GET  /chains/{id}     a chain's status and its steps' records (role read)
//	GET  /state/{scope}   the keys and values of a shared state scope (role read)
func handleFlow(mux *http.ServeMux, app *executor.App, auth *httpAuth, waits chan struct{}) {
	mux.Handle("POST /chains", auth.require(roleSubmit, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const none = " (no chain was started)"
		var wait time.Duration
		if ws := r.URL.Query().Get("wait"); ws != "" {
			var err error
			if wait, err = time.ParseDuration(ws); err != nil || wait < 0 || wait > maxHTTPWait {
				http.Error(w, fmt.Sprintf("wait %q: want a duration such as 10s, at most %v", ws, maxHTTPWait)+none, http.StatusBadRequest)
				return
			}
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHTTPBody))
		if err != nil {
			http.Error(w, "body: "+err.Error()+none, http.StatusBadRequest)
			return
		}
		var req chainRequest
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, `body must be {"steps":[{"name":...,"args":[...],"kw":{...}}]}: `+err.Error()+none, http.StatusBadRequest)
			return
		}
		steps := make([]executor.ChainStep, len(req.Steps))
		for i, s := range req.Steps {
			steps[i] = executor.ChainStep{Name: s.Name, Queue: s.Queue, Priority: s.Priority}
			for _, a := range s.Args {
				steps[i].Args = append(steps[i].Args, a)
			}
			if len(s.Kw) > 0 && string(s.Kw) != "null" {
				steps[i].Input = s.Kw
			}
		}
		if wait > 0 {
			select {
			case waits <- struct{}{}:
				defer func() { <-waits }()
			default:
				w.Header().Set("Retry-After", "1")
				http.Error(w, "too many requests are waiting on ?wait= already: retry later, or start without ?wait and poll GET /chains/{id}"+none, http.StatusTooManyRequests)
				return
			}
		}
		c, err := app.Chain(r.Context(), steps...)
		if err != nil {
			submitError(w, c.First, err)
			return
		}
		if wait > 0 {
			ctx, cancel := contextWithTimeout(r, wait)
			defer cancel()
			_, _ = app.WaitChain(ctx, c.ID)
		}
		st, err := chainState(r.Context(), app, c.ID)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusCreated, st)
	})))
	mux.Handle("GET /chains/{id}", auth.require(roleRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := chainState(r.Context(), app, r.PathValue("id"))
		switch {
		case errors.Is(err, bus.ErrTaskNotFound):
			http.Error(w, "no chain "+r.PathValue("id"), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			writeJSON(w, http.StatusOK, st)
		}
	})))
	mux.Handle("GET /state/{scope}", auth.require(roleRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scope := r.PathValue("scope")
		if !events.ValidStateName(scope) {
			http.Error(w, fmt.Sprintf("scope %q: want letters, digits, - and _, 1 to 64 bytes", scope), http.StatusBadRequest)
			return
		}
		all, err := app.State(scope).GetAll(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"scope": scope, "values": all})
	})))
}

// chainState reads chain id's steps from the task records, as far as they
// go, and says where the chain stands by events.ChainAfter.
func chainState(ctx context.Context, app *executor.App, id string) (chainStatus, error) {
	st := chainStatus{ID: id, Status: executor.ChainRunning, Tasks: []events.Task{}}
	for i := range events.MaxChainSteps {
		t, err := app.Get(ctx, executor.ChainStepID(id, i))
		if errors.Is(err, bus.ErrTaskNotFound) && i > 0 {
			return st, nil // not submitted yet
		}
		if err != nil {
			return st, err
		}
		st.Tasks = append(st.Tasks, t)
		if i == 0 {
			var link events.ChainLink
			if json.Unmarshal(t.Extra[events.ExtraChain], &link) != nil || link.ID != id {
				return st, fmt.Errorf("%w: task %s is no step of chain %s", bus.ErrTaskNotFound, t.ID, id)
			}
			st.Steps = link.Steps
		}
		switch events.ChainAfter(t.Status, i, st.Steps) {
		case events.ChainNext:
			continue
		case events.ChainSucceeds:
			st.Status = events.StatusSuccess
		case events.ChainFails:
			st.Status = t.Status
		case events.ChainWaits:
		}
		return st, nil
	}
	return st, nil
}
