package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"

	"github.com/mattn/go-sqlite3"
)

// ErrNotProjection is returned for a --db path that names something other
// than a projection database.
var ErrNotProjection = errors.New("not a qtasks projection database")

// CheckProjectionPath returns nil when path may be written as a projection:
// nothing is there yet, or an empty file, or an SQLite database with the
// table projections keep their schema version in. Anything else (a
// directory, another program's database, a text file) is ErrNotProjection:
// opening it for writing would add a projection's tables to it, and a
// rebuild would replace it, so a mistyped --db would destroy what it names.
func CheckProjectionPath(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
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
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n)
	var sqe sqlite3.Error
	switch {
	case errors.As(err, &sqe) && sqe.Code == sqlite3.ErrNotADB:
		return fmt.Errorf("%s is not an SQLite database: %w; left untouched", path, ErrNotProjection)
	case err != nil:
		return fmt.Errorf("reading %s: %w", path, err)
	case n == 0:
		return fmt.Errorf("%s is an SQLite database without a schema_migrations table: %w; left untouched", path, ErrNotProjection)
	}
	return nil
}
