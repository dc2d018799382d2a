package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// The triggers observer grants name, each once; mutators' and global
// observers' grants name none.
func TestGrantedObserverTriggers(t *testing.T) {
	users := []bus.User{
		{Name: "admin"},
		{Name: "audit", Grant: &events.PluginGrant{Mode: events.ModeObserver, Triggers: []string{events.StorageGet, events.WorkerAdd}}},
		{Name: "watch", Grant: &events.PluginGrant{Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}},
		{Name: "all", Grant: &events.PluginGrant{Mode: events.ModeObserver}},
		{Name: "mut", Grant: &events.PluginGrant{Mode: events.ModeMutator, Triggers: []string{events.BrokerGet}}},
	}
	require.Equal(t, []string{events.StorageGet, events.WorkerAdd}, bus.GrantedObserverTriggers(users))
	require.Empty(t, bus.GrantedObserverTriggers(nil))
}

// TravelsAlone: lifecycle triggers, Config.AloneTriggers, and the
// triggers of registered observers that do not read batches.
func TestTravelsAlone(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, &bus.Config{AloneTriggers: []string{events.WorkerAdd}})
	require.True(t, b.TravelsAlone(events.StorageUpdate), "lifecycle")
	require.True(t, b.TravelsAlone(events.WorkerAdd), "AloneTriggers")
	require.False(t, b.TravelsAlone(events.StorageGet))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := b.Registry().Register(ctx, events.PluginInfo{Name: "m", Version: "1", Mode: events.ModeMutator, Triggers: []string{events.StorageGet}})
	require.NoError(t, err)
	require.False(t, b.TravelsAlone(events.StorageGet), "a mutator reads no facts")
	_, err = b.Registry().Register(ctx, events.PluginInfo{Name: "o", Version: "1", Mode: events.ModeObserver, Triggers: []string{events.StorageGet}})
	require.NoError(t, err)
	require.True(t, b.TravelsAlone(events.StorageGet), "an observer that does not read batches")
	require.False(t, b.TravelsAlone(events.BrokerGet))
}
