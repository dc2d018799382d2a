package projections

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
)

// The WAL is folded into the database file on a connection and a goroutine
// of their own, not by the writer. SQLite's automatic checkpoint runs in
// the commit that crosses wal_autocheckpoint pages, on the committing
// connection: it copies the pages and, with synchronous=NORMAL, waits for
// two fsyncs. Measured on the apply benchmark, that was a third of the
// writer's wall time (21 µs an event against 12 µs without checkpoints),
// time in which the projector applied nothing. A checkpoint on another
// connection runs beside the writer: WAL lets readers and a checkpointer
// work while the one writer appends.
//
// The writer asks for a checkpoint every few thousand events (about the
// thousand pages of SQLite's default automatic checkpoint, at the rows an
// event writes) or every few dozen commits (small commits write more pages
// an event); asks made while one runs are merged into the next. Asking
// after every commit made the checkpointer copy the last pages of each
// table again for each commit: 15% more CPU for the process. The writer connection keeps an automatic checkpoint at
// writerAutoCheckpoint pages, far above what the checkpointer lets the WAL
// grow to, so that the WAL stays bounded should the checkpointer fail.

// writerAutoCheckpoint is the writer connection's wal_autocheckpoint, in
// pages (32 MiB of 4 KiB pages).
const writerAutoCheckpoint = 8192

const (
	checkpointEvents  = 4000
	checkpointCommits = 64
)

type checkpointer struct {
	db   *sql.DB
	log  *slog.Logger
	kick chan struct{}
	// Events and commits since the last request; committed runs on the
	// writer connection, one Apply at a time.
	events, commits int
	quit            chan struct{}
	done            chan struct{}
	once            sync.Once
}

// startCheckpointer starts the checkpoints of the database that dsn opens
// for writing.
func startCheckpointer(dsn string, log *slog.Logger) (*checkpointer, error) {
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	c := &checkpointer{db: db, log: log, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c, nil
}

// committed tells of a commit of n events; every checkpointEvents events
// or checkpointCommits commits, it asks for a checkpoint. It never waits.
func (c *checkpointer) committed(n int) {
	c.events += n
	c.commits++
	if c.events < checkpointEvents && c.commits < checkpointCommits {
		return
	}
	c.events, c.commits = 0, 0
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.quit:
			return
		case <-c.kick:
		}
		// PASSIVE: copy what no reader still needs, never wait for the
		// writer or the readers.
		if _, err := c.db.ExecContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
			c.log.Warn("checkpointing the WAL", "err", err)
		}
	}
}

// stop ends the checkpoints (the one running, if any, completes) and
// closes the connection. It is idempotent.
func (c *checkpointer) stop() error {
	var err error
	c.once.Do(func() {
		close(c.quit)
		<-c.done
		err = c.db.Close()
	})
	return err
}
