package events

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// The payload contracts of the triggers the executor fires with a fixed
// shape: one home for the writer (the executor) and its readers (a chain's
// advance, tests, a plugin author's code), so that they cannot drift.
//
// Each struct's fields are in the order of their JSON names, so that it
// encodes byte for byte as the map[string]any it stands for (encoding/json
// writes a map's keys sorted; TestPayloadFieldOrder), and each has an
// AppendJSON that writes those same bytes without reflection
// (TestPayloadAppendJSON). The few triggers fired with a free-form map
// (broker_running_older_tasks, task_executor_run_task_gen,
// task_executor_run_task_trigger_error) have no type here.

// Payload is a trigger payload that encodes itself: AppendJSON appends the
// bytes json.Marshal writes for it, or returns its error.
type Payload interface {
	AppendJSON(dst []byte) ([]byte, error)
}

// ModelPayload is {"model": task}: broker_add_before, broker_add_after,
// worker_execute_before, worker_execute_after, storage_get, broker_get and
// the final facts (storage_remove_finished_task among them).
type ModelPayload struct {
	Model Task `json:"model"`
}

// StorageGetPayload is {"result": task}: storage_get's, the record as the
// worker read it.
type StorageGetPayload struct {
	Result Task `json:"result"`
}

// BrokerGetPayload is {"task": task}: broker_get's, the task as the broker
// handed it to the worker.
type BrokerGetPayload struct {
	Task Task `json:"task"`
}

// TaskIDPayload is {"task_id": id}: task_executor_before_execute,
// task_executor_after_execute.
type TaskIDPayload struct {
	TaskID string `json:"task_id"`
}

// ResultPayload is {"result": result}, a nil result null:
// task_executor_run_task, task_executor_after_execute_result_replace,
// task_executor_decode.
type ResultPayload struct {
	Result json.RawMessage `json:"result"`
}

// ArgsPayload is task_executor_args_replace's.
type ArgsPayload struct {
	Args json.RawMessage `json:"args"`
	Kw   json.RawMessage `json:"kw"`
}

// AddProcessPayload is storage_add_process's.
type AddProcessPayload struct {
	Priority int    `json:"priority"`
	TaskID   string `json:"task_id"`
	Worker   string `json:"worker"`
}

// WorkerAddPayload is broker_add_worker's and worker_add's.
type WorkerAddPayload struct {
	Args      json.RawMessage `json:"args"`
	CreatedAt time.Time       `json:"created_at"`
	Kw        json.RawMessage `json:"kw"`
	Priority  int             `json:"priority"`
	TaskID    string          `json:"task_id"`
	TaskName  string          `json:"task_name"`
}

// UpdatePayload is broker_update's and storage_update's.
type UpdatePayload struct {
	Kw UpdateKw `json:"kw"`
}

// UpdateKw is the kw of an UpdatePayload: the record's new mapping, under
// the task id.
type UpdateKw struct {
	Mapping Task   `json:"mapping"`
	Name    string `json:"name"`
}

// RunTaskBeforePayload is worker_run_task_before's.
type RunTaskBeforePayload struct {
	TaskBroker TaskBroker   `json:"task_broker"`
	TaskFunc   TaskFuncInfo `json:"task_func"`
}

// TaskBroker is the task as the broker handed it to the worker.
type TaskBroker struct {
	Args     json.RawMessage `json:"args"`
	ID       string          `json:"id"`
	Kw       json.RawMessage `json:"kw"`
	Priority int             `json:"priority"`
}

// TaskFuncInfo is the worker's registration of the task function.
type TaskFuncInfo struct {
	Description string   `json:"description"`
	Generating  bool     `json:"generating"`
	MaxTimeMS   int64    `json:"max_time_ms"`
	Name        string   `json:"name"`
	Priority    int      `json:"priority"`
	Retry       int      `json:"retry"`
	Tags        []string `json:"tags"`
}

// MiddlewaresPayload is task_executor_middlewares_execute's.
type MiddlewaresPayload struct {
	Middlewares int    `json:"middlewares"`
	Phase       string `json:"phase"`
}

// ClosePayload is task_executor_task_close's; error only when there is
// one.
type ClosePayload struct {
	Error  *string `json:"error,omitempty"`
	Status string  `json:"status"`
	TaskID string  `json:"task_id"`
}

// AfterBrokerPayload is qtasks_add_task_after_broker's.
type AfterBrokerPayload struct {
	Args     json.RawMessage `json:"args"`
	Kw       json.RawMessage `json:"kw"`
	Priority int             `json:"priority"`
	TaskID   string          `json:"task_id"`
	TaskName string          `json:"task_name"`
}

// StorageAddPayload is storage_add's.
type StorageAddPayload struct {
	TaskStatus *Task  `json:"task_status"`
	UUID       string `json:"uuid"`
}

var (
	_ Payload = ModelPayload{}
	_ Payload = StorageGetPayload{}
	_ Payload = BrokerGetPayload{}
	_ Payload = TaskIDPayload{}
	_ Payload = ResultPayload{}
	_ Payload = ArgsPayload{}
	_ Payload = AddProcessPayload{}
	_ Payload = WorkerAddPayload{}
	_ Payload = UpdatePayload{}
	_ Payload = RunTaskBeforePayload{}
	_ Payload = MiddlewaresPayload{}
	_ Payload = ClosePayload{}
	_ Payload = AfterBrokerPayload{}
	_ Payload = StorageAddPayload{}
)

// AppendJSON appends p's JSON encoding (Payload).
func (p ModelPayload) AppendJSON(dst []byte) ([]byte, error) {
	return appendKeyedTask(dst, `{"model":`, &p.Model)
}

// AppendJSON appends p's JSON encoding (Payload).
func (p StorageGetPayload) AppendJSON(dst []byte) ([]byte, error) {
	return appendKeyedTask(dst, `{"result":`, &p.Result)
}

// AppendJSON appends p's JSON encoding (Payload).
func (p BrokerGetPayload) AppendJSON(dst []byte) ([]byte, error) {
	return appendKeyedTask(dst, `{"task":`, &p.Task)
}

// appendKeyedTask appends an object of one member, open (`{"key":`), whose
// value is t.
func appendKeyedTask(dst []byte, open string, t *Task) ([]byte, error) {
	dst = slices.Grow(dst, len(open)+1+t.sizeHint())
	dst = append(dst, open...)
	dst, err := t.AppendJSON(dst)
	if err != nil {
		return dst, err
	}
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p TaskIDPayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"task_id":`...)
	dst = appendString(dst, p.TaskID)
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p ResultPayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = slices.Grow(dst, 16+len(p.Result))
	start := len(dst)
	dst = append(dst, `{"result":`...)
	dst, ok := appendRawJSON(dst, p.Result)
	if !ok {
		return appendMarshal(dst[:start], p)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p ArgsPayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = slices.Grow(dst, 24+len(p.Args)+len(p.Kw))
	start := len(dst)
	dst = append(dst, `{"args":`...)
	dst, ok := appendRawJSON(dst, p.Args)
	if ok {
		dst = append(dst, `,"kw":`...)
		dst, ok = appendRawJSON(dst, p.Kw)
	}
	if !ok {
		return appendMarshal(dst[:start], p)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p AddProcessPayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = slices.Grow(dst, 64+len(p.TaskID)+len(p.Worker))
	dst = append(dst, `{"priority":`...)
	dst = strconv.AppendInt(dst, int64(p.Priority), 10)
	dst = append(dst, `,"task_id":`...)
	dst = appendString(dst, p.TaskID)
	dst = append(dst, `,"worker":`...)
	dst = appendString(dst, p.Worker)
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p WorkerAddPayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = slices.Grow(dst, 160+len(p.Args)+len(p.Kw)+len(p.TaskID)+len(p.TaskName))
	start := len(dst)
	dst = append(dst, `{"args":`...)
	dst, ok := appendRawJSON(dst, p.Args)
	if ok {
		dst = append(dst, `,"created_at":`...)
		dst, ok = appendTime(dst, p.CreatedAt)
	}
	if ok {
		dst = append(dst, `,"kw":`...)
		dst, ok = appendRawJSON(dst, p.Kw)
	}
	if !ok {
		return appendMarshal(dst[:start], p)
	}
	dst = append(dst, `,"priority":`...)
	dst = strconv.AppendInt(dst, int64(p.Priority), 10)
	dst = append(dst, `,"task_id":`...)
	dst = appendString(dst, p.TaskID)
	dst = append(dst, `,"task_name":`...)
	dst = appendString(dst, p.TaskName)
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p UpdatePayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = slices.Grow(dst, 40+len(p.Kw.Name)+p.Kw.Mapping.sizeHint())
	dst = append(dst, `{"kw":{"mapping":`...)
	dst, err := p.Kw.Mapping.AppendJSON(dst)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, p.Kw.Name)
	return append(dst, "}}"...), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p RunTaskBeforePayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = slices.Grow(dst, 256+len(p.TaskBroker.Args)+len(p.TaskBroker.Kw)+len(p.TaskBroker.ID)+
		len(p.TaskFunc.Description)+len(p.TaskFunc.Name)+16*len(p.TaskFunc.Tags))
	start := len(dst)
	b := &p.TaskBroker
	dst = append(dst, `{"task_broker":{"args":`...)
	dst, ok := appendRawJSON(dst, b.Args)
	if ok {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, b.ID)
		dst = append(dst, `,"kw":`...)
		dst, ok = appendRawJSON(dst, b.Kw)
	}
	if !ok {
		return appendMarshal(dst[:start], p)
	}
	dst = append(dst, `,"priority":`...)
	dst = strconv.AppendInt(dst, int64(b.Priority), 10)
	fn := &p.TaskFunc
	dst = append(dst, `},"task_func":{"description":`...)
	dst = appendString(dst, fn.Description)
	dst = append(dst, `,"generating":`...)
	dst = strconv.AppendBool(dst, fn.Generating)
	dst = append(dst, `,"max_time_ms":`...)
	dst = strconv.AppendInt(dst, fn.MaxTimeMS, 10)
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, fn.Name)
	dst = append(dst, `,"priority":`...)
	dst = strconv.AppendInt(dst, int64(fn.Priority), 10)
	dst = append(dst, `,"retry":`...)
	dst = strconv.AppendInt(dst, int64(fn.Retry), 10)
	dst = append(dst, `,"tags":`...)
	if fn.Tags == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendStrings(dst, fn.Tags)
	}
	return append(dst, "}}"...), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p MiddlewaresPayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"middlewares":`...)
	dst = strconv.AppendInt(dst, int64(p.Middlewares), 10)
	dst = append(dst, `,"phase":`...)
	dst = appendString(dst, p.Phase)
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p ClosePayload) AppendJSON(dst []byte) ([]byte, error) {
	if p.Error != nil {
		dst = slices.Grow(dst, 48+len(*p.Error)+len(p.Status)+len(p.TaskID))
	}
	dst = append(dst, '{')
	if p.Error != nil {
		dst = append(dst, `"error":`...)
		dst = appendString(dst, *p.Error)
		dst = append(dst, ',')
	}
	dst = append(dst, `"status":`...)
	dst = appendString(dst, p.Status)
	dst = append(dst, `,"task_id":`...)
	dst = appendString(dst, p.TaskID)
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p AfterBrokerPayload) AppendJSON(dst []byte) ([]byte, error) {
	dst = slices.Grow(dst, 96+len(p.Args)+len(p.Kw)+len(p.TaskID)+len(p.TaskName))
	start := len(dst)
	dst = append(dst, `{"args":`...)
	dst, ok := appendRawJSON(dst, p.Args)
	if ok {
		dst = append(dst, `,"kw":`...)
		dst, ok = appendRawJSON(dst, p.Kw)
	}
	if !ok {
		return appendMarshal(dst[:start], p)
	}
	dst = append(dst, `,"priority":`...)
	dst = strconv.AppendInt(dst, int64(p.Priority), 10)
	dst = append(dst, `,"task_id":`...)
	dst = appendString(dst, p.TaskID)
	dst = append(dst, `,"task_name":`...)
	dst = appendString(dst, p.TaskName)
	return append(dst, '}'), nil
}

// AppendJSON appends p's JSON encoding (Payload).
func (p StorageAddPayload) AppendJSON(dst []byte) ([]byte, error) {
	if p.TaskStatus != nil {
		dst = slices.Grow(dst, 40+len(p.UUID)+p.TaskStatus.sizeHint())
	}
	dst = append(dst, `{"task_status":`...)
	if p.TaskStatus == nil {
		dst = append(dst, "null"...)
	} else {
		var err error
		if dst, err = p.TaskStatus.AppendJSON(dst); err != nil {
			return dst, err
		}
	}
	dst = append(dst, `,"uuid":`...)
	dst = appendString(dst, p.UUID)
	return append(dst, '}'), nil
}
