package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// submitError answers a failed submission. 400 and 413 blame the request
// and 422 a plugin that refused it: the task was not queued, and sending the
// same request again gets the same answer. 503 is the service's fault: the
// task was not queued, and a retry later may succeed; or, with "outcome":
// "unknown" in the body, it may have been queued, and a retry with the
// Idempotency-Key given in the body (and header) settles it without a
// duplicate.
func submitError(w http.ResponseWriter, t events.Task, err error) {
	var pf *executor.PluginFailure
	switch {
	case errors.Is(err, executor.ErrOutcomeUnknown):
		w.Header().Set("Idempotency-Key", t.IdempotencyKey)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{
			"error": err.Error(), "outcome": "unknown", "task_id": t.ID, "idempotency_key": t.IdempotencyKey,
		})
	case errors.Is(err, events.ErrTooLarge):
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
	case errors.Is(err, executor.ErrInvalidInput):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case errors.As(err, &pf) && pf.Outcome != events.OutcomeTimeout:
		// A plugin said no (its patch refused the task, or it failed on
		// it): not the service being away.
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "not queued: "+err.Error(), http.StatusServiceUnavailable)
	}
}

// healthCacheFor is how long /healthz reuses its last answer: a probe is
// three requests to JetStream, and a poller should not add load to a
// cluster in trouble.
const healthCacheFor = time.Second

// health answers /healthz: 200 when the bus is connected and the leaders
// of its streams and task bucket answer (bus.Ready), 503 otherwise, with
// the reason. A submission made while it answers 503 likely fails.
type health struct {
	b *bus.Bus

	mu   sync.Mutex
	at   time.Time
	last error
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.check(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

func (h *health) check(ctx context.Context) error {
	if !h.b.Conn().IsConnected() { // free, and never cached
		return errors.New("not connected to NATS")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.at) < healthCacheFor {
		return h.last
	}
	h.last, h.at = h.b.Ready(ctx), time.Now()
	return h.last
}
