package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"syscall"
)

// ErrNotProjection is returned for a path that names something other than
// a projection database.
var ErrNotProjection = errors.New("not a qtasks projection database")

// CheckPath returns nil when path may be written as a projection:
// nothing is there yet, or an empty file, or an SQLite database with the
// table projections keep their schema version in. Anything else (a
// directory, another program's database, a text file) is ErrNotProjection:
// opening it for writing would add a projection's tables to it, and a
// rebuild would replace it, so a mistyped path would destroy what it names.
// Open (for writing) and Rebuild check their path with it.
func CheckPath(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s: a directory on its path is a file: %w", path, ErrNotProjection)
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("%s is a directory: %w", path, ErrNotProjection)
	case fi.Size() == 0:
		return nil
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file: %w", path, ErrNotProjection)
	}
	if ok, err := sqliteHeader(path); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%s is not an SQLite database: %w; left untouched", path, ErrNotProjection)
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n)
	switch {
	case err != nil:
		return fmt.Errorf("reading %s: %w", path, err)
	case n == 0:
		return fmt.Errorf("%s is an SQLite database without a schema_migrations table: %w; left untouched", path, ErrNotProjection)
	}
	return nil
}

// sqliteHeader reports whether the file at path starts as every SQLite 3
// database does.
func sqliteHeader(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	const magic = "SQLite format 3\x00"
	b := make([]byte, len(magic))
	if _, err := io.ReadFull(f, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return string(b) == magic, nil
}
