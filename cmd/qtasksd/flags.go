package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/internal/cli"
)

var envOr = cli.EnvOr

func envInt(key string, def int) int {
	if v, ok := os.LookupEnv(key); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func envDur(key string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(key); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// DefaultClientURL is where client commands look for a local qtasksd.
const DefaultClientURL = "nats://127.0.0.1:4222"

// connFlags are the NATS connection flags every command shares.
type connFlags struct{ cli.ConnFlags }

func (c *connFlags) register(fs *flag.FlagSet, defURL string) { c.Register(fs, defURL) }

func (c *connFlags) config() bus.Config { return c.Config() }

var newFlagSet = cli.NewFlagSet

func parse(fs *flag.FlagSet, args []string, hint string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &usageError{Msg: err.Error(), Hint: hint}
	}
	return nil
}

// newLogger builds the process's handler once (JSON for the daemon, text
// for commands), honouring --log-level and LOG_LEVEL.
func newLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, &usageError{Msg: fmt.Sprintf("log level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: l}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func openClient(ctx context.Context, c *connFlags) (*bus.Bus, error) {
	cfg := c.config()
	cfg.Name = "qtasksd-cli"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (is qtasksd running? start it with: qtasksd)", err)
	}
	return b, nil
}
