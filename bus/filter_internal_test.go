package bus

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A reader asks by the subjects events have alone; the server is asked for
// the phase messages that may hold matching facts, and no more.
func TestLogFilter(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		subjects, server []string
	}{
		{nil, nil},
		{[]string{"qtasks.dead.>"}, []string{"qtasks.dead.>"}},
		{[]string{"qtasks.trigger.>"}, []string{"qtasks.trigger.>", "qtasks.phase.>"}},
		{[]string{"qtasks.trigger.storage_get.*"}, []string{"qtasks.trigger.storage_get.*", "qtasks.phase.>"}},
		// One queue's facts: that queue's phase messages.
		{
			[]string{"qtasks.trigger.storage_get.q1", "qtasks.trigger.broker_get.q2"},
			[]string{"qtasks.trigger.storage_get.q1", "qtasks.trigger.broker_get.q2", "qtasks.phase.*.q1", "qtasks.phase.*.q2"},
		},
		// Lifecycle facts always travel alone: no phase message.
		{[]string{"qtasks.trigger.storage_remove_finished_task.q1"}, []string{"qtasks.trigger.storage_remove_finished_task.q1"}},
		{[]string{"qtasks.trigger.storage_add.*"}, []string{"qtasks.trigger.storage_add.*"}},
		// Filters that cover the phase subjects read them already.
		{[]string{"qtasks.>"}, []string{"qtasks.>"}},
		{[]string{">"}, []string{">"}},
		// A partial overlap: everything, filtered here.
		{[]string{"qtasks.*.storage_get.default"}, nil},
	} {
		require.Equal(t, c.server, newLogFilter(c.subjects).server, "%v", c.subjects)
	}
	require.True(t, subjectMatch("qtasks.trigger.a.b", "qtasks.trigger.*.b"))
	require.True(t, subjectMatch("qtasks.trigger.a.b", "qtasks.>"))
	require.False(t, subjectMatch("qtasks.trigger.a", "qtasks.trigger.*.b"))
	require.False(t, subjectMatch("qtasks.trigger.a.b.c", "qtasks.trigger.*.b"))
	require.True(t, subjectsOverlap("qtasks.*.x.y", "qtasks.phase.>"))
	require.False(t, subjectsOverlap("qtasks.trigger.>", "qtasks.phase.>"))
}
