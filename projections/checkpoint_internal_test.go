package projections

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// The WAL is folded into the database file by the checkpointer, not by the
// writer's commits: the writer's automatic checkpoint is set far above what
// a few thousand events write, and yet the file grows once they are
// applied.
func TestCheckpointer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	d, err := Open(ctx, path, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	fi, err := os.Stat(path)
	require.NoError(t, err)
	before := fi.Size()

	recorded := projectionstest.ReadFile(t, projectionstest.ScenarioLog())
	var batch []bus.Stored
	var seq uint64
	for m := range projectionstest.Copies(recorded, checkpointEvents/len(recorded)+2, 0) {
		seq++
		batch = append(batch, m.Stored(seq)...)
		if len(batch) == DefaultBatchSize {
			_, err := d.Apply(ctx, batch)
			require.NoError(t, err)
			batch = batch[:0]
		}
	}
	_, err = d.Apply(ctx, batch)
	require.NoError(t, err)
	require.Greater(t, seq, uint64(checkpointEvents))

	var auto int
	require.NoError(t, d.w.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&auto))
	require.Equal(t, writerAutoCheckpoint, auto, "the writer connection's automatic checkpoint")
	bustest.WaitFor(t, 30*time.Second, "the checkpointer to fold the WAL into the database file", func() bool {
		fi, err := os.Stat(path)
		return err == nil && fi.Size() > before
	})
	require.NoError(t, d.Close())
}
