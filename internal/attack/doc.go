// Package attack is qtasks' attack suite: each test plays an attacker
// against a real embedded JetStream server with authorization on, every
// plugin connected as its own NATS user holding only its least rights
// (bus.PluginPermissions), and checks three things:
//
//   - the attack fails: the log, the task records and the plugins' results
//     are what they would have been without it;
//   - the attempt is visible: a log line, a metric
//     (qtasks_forgeries_detected_total and the like), or an event recorded
//     in the log (an io.qtasks.alert, a rejected call, a dead letter);
//   - nothing else is touched: no other task, plugin or record changes.
//
// The package has no code of its own, only tests; they are what
// docs/PROTOCOL.md's threat model promises, kept honest. Tests of one area
// live in attack_<area>_test.go with their helpers in
// helpers_<area>_test.go, named so that areas do not collide.
package attack
