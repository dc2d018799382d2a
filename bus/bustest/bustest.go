// Package bustest starts real JetStream servers for tests: an embedded
// nats-server in-process, on loopback, with file storage in the test's
// temporary directory.
package bustest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	_ "github.com/qtasks/qtasks-go/bus/embedded" // bus.Open starts an embedded server
)

// Open starts an embedded JetStream server for tb and connects a Bus to it.
// Both are closed when the test ends. cfg may be nil.
func Open(tb testing.TB, cfg *bus.Config) *bus.Bus {
	tb.Helper()
	var c bus.Config
	if cfg != nil {
		c = *cfg
	}
	if c.URL == "" && c.DataDir == "" {
		c.DataDir = tb.TempDir()
	}
	if c.Logger == nil {
		c.Logger = Logger(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, c)
	if err != nil {
		tb.Fatalf("opening bus: %v", err)
	}
	tb.Cleanup(b.Close)
	return b
}

// Connect opens a second Bus on the server of b, as another process would.
func Connect(tb testing.TB, b *bus.Bus, cfg *bus.Config) *bus.Bus {
	tb.Helper()
	var c bus.Config
	if cfg != nil {
		c = *cfg
	}
	c.URL = b.ClientURL()
	if c.Logger == nil {
		c.Logger = Logger(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nb, err := bus.Open(ctx, c)
	if err != nil {
		tb.Fatalf("connecting bus: %v", err)
	}
	tb.Cleanup(nb.Close)
	return nb
}

// Logger writes to the test's log, at warning level and above unless the
// test runs with -v.
func Logger(tb testing.TB) *slog.Logger {
	tb.Helper()
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: level}))
}

// WaitFor polls cond until it is true or the deadline passes, then fails tb.
// It is for conditions with no channel to wait on; prefer channels.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// EventsOf reads the events of task (or node) id, by their subject
// attribute, whose subject matches one of subjects (all when none), in
// stream order. Subjects carry no task ids, so this is Events filtered.
func EventsOf(tb testing.TB, b *bus.Bus, id string, subjects ...string) []bus.Stored {
	tb.Helper()
	var out []bus.Stored
	for _, s := range Events(tb, b, subjects...) {
		if s.Event.Subject == id {
			out = append(out, s)
		}
	}
	return out
}

// Events reads every event of the event log whose subject matches one of
// subjects (all when none), in stream order, up to the log's current end.
func Events(tb testing.TB, b *bus.Bus, subjects ...string) []bus.Stored {
	tb.Helper()
	var out []bus.Stored
	err := b.ReadLog(context.Background(), 1, subjects, func(s bus.Stored) error {
		out = append(out, s)
		return nil
	})
	if err != nil {
		tb.Fatalf("reading events: %v", err)
	}
	return out
}
