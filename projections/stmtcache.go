package projections

import (
	"context"
	"database/sql"
	"fmt"
)

// prepared returns the readers' prepared statement of query q, preparing
// it on first use: the console's tasks page spent 7 % of its time
// preparing the same few statements again (BenchmarkConsole). The queries
// are built from a fixed set of clauses, so the cache is bounded (the
// tasks page: 2^7 filter combinations at most).
//
// A prepared statement stays prepared only if SQLite's planner did not
// look at a bound value: for "x = ?" beside an ORDER BY, and for
// "LIMIT ?", SQLite marks the parameter so that a new binding re-plans
// the statement, and go-sqlite3 clears the bindings before every
// execution, so such a statement was parsed and planned again on every
// call (BenchmarkConsole, docs/ARCHITECTURE.md "The operator console").
// Such parameters are written +?: the same comparison (a parameter has
// no affinity, with or without the plus), which the planner uses the
// index for but does not look into.
func (d *DB) prepared(ctx context.Context, q string) (*sql.Stmt, error) {
	if s, ok := d.stmts.Load(q); ok {
		return s.(*sql.Stmt), nil
	}
	s, err := d.r.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("preparing a query: %w", err)
	}
	if prev, loaded := d.stmts.LoadOrStore(q, s); loaded {
		_ = s.Close() //nolint:sqlclosecheck // another call cached its own first: this one is not kept
		return prev.(*sql.Stmt), nil
	}
	return s, nil
}

// closeStmts closes the prepared statements.
func (d *DB) closeStmts() {
	d.stmts.Range(func(k, v any) bool {
		_ = v.(*sql.Stmt).Close()
		d.stmts.Delete(k)
		return true
	})
}

// query runs q as a prepared statement (prepared): for the reads a page
// makes on every request with a fixed text.
func (d *DB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	s, err := d.prepared(ctx, q) //nolint:sqlclosecheck // cached: closeStmts closes it with the DB
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}
