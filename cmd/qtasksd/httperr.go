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

// submitError answers a failed submission (submitStatus): 400 and 413
// blame the request, 409 its idempotency key, which names a task submitted
// with other arguments (the body names the task and what differs), and 422
// a plugin that refused it: the task was not queued, and sending the same
// request again gets the same answer. 503 is the service's fault: the task
// was not queued, and a retry later may succeed; or, with "outcome":
// "unknown" in the body, it may have been queued, and a retry with the
// Idempotency-Key given in the body (and header) settles it without a
// duplicate.
func submitError(w http.ResponseWriter, t events.Task, err error) {
	code := submitStatus(err)
	var kc *executor.KeyConflictError
	switch {
	case errors.Is(err, executor.ErrOutcomeUnknown):
		w.Header().Set("Idempotency-Key", t.IdempotencyKey)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, code, map[string]string{
			"error": err.Error(), "outcome": "unknown", "task_id": t.ID, "idempotency_key": t.IdempotencyKey,
		})
	case errors.As(err, &kc):
		w.Header().Set("Idempotency-Key", kc.IdempotencyKey)
		writeJSON(w, code, map[string]any{
			"error": err.Error(), "task_id": kc.Task.ID, "idempotency_key": kc.IdempotencyKey, "differs": kc.Differs,
		})
	case code == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "not queued: "+err.Error(), code)
	default:
		http.Error(w, err.Error(), code)
	}
}

// submitStatus is the HTTP status of a submission's error, the one home of
// the mapping for a submission alone and each of a batch.
func submitStatus(err error) int {
	var pf *executor.PluginFailure
	switch {
	case errors.Is(err, executor.ErrOutcomeUnknown):
		return http.StatusServiceUnavailable
	case errors.Is(err, executor.ErrKeyConflict):
		return http.StatusConflict
	case errors.Is(err, events.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, executor.ErrInvalidInput), errors.Is(err, events.ErrInvalidIdempotencyKey):
		return http.StatusBadRequest
	case errors.As(err, &pf) && pf.Outcome != events.OutcomeTimeout:
		// A plugin said no (its patch refused the task, or it failed on
		// it): not the service being away.
		return http.StatusUnprocessableEntity
	}
	return http.StatusServiceUnavailable
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
