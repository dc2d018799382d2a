// Package events defines the wire vocabulary of qtasks: the trigger catalog
// carried over from QTasks and the payloads its triggers fire with (payloads.go),
// the CloudEvents that record every trigger firing,
// plugin invocations and patch replies, the NATS subjects they travel on, the
// CloudEvents JSON batch format that can carry several of them in one message,
// and the application of JSON Patch and merge patch under a trigger's contract.
//
// The package is pure: it performs no I/O and imports nothing of NATS or
// SQLite, so every other package (and a plugin author's tests) can depend on it.
package events
