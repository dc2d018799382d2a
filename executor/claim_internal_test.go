package executor

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// The run's claim is sent at intake and waited for only before the run's
// first message leaves (firing.claimed). A claim that fails (here: the
// record moved on since the intake read, as when another delivery claimed
// the attempt) stops the run before any message with its run number is
// stored, and before its task function runs; the run reports errClaim, so
// that its task message is handed back after a pause.
func TestLostClaimStopsTheRun(t *testing.T) {
	t.Parallel()
	for name, mode := range map[string]bus.RecordMode{"all": bus.RecordAll, "lifecycle": bus.RecordLifecycle} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			b := bustest.Open(t, &bus.Config{Record: mode})
			app, err := New(b, &Config{AckWait: 5 * time.Second})
			require.NoError(t, err)
			var ran atomic.Bool
			MustRegister(app, "t", func(context.Context, struct{}) (int, error) {
				ran.Store(true)
				return 1, nil
			}, nil)

			now := time.Now().UTC()
			task := events.Task{
				ID: uuid.NewString(), Name: "t", Queue: DefaultQueue, Status: events.StatusNew, Attempt: 1,
				Args: []byte(`[]`), Kw: []byte(`{}`), CreatedAt: now, UpdatedAt: now,
			}
			rec, created, err := b.CreateTask(ctx, task)
			require.NoError(t, err)
			require.True(t, created)
			// Another writer moves the record on after the intake read.
			moved := task
			moved.UpdatedAt = now.Add(time.Millisecond)
			_, err = b.UpdateTask(ctx, moved, rec.Revision)
			require.NoError(t, err)

			w := &worker{a: app, ctl: newControls(DefaultQueue)}
			claim, run := w.claimRun(rec, task, 1)
			require.Equal(t, 1, run)
			err = w.run(ctx, task, claim, run, false)
			require.ErrorIs(t, err, errClaim)
			require.ErrorIs(t, err, bus.ErrConflict)
			require.False(t, ran.Load(), "the task function ran in a run whose claim failed")
			for _, s := range bustest.EventsOf(t, b, task.ID) {
				require.NotEqual(t, run, s.Event.Run, "%s of the unclaimed run stored at %d", s.Event.Type, s.Seq)
			}
			got, err := b.GetTaskLatest(ctx, task.ID)
			require.NoError(t, err)
			require.Equal(t, events.StatusNew, got.Task.Status, "the record as the other writer left it")
		})
	}
}
