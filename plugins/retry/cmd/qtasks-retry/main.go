// Command qtasks-retry runs the retry plugin (package plugins/retry) as a
// process of its own: a mutator on worker_task_error_retry that sets the
// backoff of each retry and vetoes retries of errors it is not configured
// to retry.
//
//	qtasks-retry --nats-url nats://127.0.0.1:4222 --backoff exponential:base=200ms,max=30s,jitter=0.2 \
//	    --never-retry-type '*json.SyntaxError' --retry-on-message timeout
//
// It prints "ready" once registered and stops on SIGINT or SIGTERM.
// Exit codes: 0 ok, 1 failure, 2 bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/qtasks/qtasks-go/internal/cli"
	"github.com/qtasks/qtasks-go/plugins/retry"
)

const cmd = "qtasks-retry"

func main() { os.Exit(mainCode()) }

// mainCode is main but for the exit, so that its deferred calls run first.
func mainCode() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.ExitCode(cmd, run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if cli.PrintVersion(stdout, cmd, args) {
		return nil
	}
	var f cli.PluginFlags
	var backoff string
	var retryTypes, retryMsgs, neverTypes, neverMsgs cli.Strings
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [flags]\n\nFlags:\n", cmd)
		fs.PrintDefaults()
	}
	f.Register(fs, retry.DefaultName)
	fs.StringVar(&backoff, "backoff", "none", "none | fixed:1s | list:100ms,1s,5s | exponential:base=100ms,factor=2,max=30s,jitter=0.2[,seed=N]")
	fs.Var(&retryTypes, "retry-on-type", "retry only errors whose chain has this type (%T, e.g. '*fs.PathError'); repeatable")
	fs.Var(&retryMsgs, "retry-on-message", "retry only errors whose chain has a message containing this; repeatable")
	fs.Var(&neverTypes, "never-retry-type", "never retry errors whose chain has this type; repeatable")
	fs.Var(&neverMsgs, "never-retry-message", "never retry errors whose chain has a message containing this; repeatable")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if err := f.Check(); err != nil {
		return err
	}
	log, err := f.Logger(stderr)
	if err != nil {
		return err
	}
	b, err := retry.ParseBackoff(backoff)
	if err != nil {
		return cli.Usagef("--backoff: %v", err)
	}
	cfg := retry.Config{Backoff: b, Logger: log}
	for _, t := range retryTypes {
		cfg.RetryOn = append(cfg.RetryOn, retry.Match{Type: t})
	}
	for _, m := range retryMsgs {
		cfg.RetryOn = append(cfg.RetryOn, retry.Match{Message: m})
	}
	for _, t := range neverTypes {
		cfg.NeverRetry = append(cfg.NeverRetry, retry.Match{Type: t})
	}
	for _, m := range neverMsgs {
		cfg.NeverRetry = append(cfg.NeverRetry, retry.Match{Message: m})
	}
	p, err := retry.New(cfg)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	return f.Serve(ctx, log, p.Spec(), stdout)
}
