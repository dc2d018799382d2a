package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/internal/cli"
)

var envOr = cli.EnvOr

// setFromEnv gives each flag of vars ({flag, variable} pairs) that the
// command line did not set the value of its environment variable, parsed
// as the flag parses its own. A value the flag cannot take is a usage
// error naming the variable: such values used to give way to the default
// in silence (QTASKS_PORT=4x22 ran on 4222, QTASKS_GRACE=30 had 30s).
func setFromEnv(fs *flag.FlagSet, vars [][2]string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, nv := range vars {
		name, key := nv[0], nv[1]
		v, ok := os.LookupEnv(key)
		if !ok || set[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return &usageError{Msg: fmt.Sprintf("%s=%q: not a value of --%s: %v", key, v, name, err), Hint: fmt.Sprintf("unset %s, or give --%s", key, name)}
		}
	}
	return nil
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
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{Msg: err.Error(), Hint: hint}
	}
	return nil
}

// newLogger is the process's logger (cli.NewLogger: JSON, as every
// command's), honouring --log-level and LOG_LEVEL.
func newLogger(w io.Writer, level string) (*slog.Logger, error) { return cli.NewLogger(w, level) }

// openClient connects a command to qtasksd's server. A command that only
// reads opens the bus read-only, so that a --nats-url naming some other
// server finds nothing there rather than having qtasks' streams and
// buckets created on it.
func openClient(ctx context.Context, c *connFlags, readOnly bool) (*bus.Bus, error) {
	cfg := c.config()
	cfg.Name, cfg.ReadOnly = "qtasksd-cli", readOnly
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, cli.NoStreams(c.URL, err)
	}
	if errors.Is(err, bus.ErrPermissionDenied) {
		return nil, fmt.Errorf("%w (this command needs a NATS user with a client's rights; a users file's HTTP-only and plugin users have none)", err)
	}
	if err != nil {
		// Client commands do not know the daemon's --port: say how to
		// point them at it.
		return nil, fmt.Errorf("%w (is qtasksd running? start it with: qtasksd; one on another port or host: give its URL with --nats-url or QTASKS_NATS_URL)", err)
	}
	return b, nil
}
