// Command qtasks-audit runs the audit sink (plugins/auditsink) in its own
// process: it writes the facts of the qtasks event log to rotated,
// newline-delimited CloudEvents JSON files.
//
//	qtasks-audit --nats-url nats://127.0.0.1:4222 --dir /var/log/qtasks --max-size 64MiB
//	qtasks-audit --triggers storage_add,storage_remove_finished_task --max-age 1h
//
// It prints "ready" on stdout once its consumer and registration are in
// place, and stops on SIGINT or SIGTERM, closing (and fsyncing) its file.
// Exit codes: 0 ok, 1 failure (e.g. no server), 2 bad usage or
// configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/internal/cli"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/auditsink"
)

func main() { os.Exit(mainCode()) }

// mainCode is main but for the exit, so that its deferred calls run first.
func mainCode() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.ExitCode("qtasks-audit", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
}

var (
	envOr  = cli.EnvOr
	usagef = cli.Usagef
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if cli.PrintVersion(stdout, "qtasks-audit", args) {
		return nil
	}
	fs := flag.NewFlagSet("qtasks-audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The connection flags of every qtasks command.
	var conn cli.ConnFlags
	conn.Register(fs, "nats://127.0.0.1:4222")
	var (
		dir      = fs.String("dir", envOr("QTASKS_AUDIT_DIR", "qtasks-audit"), "directory of the audit files (QTASKS_AUDIT_DIR)")
		maxSize  = fs.String("max-size", envOr("QTASKS_AUDIT_MAX_SIZE", "64MiB"), "rotate a file before it grows past this: bytes, or with KiB, MiB, GiB (QTASKS_AUDIT_MAX_SIZE)")
		maxAge   = fs.Duration("max-age", 0, "also rotate a file this long after it was opened (e.g. 1h); 0: by size only")
		triggers = fs.String("triggers", envOr("QTASKS_AUDIT_TRIGGERS", ""), "comma-separated triggers whose facts are written; empty: every fact (QTASKS_AUDIT_TRIGGERS)")
		name     = fs.String("name", auditsink.DefaultName, "plugin name, and its durable consumer")
		pattern  = fs.String("pattern", auditsink.DefaultPattern, "file name pattern: {n} the file counter, {time} when the file was opened")
		fsync    = fs.Bool("fsync", false, "fsync each line before its fact is acknowledged (survives a power loss)")
		fromNow  = fs.Bool("from-now", false, "a new sink starts at the end of the log, not its beginning")
		timeout  = fs.Duration("timeout", plugins.DefaultTimeout, "bound on writing one fact")
		logLevel = fs.String("log-level", envOr("LOG_LEVEL", "info"), "debug, info, warn or error (LOG_LEVEL)")
	)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	size, err := parseSize(*maxSize)
	if err != nil {
		return usagef("--max-size %q: %v", *maxSize, err)
	}
	var trig []string
	for t := range strings.SplitSeq(*triggers, ",") {
		if t = strings.TrimSpace(t); t != "" {
			trig = append(trig, t)
		}
	}
	sink, err := auditsink.New(auditsink.Config{
		Name: *name, Dir: *dir, Pattern: *pattern, MaxSize: size, MaxAge: *maxAge,
		Triggers: trig, FromNow: *fromNow, Sync: *fsync, Logger: log,
	})
	if err != nil {
		return usagef("%v", err)
	}
	if conn.URL == "" {
		return usagef("--nats-url is empty")
	}
	if *timeout <= 0 {
		return usagef("--timeout %v: must be positive", *timeout)
	}
	spec := sink.Spec()
	spec.Timeout = *timeout

	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The plugin's least rights: the streams must exist (an executor made
	// them).
	cfg := conn.Config()
	cfg.Name, cfg.Plugin, cfg.Logger = "plugin-"+*name, *name, log
	b, err := bus.Open(octx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", conn.URL, err)
	}
	defer b.Close()
	r, err := plugins.Start(octx, b, spec)
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "qtasks-audit ready", "dir", *dir, "max_size", size, "triggers", trig)
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer scancel()
	return r.Stop(sctx)
}

// parseSize reads a size in bytes, with an optional unit: KiB, MiB, GiB
// (powers of 1024), KB, MB, GB (powers of 1000), B.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("want a number of bytes, optionally with KiB, MiB, GiB, KB, MB or GB")
	}
	if n <= 0 {
		return 0, errors.New("must be positive")
	}
	if n > (1<<62)/mult {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}
