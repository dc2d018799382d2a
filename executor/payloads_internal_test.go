package executor

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

// Every payload struct lists its fields in JSON-name order (as encoding/json
// writes a map's keys), nested structs included.
func TestPayloadFieldOrder(t *testing.T) {
	t.Parallel()
	var check func(reflect.Type)
	check = func(typ reflect.Type) {
		var names []string
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			require.NotEmpty(t, name, "%s.%s has no JSON name", typ.Name(), f.Name)
			names = append(names, name)
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == typ.PkgPath() {
				check(f.Type)
			}
		}
		require.True(t, slices.IsSorted(names), "%s: fields %v are not in JSON-name order", typ.Name(), names)
	}
	for _, v := range []any{
		modelPayload{}, taskIDPayload{}, resultPayload{}, argsPayload{}, addProcessPayload{},
		workerAddPayload{}, updatePayload{}, runTaskBeforePayload{}, middlewaresPayload{},
		closePayload{}, afterBrokerPayload{}, storageAddPayload{},
	} {
		check(reflect.TypeOf(v))
	}
}

// The payload structs encode byte for byte as the maps they replaced.
func TestPayloadsEncodeAsMaps(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	task := events.Task{ID: "t1", Name: "n", Queue: "q", Status: events.StatusNew, Args: json.RawMessage(`[1]`),
		Kw: json.RawMessage(`{"a":1}`), Attempt: 1, CreatedAt: now, UpdatedAt: now}
	msg := ""
	for name, c := range map[string]struct {
		payload any
		asMap   map[string]any
	}{
		"Model":       {modelPayload{task}, map[string]any{"model": &task}},
		"TaskID":      {taskIDPayload{"t1"}, map[string]any{"task_id": "t1"}},
		"Result":      {resultPayload{json.RawMessage(`{"x":[1,2]}`)}, map[string]any{"result": json.RawMessage(`{"x":[1,2]}`)}},
		"NullResult":  {resultPayload{}, map[string]any{"result": json.RawMessage(nil)}},
		"Args":        {argsPayload{task.Args, task.Kw}, map[string]any{"args": task.Args, "kw": task.Kw}},
		"AddProcess":  {addProcessPayload{2, "t1", "w"}, map[string]any{"task_id": "t1", "priority": 2, "worker": "w"}},
		"WorkerAdd":   {workerAddPayload{task.Args, now, task.Kw, 3, "t1", "n"}, map[string]any{"task_name": "n", "task_id": "t1", "priority": 3, "args": task.Args, "kw": task.Kw, "created_at": now}},
		"Update":      {updatePayload{updateKw{task, "t1"}}, map[string]any{"kw": map[string]any{"name": "t1", "mapping": task}}},
		"Middlewares": {middlewaresPayload{2, "after"}, map[string]any{"phase": "after", "middlewares": 2}},
		"Close":       {closePayload{Status: "success", TaskID: "t1"}, map[string]any{"task_id": "t1", "status": "success"}},
		"CloseError":  {closePayload{&msg, "error", "t1"}, map[string]any{"task_id": "t1", "status": "error", "error": ""}},
		"AfterBroker": {afterBrokerPayload{task.Args, task.Kw, 1, "t1", "n"}, map[string]any{"task_id": "t1", "task_name": "n", "priority": 1, "args": task.Args, "kw": task.Kw}},
		"StorageAdd":  {storageAddPayload{&task, "t1"}, map[string]any{"uuid": "t1", "task_status": &task}},
		"RunTaskBefore": {runTaskBeforePayload{
			TaskBroker: taskBroker{task.Args, "t1", task.Kw, 1},
			TaskFunc:   taskFuncInfo{"d", true, 1500, "n", 1, 2, nil},
		}, map[string]any{
			"task_func":   map[string]any{"name": "n", "priority": 1, "retry": 2, "max_time_ms": int64(1500), "tags": []string(nil), "description": "d", "generating": true},
			"task_broker": map[string]any{"id": "t1", "priority": 1, "args": task.Args, "kw": task.Kw},
		}},
	} {
		got, err := json.Marshal(c.payload)
		require.NoError(t, err, name)
		want, err := json.Marshal(c.asMap)
		require.NoError(t, err, name)
		require.Equal(t, string(want), string(got), name)
	}
}
