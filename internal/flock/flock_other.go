//go:build !unix

package flock

import (
	"errors"
	"fmt"
	"os"
)

// acquire creates path exclusively: without flock, a lock file left by a
// crash must be removed by hand, and the error says so.
func acquire(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%s exists (if its holder crashed, remove it): %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return f, nil
}

func release(f *os.File) error {
	return errors.Join(f.Close(), os.Remove(f.Name()))
}
