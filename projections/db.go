package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	_ "github.com/mattn/go-sqlite3" // the database/sql driver "sqlite3"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors of DB.
var (
	// ErrNotFound is returned by queries for a task that is not in the
	// projection.
	ErrNotFound = errors.New("not found")
	// ErrNoDatabase is returned when a database opened read-only does not
	// exist.
	ErrNoDatabase = errors.New("no projection database")
)

// DefaultPath is where qtasksd keeps its projection.
const DefaultPath = "qtasks-data/qtasks.db"

// Options configure Open. The zero value opens for writing.
type Options struct {
	// ReadOnly opens an existing database for queries only: it is never
	// created or migrated, and an older schema is ErrSchemaOutdated.
	ReadOnly bool
	// Logger defaults to a discarding logger.
	Logger *slog.Logger

	// fast turns off fsync on commit: for a database being built from
	// scratch, which is thrown away unless the build completes.
	fast bool
}

// DB is a projection database. Writes go through one connection (SQLite
// has one writer; mattn/go-sqlite3 with _txlock=immediate takes the write
// lock at BEGIN, so a transaction never fails half way on SQLITE_BUSY);
// queries use a small pool of read connections, which WAL lets run beside
// the writer. It is safe for concurrent use.
type DB struct {
	path string
	w    *sql.DB // nil when read-only
	r    *sql.DB
	log  *slog.Logger
	// file identifies the file opened (path may be a symbolic link that a
	// rebuild swaps).
	file os.FileInfo

	ap   *applier      // the writer's prepared statements, built on first Apply
	ckpt *checkpointer // nil when read-only
	// stmts are the readers' prepared statements, by query text
	// (prepared).
	stmts sync.Map
	// shadowCounts holds, by shadow and live plugin, what each fact of
	// RecentShadowStats's last window added (RecentShadowStats).
	shadowCounts struct {
		sync.Mutex
		m map[[2]string]map[int64]shadowCounts
	}
}

// DSN returns the go-sqlite3 data source name of the database at path: WAL,
// a 5 s busy timeout, IMMEDIATE transactions, foreign keys, and
// synchronous=NORMAL (durable across crashes of the process; a power loss
// can lose the last commits, which the projector then applies again, since
// its position is stored in the same transactions).
func DSN(path string) string {
	return "file:" + escapePath(path) + "?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate&_foreign_keys=on&_synchronous=NORMAL"
}

func readDSN(path string) string {
	return "file:" + escapePath(path) + "?mode=ro&_busy_timeout=5000&_foreign_keys=on"
}

func escapePath(p string) string {
	// The URI form needs ? and # escaped; keep the rest readable.
	return (&url.URL{Path: p}).EscapedPath()
}

// Open opens (creating and migrating, unless opts.ReadOnly) the projection
// database at path. opts may be nil.
func Open(ctx context.Context, path string, opts *Options) (*DB, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d := &DB{path: path, log: o.Logger.With("component", "projection", "db", path), ap: newApplier()}
	if o.ReadOnly {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s", ErrNoDatabase, path)
		}
	} else {
		if err := CheckPath(ctx, path); err != nil {
			return nil, err
		}
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("opening projection %s: %w", path, err)
			}
		}
	}
	if !o.ReadOnly {
		dsn := DSN(path)
		if o.fast {
			dsn = "file:" + escapePath(path) + "?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate&_foreign_keys=on&_synchronous=OFF"
		}
		w, err := sql.Open("sqlite3", dsn)
		if err != nil {
			return nil, fmt.Errorf("opening projection %s: %w", path, err)
		}
		w.SetMaxOpenConns(1)
		w.SetMaxIdleConns(1)
		w.SetConnMaxLifetime(0)
		w.SetConnMaxIdleTime(0)
		d.w = w
		if _, err := migrate(ctx, w, SchemaVersion); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("opening projection %s: %w", path, err)
		}
		if d.ckpt, err = startCheckpointer(dsn, d.log); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("opening projection %s: %w", path, err)
		}
	}
	r, err := sql.Open("sqlite3", readDSN(path))
	if err != nil {
		d.closeConns()
		return nil, fmt.Errorf("opening projection %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	d.r = r
	v, err := schemaVersion(ctx, r)
	if err != nil {
		d.closeConns()
		return nil, fmt.Errorf("opening projection %s: %w", path, err)
	}
	switch {
	case v > SchemaVersion:
		d.closeConns()
		return nil, fmt.Errorf("opening projection %s: %w: version %d, this program knows up to %d", path, ErrSchemaTooNew, v, SchemaVersion)
	case v < SchemaVersion:
		d.closeConns()
		return nil, fmt.Errorf("opening projection %s: %w: version %d, current %d (open it for writing to migrate)", path, ErrSchemaOutdated, v, SchemaVersion)
	}
	fi, err := os.Stat(path)
	if err != nil {
		d.closeConns()
		return nil, fmt.Errorf("opening projection %s: %w", path, err)
	}
	d.file = fi
	return d, nil
}

// Path is the path the database was opened at.
func (d *DB) Path() string { return d.path }

// Close closes the database.
func (d *DB) Close() error {
	var errs []error
	// Readers and the checkpointer first: the writer's connection, closed
	// last, then folds the WAL into the database and removes the side
	// files.
	d.closeStmts()
	if d.r != nil {
		errs = append(errs, d.r.Close())
	}
	if d.ckpt != nil {
		errs = append(errs, d.ckpt.stop())
	}
	if d.ap != nil && d.w != nil {
		// Finalize the statements on the writer connection before closing
		// it (it is idle: no Apply runs during Close).
		if conn, err := d.w.Conn(context.Background()); err == nil {
			errs = append(errs, conn.Raw(func(any) error { return d.ap.close() }), conn.Close())
		}
	}
	if d.w != nil {
		errs = append(errs, d.w.Close())
	}
	return errors.Join(errs...)
}

func (d *DB) closeConns() {
	if d.ckpt != nil {
		_ = d.ckpt.stop()
	}
	if d.w != nil {
		_ = d.w.Close()
	}
	if d.r != nil {
		_ = d.r.Close()
	}
}

// swapped reports whether path now names another file than the one this DB
// opened: a rebuild swapped it.
func (d *DB) swapped() bool {
	fi, err := os.Stat(d.path)
	if err != nil {
		return false
	}
	return !os.SameFile(fi, d.file)
}

// metaLogID is the meta key of the identity of the event log a projection
// projects: the stream's creation time in Unix nanoseconds. Another data
// directory's stream, or one deleted and created anew, has another; a
// projection is bound to its log by it (the projector rebuilds one that
// projects another log).
const metaLogID = "log_created"

// logIdentity is the identity of b's event log, as metaLogID records it.
func logIdentity(info *jetstream.StreamInfo) int64 { return info.Created.UnixNano() }

// logID returns the identity of the log the projection was built from; ok
// is false when none is recorded (a new projection, or one written before
// identities were).
func (d *DB) logID(ctx context.Context) (id int64, ok bool, err error) {
	err = d.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaLogID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the projection's log identity: %w", err)
	}
	return id, true, nil
}

// setLogID records the identity of the log the projection projects.
func (d *DB) setLogID(ctx context.Context, id int64) error {
	if _, err := d.w.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, metaLogID, id); err != nil {
		return fmt.Errorf("recording the projection's log identity: %w", err)
	}
	return nil
}

// LastSeq is the stream sequence of the last event applied.
func (d *DB) LastSeq(ctx context.Context) (uint64, error) {
	return lastSeq(ctx, d.r)
}

// SQLite's integers are int64; stream sequences and KV revisions are
// uint64. JetStream's stay far below 2^63 (a million messages a second
// would take 292,000 years to get there), so both conversions are exact:
// seqToSQL and seqFromSQL are the one place that says so.

// seqToSQL is a sequence or revision as SQLite stores it.
func seqToSQL(n uint64) int64 { return int64(n) } //nolint:gosec // G115: see above

// seqFromSQL is a sequence or revision that seqToSQL stored.
func seqFromSQL(n int64) uint64 { return uint64(n) } //nolint:gosec // G115: see above

// rowQuerier is what reads one row: *sql.DB, *sql.Conn and *sql.Tx.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func lastSeq(ctx context.Context, q rowQuerier) (uint64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'last_seq'`).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading last applied sequence: %w", err)
	}
	return seqFromSQL(n), nil
}
