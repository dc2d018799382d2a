package flock_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/internal/flock"
)

// A lock excludes a second holder, in this process or another, until it is
// released; the holder's pid is readable meanwhile.
func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := flock.Acquire(path)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(os.Getpid()), flock.Holder(path))

	_, err = flock.Acquire(path)
	require.ErrorIs(t, err, flock.ErrLocked)
	if _, err := exec.LookPath("flock"); err == nil {
		// flock(1) in another process: -n fails at once when held.
		require.Error(t, exec.CommandContext(t.Context(), "flock", "-n", path, "true").Run())
	}

	require.NoError(t, l.Release())
	require.NoError(t, l.Release(), "a second release is a no-op")
	l2, err := flock.Acquire(path)
	require.NoError(t, err)
	require.NoError(t, l2.Release())
}
