// Package bus is qtasks' JetStream layer: it connects to an external NATS
// server or starts an embedded one, provisions the event log, the task queue
// and the key-value buckets, publishes trigger facts with deterministic
// message ids, invokes mutator plugins and awaits their patches, keeps the
// plugin registry, and runs durable subscriptions.
//
// Everything the bus writes is a CloudEvent in binary mode (attributes in NATS
// headers, data as plain JSON); see docs/PROTOCOL.md.
package bus
