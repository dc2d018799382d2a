//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockDataDir takes an exclusive advisory lock on dir's lock file, held
// until the returned file is closed or the process dies. The embedded
// server does not lock its store itself, and two servers writing one
// JetStream directory damage it.
func lockDataDir(dir string) (*os.File, error) {
	path := dataDirLock(dir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking the data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errDataDirInUse(dir, f)
		}
		return nil, fmt.Errorf("locking the data directory: %w", err)
	}
	// The pid is for the message a second qtasksd prints, nothing more.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func errDataDirInUse(dir string, f *os.File) error {
	var b [32]byte
	n, _ := f.ReadAt(b[:], 0)
	if pid := strings.TrimSpace(string(b[:n])); pid != "" {
		return fmt.Errorf("data directory %s is in use by another qtasksd (pid %s); stop it, or give this one its own --data-dir", dir, pid)
	}
	return fmt.Errorf("data directory %s is in use by another qtasksd; stop it, or give this one its own --data-dir", dir)
}
