// Package projections is qtasks' SQLite read model: task state, the trigger
// history, every plugin call, field blame and the events that were rejected,
// all derived from the event log (the QTASKS_EVENTS stream) and nothing else.
//
// The database can be thrown away and rebuilt from stream sequence 1 at any
// time; a rebuild equals the live projection row for row. The pieces:
//
//   - DB: a SQLite file (WAL, one writer connection, a few readers) with
//     versioned migrations (schema_migrations), Apply (a batch of log
//     events in one transaction that also stores the last applied stream
//     sequence, so that a redelivered event is a no-op; a message of the
//     log, a phase message's several facts included, is applied whole),
//     Dump and Equal,
//     and the queries the CLIs use: Task, Tasks, Timeline, PluginCalls,
//     Blame, RejectedEvents.
//   - Prepare and ApplyPrepared: Apply in two steps. Prepare (decoding,
//     checks, task effects, blame) is pure, so the projector runs it on
//     another goroutine than the SQLite writes.
//   - Projector: a durable JetStream consumer that keeps a DB up to date
//     with the live log in batches (up to DefaultBatchSize events or
//     DefaultBatchWait). The database is the truth about the position: on
//     start the consumer is recreated to deliver after the stored sequence.
//   - Build and Rebuild: a new database file from sequence 1 while the old
//     one still serves reads, then an atomic swap (Swap); a projector of
//     the path notices, reopens and catches up.
//
// Tables: task_keys (each task id's integer key, by which the other tables
// refer to tasks); tasks, task_tags and attempts (the state); facts, one row per
// trigger fact with its data as recorded, at its position (seq, the stream
// sequence of its message, and idx, its index in a phase message, 0 for a
// fact alone), shown with task id, input and output as columns by the view
// trigger_history; plugin_calls (outcome,
// reason, latency, patch); plugin_events (invocations and patches);
// field_blame; dead_letters; rejected_events; meta (the last applied
// sequence, and the identity of the log projected: its stream's creation
// time, so that a projection pointed at another log is rebuilt).
//
// Apply is deterministic: every value it writes comes from the log (event
// times included), never from the clock, so two databases fed the same
// events are identical.
package projections
