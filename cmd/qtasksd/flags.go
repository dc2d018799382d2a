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
)

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

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
type connFlags struct {
	url, creds, nkey, user, password, token string
}

func (c *connFlags) register(fs *flag.FlagSet, defURL string) {
	fs.StringVar(&c.url, "nats-url", envOr("QTASKS_NATS_URL", defURL), "NATS server or cluster URL(s), comma separated (QTASKS_NATS_URL)")
	fs.StringVar(&c.creds, "creds", envOr("QTASKS_NATS_CREDS", ""), "NATS credentials file (QTASKS_NATS_CREDS)")
	fs.StringVar(&c.nkey, "nkey", envOr("QTASKS_NATS_NKEY", ""), "NATS NKey seed file (QTASKS_NATS_NKEY)")
	fs.StringVar(&c.user, "user", envOr("QTASKS_NATS_USER", ""), "NATS user (QTASKS_NATS_USER)")
	fs.StringVar(&c.password, "password", envOr("QTASKS_NATS_PASSWORD", ""), "NATS password (QTASKS_NATS_PASSWORD)")
	fs.StringVar(&c.token, "token", envOr("QTASKS_NATS_TOKEN", ""), "NATS token (QTASKS_NATS_TOKEN)")
}

func (c *connFlags) config() bus.Config {
	return bus.Config{URL: c.url, CredsFile: c.creds, NKeyFile: c.nkey, User: c.user, Password: c.password, Token: c.token}
}

func newFlagSet(name string, stderr io.Writer, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string, hint string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &usageError{msg: err.Error(), hint: hint}
	}
	return nil
}

// newLogger builds the process's handler once (JSON for the daemon, text
// for commands), honouring --log-level and LOG_LEVEL.
func newLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, &usageError{msg: fmt.Sprintf("log level %q: want debug, info, warn or error", level)}
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
