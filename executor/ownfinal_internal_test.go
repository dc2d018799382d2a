package executor

import (
	"errors"
	"testing"

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
