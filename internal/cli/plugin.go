package cli

// What the commands of the built-in plugins (qtasks-retry,
// qtasks-validate) share: their flags, opening the bus with a plugin's
// least rights, and serving the plugin until a signal.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/telemetry"
	"github.com/qtasks/qtasks-go/plugins"
)

// PluginFlags are the flags every plugin command takes.
type PluginFlags struct {
	ConnFlags
	Name, Policy, LogLevel string
	Timeout                time.Duration
}

// Register adds the flags to fs, with defaults from the environment.
func (f *PluginFlags) Register(fs *flag.FlagSet, defName string) {
	f.ConnFlags.Register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&f.Name, "name", defName, "plugin name: its registration, subjects and durable consumer")
	fs.StringVar(&f.Policy, "policy", events.PolicyFail, "failure policy when the plugin fails or times out: fail or ignore")
	fs.DurationVar(&f.Timeout, "timeout", plugins.DefaultTimeout, "how long the executor waits for each answer")
	fs.StringVar(&f.LogLevel, "log-level", EnvOr("LOG_LEVEL", "info"), "debug, info, warn or error (LOG_LEVEL)")
}

// Check validates the common flags.
func (f *PluginFlags) Check() error {
	if f.Policy != events.PolicyFail && f.Policy != events.PolicyIgnore {
		return Usagef("--policy %q: want fail or ignore", f.Policy)
	}
	if f.Timeout <= 0 {
		return Usagef("--timeout %v: must be positive", f.Timeout)
	}
	if !events.ValidName(f.Name) {
		return Usagef("--name %q: use letters, digits, '-' and '_'", f.Name)
	}
	return nil
}

// Logger is the command's logger (NewLogger) at the flags' level.
func (f *PluginFlags) Logger(w io.Writer) (*slog.Logger, error) { return NewLogger(w, f.LogLevel) }

// Serve opens the bus with the least rights of the plugin named by spec
// (the streams must exist: qtasksd makes them), runs spec as durable
// consumers, writes "ready" to stdout once it is registered, and blocks
// until ctx ends; then it stops the plugin.
func (f *PluginFlags) Serve(ctx context.Context, log *slog.Logger, spec plugins.Spec, stdout io.Writer) error {
	spec.Name, spec.Policy, spec.Timeout = f.Name, f.Policy, f.Timeout
	// Traces go where the OTEL_* variables say (nowhere when unset),
	// flushed once the plugin has stopped.
	tr, err := telemetry.Setup(ctx, "qtasks-plugin-"+spec.Name)
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(fctx); err != nil {
			log.WarnContext(ctx, "traces not flushed", "err", err)
		}
	}()
	spec.TracerProvider = tr.Provider
	cfg := f.Config()
	cfg.Name, cfg.Plugin, cfg.Logger = "plugin-"+spec.Name, spec.Name, log
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := bus.Open(octx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	r, err := plugins.Start(octx, b, spec)
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "plugin ready", "plugin", spec.Name, "version", spec.Version, "triggers", spec.Triggers, "policy", spec.Policy)
	// Tests and scripts wait for this line.
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
	defer c()
	return r.Stop(sctx)
}

// Parse parses args into fs, turning flag errors into usage errors.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{Msg: err.Error(), Hint: fs.Name() + " -h"}
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// Strings is a repeatable string flag.
type Strings []string

func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set appends v.
func (s *Strings) Set(v string) error {
	*s = append(*s, v)
	return nil
}
