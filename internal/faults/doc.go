// Package faults holds the fault suite: real nats-server processes (a
// 3-node JetStream cluster on loopback, or a single node), qtasksd workers
// and a plugin process against them, load from the test, and faults
// injected under that load — stream leaders killed, nodes restarted, a
// single server killed with SIGKILL and restarted on the same store, a
// worker killed. Afterwards every acknowledged task is accounted for:
// exactly one final status per attempt, none stuck, no duplicate ce-id,
// the projection equal to a rebuild, and no submission that got an error
// queued unless the error said its outcome was unknown.
//
// The tests also log what a user sees (how long submissions fail during a
// leader election or an outage, how long a crashed worker's task waits),
// the figures quoted in README "Operations".
//
// TestSoak (go test ./internal/faults -run Soak -soak -timeout 60m) is
// the long run: not in CI; it writes docs/FAULTS.md's figures and plot.
package faults
