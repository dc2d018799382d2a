// Command echoplugin is the mutator plugin the bench harness runs as an OS
// process of its own: on its trigger it answers with a JSON Patch that sets
// /result to the value it already has (the same work as the harness's
// in-process plugin), or, with --merge, with that fixed merge patch. It
// prints "ready" on stdout once registered and stops on SIGTERM.
//
//	echoplugin --nats-url nats://127.0.0.1:4222 --name bench-echo
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

func main() {
	url := flag.String("nats-url", os.Getenv("QTASKS_NATS_URL"), "NATS server URL")
	name := flag.String("name", "bench-echo", "plugin name")
	version := flag.String("version", "1", "plugin version")
	trigger := flag.String("trigger", events.TaskExecutorRunTask, "trigger the plugin is named for")
	merge := flag.String("merge", "", "answer every call with this merge patch instead of echoing /result")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *url, *name, *version, *trigger, *merge); err != nil {
		log.Error("echoplugin", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, url, name, version, trigger, merge string) error {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := bus.Open(octx, bus.Config{URL: url, Name: "plugin-" + name, Plugin: name, Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()
	var fn plugins.Func = echo
	if merge != "" {
		if !json.Valid([]byte(merge)) {
			return fmt.Errorf("--merge is not JSON: %s", merge)
		}
		fn = func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return &plugins.Patch{ContentType: events.ContentTypeMergePatch, Body: json.RawMessage(merge)}, nil
		}
	}
	r, err := plugins.Start(ctx, b, plugins.Spec{
		Name: name, Version: version, Triggers: []string{trigger}, Timeout: 10 * time.Second, Plugin: fn,
	})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
	defer c()
	return r.Stop(sctx)
}

// echo answers with a JSON Patch that sets /result to its current value.
func echo(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
	var p struct {
		Result json.RawMessage `json:"result"`
	}
	if err := c.Decode(&p); err != nil {
		return nil, err
	}
	var n float64
	if json.Unmarshal(p.Result, &n) != nil {
		return nil, nil
	}
	return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: n})
}
