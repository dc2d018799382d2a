package events_test

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
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == typ.PkgPath() && f.Type.Name() != "Task" {
				check(f.Type)
			}
		}
		require.True(t, slices.IsSorted(names), "%s: fields %v are not in JSON-name order", typ.Name(), names)
	}
	for _, v := range allPayloads(events.Task{}) {
		check(reflect.TypeOf(v))
	}
}

func allPayloads(task events.Task) []events.Payload {
	msg := "boom <&>"
	return []events.Payload{
		events.ModelPayload{Model: task},
		events.StorageGetPayload{Result: task},
		events.BrokerGetPayload{Task: task},
		events.TaskIDPayload{TaskID: task.ID},
		events.ResultPayload{Result: task.Result},
		events.ResultPayload{},
		events.ArgsPayload{Args: task.Args, Kw: task.Kw},
		events.AddProcessPayload{Priority: task.Priority, TaskID: task.ID, Worker: task.Worker},
		events.WorkerAddPayload{Args: task.Args, CreatedAt: task.CreatedAt, Kw: task.Kw, Priority: 3, TaskID: task.ID, TaskName: task.Name},
		events.UpdatePayload{Kw: events.UpdateKw{Mapping: task, Name: task.ID}},
		events.RunTaskBeforePayload{
			TaskBroker: events.TaskBroker{Args: task.Args, ID: task.ID, Kw: task.Kw, Priority: 1},
			TaskFunc:   events.TaskFuncInfo{Description: task.Error, Generating: true, MaxTimeMS: 1500, Name: task.Name, Priority: 1, Retry: 2, Tags: task.Tags},
		},
		events.MiddlewaresPayload{Middlewares: 2, Phase: "after"},
		events.ClosePayload{Status: "success", TaskID: task.ID},
		events.ClosePayload{Error: &msg, Status: "error", TaskID: task.ID},
		events.AfterBrokerPayload{Args: task.Args, Kw: task.Kw, Priority: 1, TaskID: task.ID, TaskName: task.Name},
		events.StorageAddPayload{TaskStatus: &task, UUID: task.ID},
		events.StorageAddPayload{UUID: task.ID},
	}
}

// The payload structs encode byte for byte as the maps they stand for.
func TestPayloadsEncodeAsMaps(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	task := events.Task{
		ID: "t1", Name: "n", Queue: "q", Status: events.StatusNew, Args: json.RawMessage(`[1]`),
		Kw: json.RawMessage(`{"a":1}`), Attempt: 1, CreatedAt: now, UpdatedAt: now,
	}
	msg := ""
	for name, c := range map[string]struct {
		payload any
		asMap   map[string]any
	}{
		"Model":       {events.ModelPayload{Model: task}, map[string]any{"model": &task}},
		"StorageGet":  {events.StorageGetPayload{Result: task}, map[string]any{"result": task}},
		"BrokerGet":   {events.BrokerGetPayload{Task: task}, map[string]any{"task": task}},
		"TaskID":      {events.TaskIDPayload{TaskID: "t1"}, map[string]any{"task_id": "t1"}},
		"Result":      {events.ResultPayload{Result: json.RawMessage(`{"x":[1,2]}`)}, map[string]any{"result": json.RawMessage(`{"x":[1,2]}`)}},
		"NullResult":  {events.ResultPayload{}, map[string]any{"result": json.RawMessage(nil)}},
		"Args":        {events.ArgsPayload{Args: task.Args, Kw: task.Kw}, map[string]any{"args": task.Args, "kw": task.Kw}},
		"AddProcess":  {events.AddProcessPayload{Priority: 2, TaskID: "t1", Worker: "w"}, map[string]any{"task_id": "t1", "priority": 2, "worker": "w"}},
		"WorkerAdd":   {events.WorkerAddPayload{Args: task.Args, CreatedAt: now, Kw: task.Kw, Priority: 3, TaskID: "t1", TaskName: "n"}, map[string]any{"task_name": "n", "task_id": "t1", "priority": 3, "args": task.Args, "kw": task.Kw, "created_at": now}},
		"Update":      {events.UpdatePayload{Kw: events.UpdateKw{Mapping: task, Name: "t1"}}, map[string]any{"kw": map[string]any{"name": "t1", "mapping": task}}},
		"Middlewares": {events.MiddlewaresPayload{Middlewares: 2, Phase: "after"}, map[string]any{"phase": "after", "middlewares": 2}},
		"Close":       {events.ClosePayload{Status: "success", TaskID: "t1"}, map[string]any{"task_id": "t1", "status": "success"}},
		"CloseError":  {events.ClosePayload{Error: &msg, Status: "error", TaskID: "t1"}, map[string]any{"task_id": "t1", "status": "error", "error": ""}},
		"AfterBroker": {events.AfterBrokerPayload{Args: task.Args, Kw: task.Kw, Priority: 1, TaskID: "t1", TaskName: "n"}, map[string]any{"task_id": "t1", "task_name": "n", "priority": 1, "args": task.Args, "kw": task.Kw}},
		"StorageAdd":  {events.StorageAddPayload{TaskStatus: &task, UUID: "t1"}, map[string]any{"uuid": "t1", "task_status": &task}},
		"RunTaskBefore": {events.RunTaskBeforePayload{
			TaskBroker: events.TaskBroker{Args: task.Args, ID: "t1", Kw: task.Kw, Priority: 1},
			TaskFunc:   events.TaskFuncInfo{Description: "d", Generating: true, MaxTimeMS: 1500, Name: "n", Priority: 1, Retry: 2},
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

// requireSameEncoding checks that AppendJSON writes what json.Marshal
// writes, or fails as it does, and leaves what dst held before as it was.
func requireSameEncoding(t *testing.T, v events.Payload) {
	t.Helper()
	want, werr := json.Marshal(v)
	prefix := []byte("prefix")
	got, gerr := v.AppendJSON(prefix)
	if werr != nil {
		require.Error(t, gerr, "%T: json.Marshal fails with %v", v, werr)
		return
	}
	require.NoError(t, gerr, "%T", v)
	require.Equal(t, "prefix"+string(want), string(got), "%T", v)
}

// taskPayload makes a Payload of a task, to check Task.AppendJSON.
type taskPayload struct{ t *events.Task }

func (p taskPayload) AppendJSON(dst []byte) ([]byte, error) { return p.t.AppendJSON(dst) }
func (p taskPayload) MarshalJSON() ([]byte, error)          { return json.Marshal(*p.t) }

// AppendJSON writes exactly json.Marshal's bytes, for plain values and for
// every value it hands to encoding/json.
func TestPayloadAppendJSON(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	plain := events.Task{
		ID: "t1", Name: "n", Queue: "q", Priority: 2, Status: events.StatusProcess,
		Args: json.RawMessage(`[1,"a"]`), Kw: json.RawMessage(`{"a":{"b":null}}`), Attempt: 2, Run: 3, Retry: 1,
		CreatedAt: now, UpdatedAt: now.Add(time.Second), Worker: "w1", Trace: "00-abc-def-01",
	}
	full := plain
	full.Result, full.Error, full.Reason = json.RawMessage(`{"ok":true}`), "failed", "plugin p"
	full.RetryParent, full.RetryChild, full.DelayMS = "p", "c", 1500
	full.Tags, full.IdempotencyKey, full.SubmitDigest = []string{"x", "y"}, "key", "digest"
	full.NotBefore, full.TimeoutMS = now.Add(time.Hour).In(time.FixedZone("X", 5*3600+1800)), 30000
	cases := map[string]func(*events.Task){
		"Plain":        func(*events.Task) {},
		"Full":         func(t *events.Task) { *t = full },
		"NilArgs":      func(t *events.Task) { t.Args, t.Kw = nil, nil },
		"EmptyArgs":    func(t *events.Task) { t.Args = json.RawMessage{} },
		"InvalidKw":    func(t *events.Task) { t.Kw = json.RawMessage(`{"a":`) },
		"SpacedArgs":   func(t *events.Task) { t.Args = json.RawMessage(" [1, 2]\n") },
		"HTMLInArgs":   func(t *events.Task) { t.Args = json.RawMessage(`["<a&b>"]`) },
		"LineSepInKw":  func(t *events.Task) { t.Kw = json.RawMessage("{\"a\":\"\u2028\u2029\"}") },
		"HTMLInName":   func(t *events.Task) { t.Name = "a<b>&c" },
		"QuoteInError": func(t *events.Task) { t.Error = "say \"no\"\\\n\t\x01" },
		"Unicode":      func(t *events.Task) { t.Reason = "é€😀\u2028" },
		"InvalidUTF8":  func(t *events.Task) { t.Error = "a\xffb" },
		"Extra": func(t *events.Task) {
			t.Extra = map[string]json.RawMessage{"z": json.RawMessage(`1`), "a": json.RawMessage(`"x"`)}
		},
		"EmptyTags":     func(t *events.Task) { t.Tags = []string{} },
		"ZeroTimes":     func(t *events.Task) { t.CreatedAt, t.UpdatedAt = time.Time{}, time.Time{} },
		"YearTooLarge":  func(t *events.Task) { t.UpdatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"NegativeYear":  func(t *events.Task) { t.NotBefore = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) },
		"LocalTime":     func(t *events.Task) { t.CreatedAt = now.In(time.FixedZone("Y", -(3*3600 + 1))) },
		"Negative":      func(t *events.Task) { t.Priority, t.Retry, t.Attempt, t.DelayMS = -1, -2, -3, -4 },
		"ResultNull":    func(t *events.Task) { t.Result = json.RawMessage(`null`) },
		"ResultInvalid": func(t *events.Task) { t.Result = json.RawMessage(`nul`) },
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			task := plain
			change(&task)
			requireSameEncoding(t, taskPayload{&task})
			for _, p := range allPayloads(task) {
				requireSameEncoding(t, p)
			}
		})
	}
}

// FuzzTaskAppendJSON: whatever a task's fields hold, AppendJSON writes
// json.Marshal's bytes (or fails as it does).
func FuzzTaskAppendJSON(f *testing.F) {
	f.Add("t1", "name", `[1]`, `{"a":1}`, "", int64(0), "tag")
	f.Add("a<b", "é", ` [ ]`, `{"a":"\u2028"}`, "err\n", int64(1e18), "")
	f.Add("", "", ``, `nul`, "\xff", int64(-62135596800), "<")
	f.Fuzz(func(t *testing.T, id, name, args, kw, errText string, unix int64, tag string) {
		task := events.Task{
			ID: id, Name: name, Queue: tag, Status: errText, Error: errText, Reason: name,
			CreatedAt: time.Unix(unix, unix%1e9).UTC(), UpdatedAt: time.Unix(unix/7, 0), Tags: []string{tag, id},
		}
		if args != "" {
			task.Args = json.RawMessage(args)
		}
		task.Kw = json.RawMessage(kw)
		requireSameEncoding(t, taskPayload{&task})
		for _, p := range allPayloads(task) {
			requireSameEncoding(t, p)
		}
	})
}

// BenchmarkTaskEncode: a run's record encoded by hand against
// encoding/json (the same bytes, TestPayloadAppendJSON).
func BenchmarkTaskEncode(b *testing.B) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	task := events.Task{
		ID: "0b7e1f0c-5a43-4f1e-9d7a-2f1f6f7c9a10", Name: "add", Queue: "default", Priority: 0,
		Status: events.StatusProcess, Args: json.RawMessage(`[]`), Kw: json.RawMessage(`{"a":1,"b":2}`), Attempt: 1, Run: 1,
		Retry: 3, CreatedAt: now, UpdatedAt: now, Worker: "node-1", TimeoutMS: 30000,
	}
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := (events.ModelPayload{Model: task}).AppendJSON(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(events.ModelPayload{Model: task}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
