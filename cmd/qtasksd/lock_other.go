//go:build !unix

package main

import (
	"errors"
	"fmt"
	"os"
)

// lockDataDir creates dir's lock file exclusively; without flock a stale
// one left by a crash must be removed by hand. The embedded server does not
// lock its store itself, and two servers writing one JetStream directory
// damage it.
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dataDirLock(dir), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("data directory %s is in use by another qtasksd (or one that crashed: then remove %s)", dir, dataDirLock(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("locking the data directory: %w", err)
	}
	return f, nil
}
