package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/projections"
)

// A submission that fails at or after storage_add leaves no task in the
// projection: its storage_add fact is held until the task is queued, and
// written as failed when it is not. (The fault suite found tasks shown new
// for ever: the fact was out before the record or the enqueue failed.) A
// retry with the same idempotency key records the task as usual.
func TestNotQueuedIsNoTaskOfTheProjection(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := newApp(t, b, nil)
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, app)
	var refuse atomic.Bool
	refuse.Store(true)
	ctx := ctxFor(t)
	_, err := plugins.Local(ctx, b, plugins.Spec{
		Name: "gate", Version: "1", Triggers: []string{events.StorageAdd}, Policy: events.PolicyFail,
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			if refuse.Load() {
				return nil, errors.New("closed")
			}
			return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
		}),
	})
	require.NoError(t, err)

	_, err = app.Submit(ctx, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: "order-9"})
	require.Error(t, err)
	id := executor.KeyTaskID("order-9")
	facts := bustest.EventsOf(t, b, id, events.FactSubject(events.StorageAdd, executor.DefaultQueue))
	require.Len(t, facts, 1)
	var f events.Fact
	require.NoError(t, json.Unmarshal(facts[0].Event.Data, &f))
	require.Contains(t, f.Failed, "closed", "the fact says the submission failed")

	path := filepath.Join(t.TempDir(), "p.db")
	_, err = projections.Build(ctx, b, path, nil)
	require.NoError(t, err)
	db, err := projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	require.NoError(t, err)
	_, err = db.Task(ctx, id)
	require.ErrorIs(t, err, projections.ErrNotFound, "a task never queued is no task of the projection")
	require.NoError(t, db.Close())

	refuse.Store(false)
	task := submit(t, app, "add", addArgs{A: 1, B: 2}, &executor.SubmitOptions{IdempotencyKey: "order-9"})
	require.Equal(t, id, task.ID)
	done, err := app.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, done.Status)
	path = filepath.Join(t.TempDir(), "p2.db")
	_, err = projections.Build(ctx, b, path, nil)
	require.NoError(t, err)
	db, err = projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	got, err := db.Task(ctx, id)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, got.Status)
}
