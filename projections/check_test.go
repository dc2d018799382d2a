package projections_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/projections"
)

// Open for writing and Rebuild refuse a path that holds something other
// than a projection, and leave it as it was: a mistyped path must not get a
// projection's tables added, or be replaced by a rebuild.
func TestNotProjectionRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(notes, []byte("keep me\n"), 0o600))
	other := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite3", "file:"+other)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)`)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	before, err := os.ReadFile(other)
	require.NoError(t, err)

	b := bustest.Open(t, nil)
	for _, path := range []string{notes, other, dir} {
		_, err := projections.Open(ctx, path, nil)
		require.ErrorIs(t, err, projections.ErrNotProjection, path)
		_, err = projections.Rebuild(ctx, b, path, nil)
		require.ErrorIs(t, err, projections.ErrNotProjection, path)
	}
	got, err := os.ReadFile(notes)
	require.NoError(t, err)
	require.Equal(t, "keep me\n", string(got))
	after, err := os.ReadFile(other)
	require.NoError(t, err)
	require.Equal(t, before, after)

	// A projection, a new path and an empty file are fine.
	for _, path := range []string{filepath.Join(dir, "new.db"), filepath.Join(dir, "empty.db")} {
		if filepath.Base(path) == "empty.db" {
			require.NoError(t, os.WriteFile(path, nil, 0o600))
		}
		p, err := projections.Open(ctx, path, nil)
		require.NoError(t, err)
		require.NoError(t, p.Close())
		p, err = projections.Open(ctx, path, nil)
		require.NoError(t, err, "reopening a projection")
		require.NoError(t, p.Close())
	}
}
