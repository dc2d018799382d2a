// Package e2e holds the tests that need real processes: a plugin in another
// OS process, a worker killed with SIGKILL, a daemon stopped with SIGTERM.
// Its tests build the binaries they run.
package e2e
