package projections_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// A submission answered as a duplicate, and one refused as a conflict,
// are listed with the task's actions, live and rebuilt alike.
func TestDuplicateDecisionsProjected(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	app := newApp(t, b)
	ctx := ctxFor(t)
	key := &executor.SubmitOptions{IdempotencyKey: "invoice-3"}
	first, err := app.Submit(ctx, "add", addArgs{A: 1}, key)
	require.NoError(t, err)
	r, err := app.SubmitOne(ctx, "add", addArgs{A: 1}, key)
	require.NoError(t, err)
	require.True(t, r.Duplicate)
	_, err = app.Submit(ctx, "add", addArgs{A: 2}, key)
	require.ErrorIs(t, err, executor.ErrKeyConflict)

	require.NoError(t, p.WaitFor(ctx, logEnd(t, b)))
	live := openDB(t, path, true)
	acts, err := live.TaskActions(ctx, first.ID)
	require.NoError(t, err)
	require.Len(t, acts, 2)
	require.Equal(t, events.DecisionDuplicate, acts[0].Action)
	require.Equal(t, "submission with key invoice-3 answered with this task (new)", acts[0].Reason)
	require.Equal(t, events.DecisionConflict, acts[1].Action)
	require.Equal(t, "submission with key invoice-3 refused: kw differ", acts[1].Reason)
	require.Equal(t, "qtasks/"+app.NodeID(), acts[1].By)
	requireEqual(t, live, build(t, b, 0))
}
