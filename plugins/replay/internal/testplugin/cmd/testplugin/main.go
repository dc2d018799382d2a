// Command testplugin runs testplugin.Plugin as its own process, as a
// candidate does in a replay:
//
//	testplugin --nats-url nats://127.0.0.1:4222 --version 2 --crash-at 40
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	_ "github.com/qtasks/qtasks-go/bus/embedded" // bus.Open starts an embedded server
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/replay/internal/testplugin"
)

func main() { os.Exit(mainCode()) }

// mainCode is main but for the exit, so that its deferred calls run first.
func mainCode() int {
	url := flag.String("nats-url", os.Getenv("QTASKS_NATS_URL"), "NATS server URL")
	version := flag.String("version", "1", "plugin version: 1 or 2")
	crashAt := flag.String("crash-at", "", "exit with status 3 on these kw.n (comma-separated)")
	hangAt := flag.String("hang-at", "", "never answer these kw.n (comma-separated)")
	concurrency := flag.Int("concurrency", 0, "concurrent calls (0: the SDK default)")
	leastRights := flag.Bool("least-rights", false, "open the bus as a plugin (bus.Config.Plugin), as a plugin with its own credentials does")
	serveDir := flag.String("serve-dir", "", "instead of a plugin, run an embedded JetStream server with its data here, print its URL, and wait")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *serveDir != "" {
		if err := serve(ctx, log, *serveDir); err != nil {
			log.Error("testplugin", "err", err)
			return 1
		}
		return 0
	}
	p := &testplugin.Plugin{
		Version: *version, CrashAt: ints(*crashAt), HangAt: ints(*hangAt),
		Crash: func() { os.Exit(3) },
	}
	cfg := bus.Config{URL: *url, Name: "plugin-" + testplugin.Name, Logger: log}
	if *leastRights {
		cfg.Plugin = testplugin.Name
	}
	if err := run(ctx, cfg, p, *concurrency); err != nil {
		log.Error("testplugin", "err", err)
		return 1
	}
	return 0
}

func ints(s string) []int {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func run(ctx context.Context, cfg bus.Config, p *testplugin.Plugin, concurrency int) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := bus.Open(octx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	spec := testplugin.Spec(p)
	spec.Concurrency = concurrency
	r, err := plugins.Start(ctx, b, spec)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	return r.Stop(sctx)
}

// serve runs a live server out of the benchmark's process, as production
// runs qtasksd.
func serve(ctx context.Context, log *slog.Logger, dir string) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := bus.Open(octx, bus.Config{DataDir: dir, Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Println("url " + b.ClientURL())
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
