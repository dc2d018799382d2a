package executor

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// Only a final fact as executors write it is taken for one: on a fact
// subject (no plugin may write there), with the final fact's type and id.
// A plugin's message with the same headers on its own subjects is not.
func TestOwnFinal(t *testing.T) {
	t.Parallel()
	factSubj := events.FactSubject(events.StorageRemoveFinishedTask, "default")
	good := bus.Stored{Seq: 9, Subject: factSubj, Event: events.Event{
		ID: events.FinalMsgID("T", 1), Type: events.TypeTriggerPrefix + events.StorageRemoveFinishedTask, TaskID: "T", Attempt: 1,
	}}
	on := func(subject string) bus.Stored { s := good; s.Subject = subject; return s }
	withEvent := func(f func(*events.Event)) bus.Stored { s := good; f(&s.Event); return s }
	invalid := good
	invalid.Err = errors.New("invalid")
	tests := []struct {
		name    string
		s       bus.Stored
		subject string
		want    bool
	}{
		{"Own", good, "", true},
		{"OwnOnTheSubjectRead", good, factSubj, true},
		{"OnAPluginsDeadLetterSubject", on(events.DeadSubject("mallory")), "", false},
		{"OnAPluginsPatchSubject", on(events.PatchSubject("mallory", events.StorageRemoveFinishedTask)), "", false},
		{"OnAnotherFactSubject", on(events.FactSubject(events.StorageAdd, "default")), "", false},
		{"OnAnotherQueueThanRead", on(events.FactSubject(events.StorageRemoveFinishedTask, "other")), factSubj, false},
		{"AnotherType", withEvent(func(e *events.Event) { e.Type = events.TypeDeadLetter }), "", false},
		{"AnotherID", withEvent(func(e *events.Event) { e.ID = "T:1:1:storage_remove_finished_task:0" }), "", false},
		{"NotAnEvent", invalid, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, ownFinal(tt.s, tt.subject))
		})
	}
}

// A final record too large for a fact (a safety net: each fact of the run
// is checked before) is written as an error with the arguments the task
// message carried and no result, rather than failing on every delivery.
func TestFitFinal(t *testing.T) {
	t.Parallel()
	orig := events.Task{
		ID: "T", Name: "n", Queue: "default", Status: events.StatusNew, Attempt: 1,
		Args: json.RawMessage(`[1]`), Kw: json.RawMessage(`{}`),
	}
	rs := &runState{orig: orig}
	small := orig
	small.Status, small.Result = events.StatusSuccess, json.RawMessage(`"ok"`)
	got, rec := rs.fitFinal(small)
	require.Equal(t, small, got, "a final record that fits is kept")
	// The bytes, not only the JSON value: the record is stored and
	// published as encoded here, and must be what json.Marshal writes.
	require.Equal(t, string(mustJSON(small)), string(rec), "and returned encoded")

	big := small
	big.Kw = json.RawMessage(`{"s":"` + strings.Repeat("x", events.MaxDataSize) + `"}`)
	got, rec = rs.fitFinal(big)
	require.Equal(t, string(mustJSON(got)), string(rec), "the record that fits is returned encoded")
	require.Equal(t, events.StatusError, got.Status)
	require.Nil(t, got.Result)
	require.Equal(t, orig.Args, got.Args)
	require.Equal(t, orig.Kw, got.Kw)
	require.Contains(t, got.Reason, events.ErrTooLarge.Error())
	require.Contains(t, got.Error, "the log takes at most")
	require.LessOrEqual(t, len(mustJSON(events.ModelPayload{Model: got})), events.MaxDataSize)
}

// The final fact's payload built from the record encoded once is the one
// json.Marshal writes for it: the log's bytes do not change. So are the
// submission's payloads built from its record encoded once (fireBefore).
func TestModelInputIsModelPayload(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 18, 0, 0, 123456789, time.UTC)
	for _, task := range []events.Task{
		{},
		{
			ID: "T<&>\"", Name: "n<&>", Queue: "default", Status: events.StatusSuccess, Attempt: 2, Run: 3, Priority: -1,
			Args: json.RawMessage(`[1,"<x>"]`), Kw: json.RawMessage(`{"a":{"b":[]}}`), Result: json.RawMessage(`"ok\u2028"`),
			Extra: map[string]json.RawMessage{"z": json.RawMessage(`1`), "a": json.RawMessage(`"s"`)},
			Tags:  []string{"t"}, CreatedAt: now, UpdatedAt: now, Error: "e\n", Reason: "r", Worker: "w",
		},
	} {
		require.Equal(t, string(mustJSON(events.ModelPayload{Model: task})), string(modelInput(encodeRecord(task))))
		require.Equal(t, string(mustJSON(events.StorageAddPayload{UUID: task.ID, TaskStatus: &task})), string(storageAddInput(encodeRecord(task), task.ID)))
	}
}
