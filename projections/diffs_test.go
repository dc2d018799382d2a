package projections_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/projections"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// A database of schema 7 (facts without their calls' diffs) migrates on
// open: migration 8 computes the diffs of the facts it holds as the
// projector computes them for new ones, so that the result is the fresh
// build's, row for row.
func TestMigrationBackfillsDiffs(t *testing.T) {
	t.Parallel()
	if *update {
		t.Skip("fixtures being rewritten")
	}
	b := bustest.Open(t, nil)
	projectionstest.Publish(t, b, projectionstest.All(projectionstest.ReadFile(t, logFixture)))
	fresh := build(t, b, 0)
	want := dumpBytes(t, fresh)

	path := filepath.Join(t.TempDir(), "v7.db")
	_, err := projections.Build(ctxFor(t), b, path, nil)
	require.NoError(t, err)
	raw, err := sql.Open("sqlite3", projections.DSN(path))
	require.NoError(t, err)
	ctx := ctxFor(t)
	var stored int
	require.NoError(t, raw.QueryRowContext(ctx, `SELECT count(*) FROM facts WHERE diffs IS NOT NULL`).Scan(&stored))
	require.Positive(t, stored, "the scenario's facts have diffs")
	// Back to schema 7.
	_, err = raw.ExecContext(ctx, `ALTER TABLE facts DROP COLUMN diffs; DELETE FROM schema_migrations WHERE version = 8`)
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	_, err = projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	require.ErrorIs(t, err, projections.ErrSchemaOutdated)
	migrated := openDB(t, path, false)
	require.Equal(t, string(want), string(dumpBytes(t, migrated)))
}
