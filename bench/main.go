// Command bench runs qtasks' benchmark suite on this machine and prints one
// table: every figure the median of several repetitions with its min and
// max, beside the limit of the parts it is built on (raw JetStream, raw
// SQLite) or the peer a Go user would pick instead (River on SQLite, Asynq
// on Redis), measured in the same run. See docs/BENCHMARKS-HARNESS.md.
//
//	cd bench && go run .            # the whole suite, 5 repetitions
//	cd bench && go run . -reps 3    # fewer repetitions
//	cd bench && go run . -smoke     # seconds: tiny sizes, 1 repetition (CI)
//	cd bench && go run . -only 'tasks|river' -cpuprofile cpu.out
//
// It starts everything it measures itself: embedded NATS servers with file
// storage in temporary directories, a redis-server on a free loopback port
// (Debian package redis-server), qtasksd and a plugin process built from
// source, and SQLite files; all are removed when it ends.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "bench: exit %d\n", code)
	}
	os.Exit(code)
}
