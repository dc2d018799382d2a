package events_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
)

// The executor's dead letters go to qtasks.dead.executor: a plugin named
// "executor" would be granted the right to write there, so the name is
// refused (and a users file naming such a plugin does not load).
func TestCheckPluginReservesExecutor(t *testing.T) {
	t.Parallel()
	p := events.PluginInfo{
		Name: events.ExecutorDeadLetters, Mode: events.ModeMutator, TimeoutMS: 1000,
		Triggers: []string{events.TaskExecutorRunTask},
	}
	err := events.CheckPlugin(p.Name, p, 0)
	require.ErrorIs(t, err, events.ErrInvalidPlugin)
	var ipe *events.InvalidPluginError
	require.ErrorAs(t, err, &ipe)
	require.Equal(t, events.InvalidName, ipe.Reason)
	p.Name = "executor2"
	require.NoError(t, events.CheckPlugin(p.Name, p, 0))
}
