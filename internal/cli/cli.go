// Package cli holds what qtasks' commands share: usage and exit-code errors,
// flag sets that tests can drive, environment defaults, and the NATS
// connection flags.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
)

// UsageError is a bad command line; it prints a hint and exits 2. It is
// the one usage error of every command (qtasksd, qtasks-replay, the plugin
// commands).
type UsageError struct{ Msg, Hint string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError with no hint of its own (ExitCode then
// suggests the program's -h).
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// ExitError carries an exit code other than 1.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit codes every command shares.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// ExitCode prints err (if any) to stderr, prefixed with prog, and returns
// the process exit code: 0 for none or -h, 2 for a UsageError, an
// ExitError's code, else 1.
func ExitCode(prog string, err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if ue, ok := errors.AsType[*UsageError](err); ok {
		fmt.Fprintln(stderr, prog+":", ue.Msg)
		hint := ue.Hint
		if hint == "" {
			hint = prog + " -h"
		}
		fmt.Fprintln(stderr, "Try:", hint)
		return ExitUsage
	}
	fmt.Fprintln(stderr, prog+":", err)
	if ee, ok := errors.AsType[*ExitError](err); ok {
		return ee.Code
	}
	return ExitFailure
}

// EnvOr returns the environment variable key, or def when it is unset.
func EnvOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// NewFlagSet returns a flag set that reports errors instead of exiting, so
// that tests can call a command's Run directly.
func NewFlagSet(name string, stderr io.Writer, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// ConnFlags are the NATS connection flags, the same in every command that
// connects (qtasksd's, qtasks-replay, the plugin commands).
type ConnFlags struct {
	URL, Creds, NKey, User, Password, Token string
	// TLSCA, TLSCert and TLSKey: see bus.Config.
	TLSCA, TLSCert, TLSKey string
}

// Register adds the flags to fs, with defURL as the URL's default.
func (c *ConnFlags) Register(fs *flag.FlagSet, defURL string) {
	fs.StringVar(&c.URL, "nats-url", EnvOr("QTASKS_NATS_URL", defURL), "NATS server or cluster URL(s), comma separated (QTASKS_NATS_URL)")
	fs.StringVar(&c.Creds, "creds", EnvOr("QTASKS_NATS_CREDS", ""), "NATS credentials file (QTASKS_NATS_CREDS)")
	fs.StringVar(&c.NKey, "nkey", EnvOr("QTASKS_NATS_NKEY", ""), "NATS NKey seed file (QTASKS_NATS_NKEY)")
	fs.StringVar(&c.User, "user", EnvOr("QTASKS_NATS_USER", ""), "NATS user (QTASKS_NATS_USER)")
	fs.StringVar(&c.Password, "password", EnvOr("QTASKS_NATS_PASSWORD", ""), "NATS password (QTASKS_NATS_PASSWORD)")
	fs.StringVar(&c.Token, "token", EnvOr("QTASKS_NATS_TOKEN", ""), "NATS token (QTASKS_NATS_TOKEN)")
	fs.StringVar(&c.TLSCA, "tls-ca", EnvOr("QTASKS_TLS_CA", ""), "PEM file of the CAs that sign the NATS server's certificate; default: the system's (QTASKS_TLS_CA)")
	fs.StringVar(&c.TLSCert, "tls-cert", EnvOr("QTASKS_TLS_CERT", ""), "PEM file of this client's certificate, for a server that wants mutual TLS (QTASKS_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", EnvOr("QTASKS_TLS_KEY", ""), "PEM file of the key of --tls-cert (QTASKS_TLS_KEY)")
}

// Config is the bus configuration of the flags.
func (c *ConnFlags) Config() bus.Config {
	return bus.Config{
		URL: c.URL, CredsFile: c.Creds, NKeyFile: c.NKey, User: c.User, Password: c.Password, Token: c.Token,
		TLSCA: c.TLSCA, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
	}
}

// NoStreams explains the error of a read-only bus.Open at url that found no
// qtasks streams: the URL most likely names some other server.
func NoStreams(url string, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no qtasks streams on %s: is it qtasksd's server? (qtasksd creates them when it starts): %w", url, err)
	}
	return err
}

// ExitCodes describe a command's exit codes, in one place: its usage text
// is made from them (Doc), so that help and code cannot disagree.
type ExitCodes []struct {
	Code  int
	Means string
}

// Doc is the "Exit codes: ..." paragraph of a usage text, wrapped at 79
// columns.
func (e ExitCodes) Doc() string {
	parts := make([]string, len(e))
	for i, c := range e {
		parts[i] = fmt.Sprintf("%d %s", c.Code, c.Means)
	}
	return Wrap("Exit codes: "+strings.Join(parts, ", ")+".", 79)
}

// Means is what code means, for a flag's help ("exit 5: ...").
func (e ExitCodes) Means(code int) string {
	for _, c := range e {
		if c.Code == code {
			return c.Means
		}
	}
	return ""
}

// Wrap breaks s into lines of at most width columns at spaces.
func Wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		if i > 0 {
			if n+1+len(w) > width {
				b.WriteByte('\n')
				n = 0
			} else {
				b.WriteByte(' ')
				n++
			}
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// NewLogger is every command's logger: JSON lines on w (a log collector
// reads qtasksd, qtasks-replay and the plugin commands alike) at level
// (debug, info, warn or error, as --log-level and LOG_LEVEL give it). A
// level it does not know is a *UsageError.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, &UsageError{Msg: fmt.Sprintf("--log-level %q: want debug, info, warn or error", level), Hint: "--log-level warn"}
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
