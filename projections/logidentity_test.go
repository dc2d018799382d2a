package projections_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/executor"
)

// A projection is bound to the log it projects: pointed at another log
// (two data directories sharing one --db), the projector rebuilds it from
// that log, even when the other log is longer. Before, it noticed only a
// projection ahead of the log, and applied the longer log's events on top
// of the other's from the wrong sequence.
func TestProjectionOfAnotherLogIsRebuilt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "shared.db")
	run := func(tasks int) {
		b := bustest.Open(t, nil)
		app := newApp(t, b)
		executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
		startApp(t, app)
		for i := range tasks {
			submitAndWait(t, app, "add", addArgs{A: i, B: 1}, nil)
		}
		p := startProjector(t, b, path, nil)
		require.NoError(t, p.CatchUp(ctxFor(t)))
		require.NoError(t, p.Stop(context.Background()))
		requireEqual(t, openDB(t, path, true), build(t, b, 0))
	}
	run(1)
	run(3) // a longer log
}
