package attack

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A plugin with its least rights has the server write on the control
// bucket's keys, which workers obey: the publish ack of one of its patches
// on the default queue's pause key, JetStream's account information on
// another queue's pause key, and a direct get's echo of a mark of its own
// making ("alice" cancelled a task) on a cancel key. Before, the watch
// decoded the ack into a zero mark and the default queue's worker paused
// (this test's task never ran), and the echo read as alice's cancel. A
// mark is taken only with its by and at and no other field, and never
// from an echo; a refused one leaves the worker as it was, and is logged.
func TestAttackControlEcho(t *testing.T) {
	t.Parallel()
	mallory := events.PluginInfo{Name: "mallory", Mode: events.ModeObserver, Triggers: []string{events.WorkerAdd}}
	e := integritySetup(t, mallory)
	executor.MustRegister(e.app, "victim", func(_ context.Context, _ struct{}) (string, error) { return "real", nil }, nil)
	integrityStart(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), integrityWait)
	defer cancel()
	nc := integrityPluginBus(t, e, mallory.Name).Conn()

	updates := make(chan bus.ControlUpdate, 16)
	ready, err := e.b.WatchControl(ctx, func(u bus.ControlUpdate) { updates <- u })
	require.NoError(t, err)
	<-ready

	kvForge(ctx, t, e.b, bus.BucketControl, "pause."+executor.DefaultQueue, func() {
		kvAck(t, nc, mallory.Name, kvKey(bus.BucketControl, "pause."+executor.DefaultQueue))
	})
	kvForge(ctx, t, e.b, bus.BucketControl, "pause.other", func() {
		kvAPIReply(t, nc, kvKey(bus.BucketControl, "pause.other"))
	})
	mark, err := json.Marshal(bus.Mark{Attempt: 1, By: "alice", Reason: "she never did this", At: time.Now()})
	require.NoError(t, err)
	kvForge(ctx, t, e.b, bus.BucketControl, "cancel.someone", func() {
		kvEchoValue(ctx, t, nc, mallory.Name, kvKey(bus.BucketControl, "cancel.someone"), mark)
	})
	// An operator's pause, after the forgeries: the watch has seen them
	// when it delivers this one.
	_, err = e.b.SetPause(ctx, "sentinel", bus.Mark{By: "op", At: time.Now()})
	require.NoError(t, err)
	for u := range updates {
		require.Equal(t, "sentinel", u.Pause, "a forged control entry was taken: %+v", u)
		break
	}

	// The default queue still runs tasks, and a reader of its pause is
	// told what the key holds is no mark.
	final := integrityRun(t, e, "victim", nil)
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)
	_, err = e.b.Paused(ctx, executor.DefaultQueue)
	require.ErrorContains(t, err, "not a control mark")
	_, err = e.b.Paused(ctx, "other")
	require.ErrorContains(t, err, "not a control mark")
	require.NoError(t, e.b.ClearCancel(ctx, "someone"))
	require.True(t, e.logs.has("WARN", "ignoring a control entry that is not a mark"))
	require.True(t, e.logs.has("WARN", "Nats-Stream"))
}
