// Package flock takes exclusive locks on files, so that two processes never
// write the same store: the embedded NATS server's directory, a projection
// database. A lock is held until Release or the death of the process.
package flock

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// ErrLocked is returned by Lock when another holder has the lock.
var ErrLocked = errors.New("locked by another process")

// Lock is a lock taken by Acquire.
type Lock struct {
	f *os.File
}

// Acquire takes the lock on path (created if missing) and writes this
// process's id into it, for the message a second process prints. It fails
// at once, wrapping ErrLocked, when another holder has it.
func Acquire(path string) (*Lock, error) {
	f, err := acquire(path)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Holder is the process id the holder of path's lock wrote, "" if unknown.
func Holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 32 {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Release gives the lock up.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	return release(f)
}
