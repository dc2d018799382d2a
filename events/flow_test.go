package events_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

func TestChainAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status      string
		step, steps int
		want        events.ChainVerdict
	}{
		{events.StatusSuccess, 0, 3, events.ChainNext},
		{events.StatusSuccess, 2, 3, events.ChainSucceeds},
		{events.StatusSuccess, 0, 1, events.ChainSucceeds},
		{events.StatusError, 1, 3, events.ChainFails},
		{events.StatusCancel, 2, 3, events.ChainFails},
		{events.StatusRetry, 0, 3, events.ChainWaits},
		{events.StatusProcess, 0, 3, events.ChainWaits},
		{events.StatusNew, 2, 3, events.ChainWaits},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, events.ChainAfter(tt.status, tt.step, tt.steps), "%s at %d of %d", tt.status, tt.step, tt.steps)
	}
}

func TestChainEventCheck(t *testing.T) {
	t.Parallel()
	ok := events.ChainEvent{Chain: "chain-1", Action: events.ChainStep, Step: 1, Steps: 2, TaskID: "t2", Prev: "t1"}
	require.NoError(t, ok.Check())
	tests := []struct {
		name string
		edit func(e *events.ChainEvent)
	}{
		{"bad chain id", func(e *events.ChainEvent) { e.Chain = "a.b" }},
		{"step past the end", func(e *events.ChainEvent) { e.Step = 2 }},
		{"too many steps", func(e *events.ChainEvent) { e.Steps, e.Step = events.MaxChainSteps+1, 1 }},
		{"no task", func(e *events.ChainEvent) { e.TaskID = "" }},
		{"step without prev", func(e *events.ChainEvent) { e.Prev = "" }},
		{"start not at 0", func(e *events.ChainEvent) { e.Action = events.ChainStart }},
		{"end not final", func(e *events.ChainEvent) { e.Action, e.Status = events.ChainEnd, events.StatusRetry }},
		{"unknown action", func(e *events.ChainEvent) { e.Action = "jump" }},
	}
	for _, tt := range tests {
		e := ok
		tt.edit(&e)
		require.ErrorIs(t, e.Check(), events.ErrInvalidEvent, tt.name)
	}
}

func TestStateWriteCheck(t *testing.T) {
	t.Parallel()
	ok := events.StateWrite{
		Kind: events.StateShared, Scope: "s", Key: "k", Op: events.StatePut, Prev: 1, Revision: 2,
		Value: []byte(`1`), Digest: "sha256:x", Size: 1,
	}
	require.NoError(t, ok.Check())
	del := events.StateWrite{Kind: events.StateTask, Scope: "task-id", Key: "k", Op: events.StateDelete, Prev: 2, Revision: 3}
	require.NoError(t, del.Check())
	tests := []struct {
		name string
		edit func(w *events.StateWrite)
	}{
		{"bad kind", func(w *events.StateWrite) { w.Kind = "global" }},
		{"scope with a dot", func(w *events.StateWrite) { w.Scope = "a.b" }},
		{"empty key", func(w *events.StateWrite) { w.Key = "" }},
		{"key too long", func(w *events.StateWrite) { w.Key = strings.Repeat("k", 65) }},
		{"put without digest", func(w *events.StateWrite) { w.Digest = "" }},
		{"value too large", func(w *events.StateWrite) { w.Size = events.MaxStateValueSize + 1 }},
		{"inline value too large", func(w *events.StateWrite) {
			w.Value = []byte(`"` + strings.Repeat("x", events.MaxStateValueInline) + `"`)
		}},
		{"revision not after prev", func(w *events.StateWrite) { w.Revision = 1 }},
		{"unknown op", func(w *events.StateWrite) { w.Op = "merge" }},
		{"delete with a value", func(w *events.StateWrite) { w.Op = events.StateDelete }},
	}
	for _, tt := range tests {
		w := ok
		tt.edit(&w)
		require.ErrorIs(t, w.Check(), events.ErrInvalidEvent, tt.name)
	}
}

func TestParseFlowSubjects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{events.StateSubject("q1"), events.ChainSubject("q1")} {
		ps, err := events.ParseSubject(s)
		require.NoError(t, err, s)
		require.Equal(t, "q1", ps.Key)
	}
	_, err := events.ParseSubject("qtasks.state.a.b")
	require.Error(t, err)
}
