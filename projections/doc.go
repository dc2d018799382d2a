// Package projections is qtasks' SQLite read model: task state, the trigger
// history, every plugin call, field blame and the events that were rejected,
// all derived from the event log (the QTASKS_EVENTS stream) and nothing else.
//
// The database can be thrown away and rebuilt from stream sequence 1 at any
// time; a rebuild equals the live projection row for row. Three pieces:
//
//   - DB: a SQLite file (WAL, one writer connection) with versioned
//     migrations, Apply (a batch of log events in one transaction, the last
//     applied stream sequence stored in the same transaction, so that a
//     redelivered event is a no-op) and the queries the CLIs use.
//   - Projector: a durable JetStream consumer that keeps a DB up to date
//     with the live log in batched transactions.
//   - Build and Rebuild: a new database file from sequence 1 while the old
//     one still serves reads, then an atomic swap.
//
// Apply is deterministic: every value it writes comes from the log (event
// times included), never from the clock, so two databases fed the same
// events are identical (see Dump and Equal).
package projections
