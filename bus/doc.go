// Package bus is qtasks' JetStream layer: it connects to an external NATS
// server or starts an embedded one (package bus/embedded, which a program
// imports to have one: bus itself does not link nats-server), provisions the event log, the task queue
// and the key-value buckets, publishes trigger facts with deterministic
// message ids, invokes mutator plugins and awaits their patches, keeps the
// plugin registry, and runs durable subscriptions.
//
// Every event of the log is a CloudEvent: alone in binary mode (attributes
// in NATS headers, data as plain JSON), or, for facts, packed with others
// of their phase in one message in the CloudEvents JSON batch format; see
// docs/PROTOCOL.md.
//
// It is also the one reader of the log: Unpack decodes a stored message
// into its events (Stored: stream sequence, index in the message), ReadLog
// reads them in order by the subjects they have alone, Message by
// sequence, and Deliver wraps a durable consumer's message (Delivery: its
// events and one ack).
package bus
