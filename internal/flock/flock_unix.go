//go:build unix

package flock

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

func acquire(path string) (*os.File, error) {
	// Readable by others: Holder reads the holder's pid from it, for a
	// message naming the process that holds the lock.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644) //nolint:gosec // G302: see above; the lock needs no secrecy
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return f, nil
}

// release closes the file, which drops the lock; the file stays, so that
// the next holder locks the same inode.
func release(f *os.File) error { return f.Close() }
