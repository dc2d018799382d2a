//go:build !unix

package projections

import (
	"errors"
	"fmt"
	"os"
)

// ErrLocked is returned when another projector holds the database.
var ErrLocked = errors.New("another projector is writing this database")

// lockFile creates path exclusively; without flock a stale lock file from a
// crashed projector must be removed by hand.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%w (%s exists)", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return f, nil
}

// unlockFile releases a lock taken by lockFile.
func unlockFile(f *os.File) error {
	err := f.Close()
	return errors.Join(err, os.Remove(f.Name()))
}
