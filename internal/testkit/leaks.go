package testkit

import (
	"fmt"
	"os"

	"go.uber.org/goleak"
)

// checkLeaks reports the goroutines still running after a package's tests
// passed, and returns 1 when there are any: a goroutine a test started and
// nothing stopped (a consumer, a server, a ticker) is a leak that a
// long-running process would accumulate. goleak retries for a while, so
// goroutines that are on their way out are not reported.
func checkLeaks() int {
	if err := goleak.Find(leakOptions...); err != nil {
		fmt.Fprintf(os.Stderr, "testkit: goroutines left running after the tests:\n%v\n", err)
		return 1
	}
	return 0
}

// leakOptions are the goroutines that are not the tests' to stop: those
// of the process itself, started once and kept by libraries.
var leakOptions = []goleak.Option{
	// os/signal's loop, started by signal.Notify (commands run in
	// process, whose Run a test calls, use signal.NotifyContext).
	goleak.IgnoreTopFunction("os/signal.signal_recv"),
	// database/sql's connection opener lives as long as its DB, and
	// go-sqlite3 has none of its own; a DB a test closes stops it.
}
