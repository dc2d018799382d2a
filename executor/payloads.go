package executor

import (
	"encoding/json"
	"time"

	"github.com/qtasks/qtasks-go/events"
)

// Trigger payloads. Each struct's fields are in the order of their JSON
// names, so that it encodes byte for byte as the map[string]any it stands
// for (encoding/json writes a map's keys sorted) at a fraction of the cost:
// no map, no boxing, no sorting. TestPayloadFieldOrder checks the order.

// modelPayload is {"model": task}.
type modelPayload struct {
	Model events.Task `json:"model"`
}

// taskIDPayload is {"task_id": id}.
type taskIDPayload struct {
	TaskID string `json:"task_id"`
}

// resultPayload is {"result": result}; a nil result is null.
type resultPayload struct {
	Result json.RawMessage `json:"result"`
}

// argsPayload is task_executor_args_replace's.
type argsPayload struct {
	Args json.RawMessage `json:"args"`
	Kw   json.RawMessage `json:"kw"`
}

// addProcessPayload is storage_add_process's.
type addProcessPayload struct {
	Priority int    `json:"priority"`
	TaskID   string `json:"task_id"`
	Worker   string `json:"worker"`
}

// workerAddPayload is broker_add_worker's and worker_add's.
type workerAddPayload struct {
	Args      json.RawMessage `json:"args"`
	CreatedAt time.Time       `json:"created_at"`
	Kw        json.RawMessage `json:"kw"`
	Priority  int             `json:"priority"`
	TaskID    string          `json:"task_id"`
	TaskName  string          `json:"task_name"`
}

// updatePayload is broker_update's and storage_update's.
type updatePayload struct {
	Kw updateKw `json:"kw"`
}

type updateKw struct {
	Mapping events.Task `json:"mapping"`
	Name    string      `json:"name"`
}

// runTaskBeforePayload is worker_run_task_before's.
type runTaskBeforePayload struct {
	TaskBroker taskBroker   `json:"task_broker"`
	TaskFunc   taskFuncInfo `json:"task_func"`
}

type taskBroker struct {
	Args     json.RawMessage `json:"args"`
	ID       string          `json:"id"`
	Kw       json.RawMessage `json:"kw"`
	Priority int             `json:"priority"`
}

type taskFuncInfo struct {
	Description string   `json:"description"`
	Generating  bool     `json:"generating"`
	MaxTimeMS   int64    `json:"max_time_ms"`
	Name        string   `json:"name"`
	Priority    int      `json:"priority"`
	Retry       int      `json:"retry"`
	Tags        []string `json:"tags"`
}

// middlewaresPayload is task_executor_middlewares_execute's.
type middlewaresPayload struct {
	Middlewares int    `json:"middlewares"`
	Phase       string `json:"phase"`
}

// closePayload is task_executor_task_close's; error only when there is one.
type closePayload struct {
	Error  *string `json:"error,omitempty"`
	Status string  `json:"status"`
	TaskID string  `json:"task_id"`
}

// afterBrokerPayload is qtasks_add_task_after_broker's.
type afterBrokerPayload struct {
	Args     json.RawMessage `json:"args"`
	Kw       json.RawMessage `json:"kw"`
	Priority int             `json:"priority"`
	TaskID   string          `json:"task_id"`
	TaskName string          `json:"task_name"`
}

// storageAddPayload is storage_add's.
type storageAddPayload struct {
	TaskStatus *events.Task `json:"task_status"`
	UUID       string       `json:"uuid"`
}

// encoded is a payload already encoded, as json.Marshal would encode it
// (fire takes it as it is): a submission encodes its record once for
// broker_add_before, storage_add, broker_add_after, the record and the
// task message (fireBefore).
type encoded json.RawMessage

// storageAddInput is storageAddPayload{id, t} encoded, built from rec, t
// encoded by encodeRecord: the bytes json.Marshal writes for it
// (TestStorageAddInputIsPayload).
func storageAddInput(rec []byte, id string) json.RawMessage {
	q := mustJSON(id)
	b := make([]byte, 0, len(`{"task_status":,"uuid":}`)+len(rec)+len(q))
	b = append(b, `{"task_status":`...)
	b = append(b, rec...)
	b = append(b, `,"uuid":`...)
	b = append(b, q...)
	return append(b, '}')
}
