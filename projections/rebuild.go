package projections

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/qtasks/qtasks-go/bus"
)

// BuildConfig configures Build and Rebuild. The zero value builds up to the
// end of the log as it is when the build starts.
type BuildConfig struct {
	// To is the last stream sequence to apply. Defaults to the log's last
	// sequence when the build starts.
	To uint64
	// BatchSize bounds the events of one transaction. Defaults to
	// DefaultBatchSize.
	BatchSize int
	// Progress, when set, is called after each batch with the last applied
	// sequence and the sequence the build goes to.
	Progress func(applied, to uint64)
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
}

// BuildStats says what a build did.
type BuildStats struct {
	// Path of the database built (for Rebuild, the generation file the
	// path now points to).
	Path     string
	Events   int
	Rejected int
	LastSeq  uint64
	Duration time.Duration
}

// Build writes a new projection database at path (which must not exist)
// from stream sequence 1, with the same Apply the projector uses, so that it
// equals a live projection at the same sequence. It holds one batch in
// memory at a time.
func Build(ctx context.Context, b *bus.Bus, path string, cfg *BuildConfig) (BuildStats, error) {
	var c BuildConfig
	if cfg != nil {
		c = *cfg
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	st := BuildStats{Path: path}
	start := time.Now()
	if _, err := os.Lstat(path); err == nil {
		return st, fmt.Errorf("building projection: %s already exists", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("building projection: %w", err)
	}
	db, err := Open(ctx, path, &Options{Logger: c.Logger, fast: true})
	if err != nil {
		return st, fmt.Errorf("building projection: %w", err)
	}
	fail := func(err error) (BuildStats, error) {
		_ = db.Close()
		removeDB(path)
		return st, fmt.Errorf("building projection %s: %w", path, err)
	}
	info, err := b.EventStream().Info(ctx)
	if err != nil {
		return fail(err)
	}
	if err := db.setLogID(ctx, logIdentity(info)); err != nil {
		return fail(err)
	}
	to := c.To
	if to == 0 {
		to = info.State.LastSeq
	}
	// One goroutine reads and prepares, this one writes: a batch in
	// flight and one being filled, no more.
	batches := make(chan []Prepared, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var readErr error
	go func() {
		defer close(batches)
		batch := make([]Prepared, 0, c.BatchSize)
		readErr = readLog(rctx, b, to, func(s bus.Stored) error {
			batch = append(batch, Prepare(s))
			// A message goes whole into one batch (Apply).
			if len(batch) >= c.BatchSize && s.Last() {
				select {
				case batches <- batch:
				case <-rctx.Done():
					return context.Cause(rctx)
				}
				batch = make([]Prepared, 0, c.BatchSize)
			}
			return nil
		})
		if readErr == nil && len(batch) > 0 {
			batches <- batch
		}
	}()
	for batch := range batches {
		as, err := db.ApplyPrepared(ctx, batch)
		if err != nil {
			cancel()
			for range batches { // let the reader finish
			}
			return fail(err)
		}
		st.Events += as.Applied
		st.Rejected += as.Rejected
		st.LastSeq = as.LastSeq
		if c.Progress != nil {
			c.Progress(st.LastSeq, to)
		}
		if err := ctx.Err(); err != nil {
			cancel()
			for range batches {
			}
			return fail(context.Cause(ctx))
		}
	}
	if readErr != nil {
		return fail(readErr)
	}
	// Leave a self-contained file: WAL folded in, no side files. A
	// checkpoint running on the checkpointer's connection would make this
	// one return busy without folding the WAL.
	if err := db.ckpt.stop(); err != nil {
		return fail(err)
	}
	if _, err := db.w.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fail(err)
	}
	if err := db.Close(); err != nil {
		removeDB(path)
		return st, fmt.Errorf("building projection %s: %w", path, err)
	}
	if err := syncFile(path); err != nil {
		removeDB(path)
		return st, fmt.Errorf("building projection %s: %w", path, err)
	}
	st.Duration = time.Since(start)
	return st, nil
}

// readLog calls fn for every event of the log from sequence 1 up to the
// message at to, in order (bus.ReadLog: nothing accumulates in memory).
func readLog(ctx context.Context, b *bus.Bus, to uint64, fn func(bus.Stored) error) error {
	if to == 0 {
		return nil
	}
	err := b.ReadLog(ctx, 1, nil, func(s bus.Stored) error {
		if s.Seq > to {
			return errReadDone
		}
		return fn(s)
	})
	if errors.Is(err, errReadDone) {
		return nil
	}
	return err
}

// errReadDone ends a read of the log at the sequence a build goes to.
var errReadDone = errors.New("read up to the end of the build")

// Rebuild builds a new projection from sequence 1 next to path, while the
// database at path (if any) still serves reads and its projector goes on,
// then swaps it in atomically (see Swap). A projector of path notices the
// swap, reopens and catches up from where the rebuild stopped.
func Rebuild(ctx context.Context, b *bus.Bus, path string, cfg *BuildConfig) (BuildStats, error) {
	if err := CheckPath(ctx, path); err != nil {
		return BuildStats{}, err // the swap would replace what is there
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return BuildStats{}, fmt.Errorf("rebuilding projection: %w", err)
	}
	gen, err := generationName(path)
	if err != nil {
		return BuildStats{}, fmt.Errorf("rebuilding projection: %w", err)
	}
	st, err := Build(ctx, b, gen, cfg)
	if err != nil {
		return st, err
	}
	if err := Swap(path, gen); err != nil {
		removeDB(gen)
		return st, err
	}
	return st, nil
}

// generationName is a new file name beside path for a rebuilt database.
func generationName(path string) (string, error) {
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return path + ".gen-" + hex.EncodeToString(r[:]), nil
}

// Swap makes path name the database file built, atomically: path becomes a
// symbolic link to built (which must be in the same directory), put in
// place by a rename. The file path named before is removed.
//
// Why a link: SQLite names a database's WAL and shared-memory files after
// the file it opened, resolving links. Renaming one database file over
// another that some process still has open would let that process's WAL
// (named after path) be applied to, or deleted from under, the new file.
// With each generation in its own file, old and new never share side files;
// connections to the old generation finish on it undisturbed.
func Swap(path, built string) error {
	dir := filepath.Dir(path)
	if filepath.Dir(built) != dir {
		return fmt.Errorf("swapping projection: %s is not in the directory of %s", built, path)
	}
	bfi, err := os.Stat(built)
	if err != nil {
		return fmt.Errorf("swapping projection: %w", err)
	}
	// What path is now: a link to an older generation, a plain file, or
	// nothing.
	var oldGen string
	plain := false
	if lfi, err := os.Lstat(path); err == nil {
		if lfi.Mode()&os.ModeSymlink != 0 {
			if target, err := filepath.EvalSymlinks(path); err == nil {
				if tfi, err := os.Stat(target); err == nil && !os.SameFile(tfi, bfi) {
					oldGen = target
				}
			}
		} else {
			plain = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("swapping projection: %w", err)
	}
	tmp, err := generationName(filepath.Join(dir, "."+filepath.Base(path)+".swap"))
	if err != nil {
		return fmt.Errorf("swapping projection: %w", err)
	}
	if err := os.Symlink(filepath.Base(built), tmp); err != nil {
		return fmt.Errorf("swapping projection: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("swapping projection: %w", err)
	}
	_ = syncDir(dir)
	switch {
	case oldGen != "":
		removeDB(oldGen)
	case plain:
		// The plain file is gone with the rename; its side files are named
		// after path, which no new connection uses any more.
		for _, s := range []string{"-wal", "-shm", "-journal"} {
			_ = os.Remove(path + s)
		}
	}
	return nil
}

// removeDB removes a database file and its side files.
func removeDB(path string) {
	for _, s := range []string{"", "-wal", "-shm", "-journal"} {
		_ = os.Remove(path + s)
	}
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}
