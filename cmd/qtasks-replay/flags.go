package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/qtasks/qtasks-go/internal/jsonout"
	"github.com/qtasks/qtasks-go/projections"
)

var envOr = cli.EnvOr

// DefaultNatsURL is where rebuild and project look for a local qtasksd.
const DefaultNatsURL = "nats://127.0.0.1:4222"

// connFlags are the NATS connection flags.
type connFlags struct{ cli.ConnFlags }

func (c *connFlags) register(fs *flag.FlagSet) { c.Register(fs, DefaultNatsURL) }

// open connects to the NATS server, read-only; it never starts an embedded
// one. A read-only bus cannot change the log, its registry or its streams:
// every command here only reads the log (a projector's durable consumer
// aside), so a --nats-url naming some other server gets nothing created on
// it.
func (c *connFlags) open(ctx context.Context, log *slog.Logger) (*bus.Bus, error) {
	if c.URL == "" {
		return nil, &usageError{Msg: "--nats-url is empty", Hint: "--nats-url " + DefaultNatsURL}
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cfg := c.Config()
	cfg.Name, cfg.Logger, cfg.ReadOnly = "qtasks-replay", log, true
	b, err := bus.Open(octx, cfg)
	if err != nil {
		// Otherwise not wrapped: bus.Open's error names the URL when it is
		// about reaching it ("connecting to nats://…: …").
		return nil, cli.NoStreams(c.URL, err)
	}
	return b, nil
}

// common are the flags every command has.
type common struct {
	db       string
	json     bool
	logLevel string
}

func (c *common) register(fs *flag.FlagSet, withJSON bool) {
	fs.StringVar(&c.db, "db", envOr("QTASKS_DB", projections.DefaultPath), "projection database (QTASKS_DB)")
	if withJSON {
		fs.BoolVar(&c.json, "json", false, "print JSON instead of text")
	}
	fs.StringVar(&c.logLevel, "log-level", envOr("LOG_LEVEL", "info"), "debug, info, warn or error (LOG_LEVEL)")
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) { return cli.NewLogger(w, c.logLevel) }

// openRead opens the projection for queries. An older schema is migrated
// first (that needs a write), but only in a file that is a projection: a
// path that names anything else is ExitNoDB and is not written, as is a
// missing database.
func (c *common) openRead(ctx context.Context) (*projections.DB, error) {
	if err := checkProjection(ctx, c.db); err != nil {
		return nil, err
	}
	db, err := projections.Open(ctx, c.db, &projections.Options{ReadOnly: true})
	if errors.Is(err, projections.ErrSchemaOutdated) {
		if fi, serr := os.Stat(c.db); serr == nil && fi.Size() == 0 {
			return nil, &exitError{Code: ExitNoDB, Err: fmt.Errorf("%s is an empty file: %w", c.db, projections.ErrNotProjection)}
		}
		var w *projections.DB
		if w, err = projections.Open(ctx, c.db, nil); err == nil {
			_ = w.Close()
			db, err = projections.Open(ctx, c.db, &projections.Options{ReadOnly: true})
		}
	}
	switch {
	case errors.Is(err, projections.ErrNoDatabase):
		return nil, &exitError{Code: ExitNoDB, Err: fmt.Errorf("%w (qtasksd projects by default; or run qtasks-replay rebuild)", err)}
	case errors.Is(err, projections.ErrSchemaTooNew):
		return nil, &exitError{Code: ExitNoDB, Err: err}
	case err != nil:
		return nil, err
	}
	return db, nil
}

// checkProjection refuses a --db that names something other than a
// projection (or nothing yet, or an empty file): it is neither read nor
// written.
func checkProjection(ctx context.Context, path string) error {
	err := projections.CheckPath(ctx, path)
	if errors.Is(err, projections.ErrNotProjection) {
		return &exitError{Code: ExitNoDB, Err: fmt.Errorf("%w (pass the path of a projection, or of a file that does not exist yet)", err)}
	}
	return err
}

var newFlagSet = cli.NewFlagSet

// parse parses args, allowing flags after positional arguments
// ("history ID --json").
func parse(fs *flag.FlagSet, args []string, hint string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{Msg: err.Error(), Hint: hint}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// taskArg is the one TASK_ID argument of history and blame.
func taskArg(pos []string, cmd string) (string, error) {
	if len(pos) != 1 || strings.TrimSpace(pos[0]) == "" {
		return "", &usageError{Msg: cmd + " takes one task id", Hint: "qtasks-replay " + cmd + " TASK_ID"}
	}
	return pos[0], nil
}

func writeJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return jsonout.Write(w, bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

// parseTime reads an RFC 3339 time, a date, or a duration ago ("2h").
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			// -2h would mean two hours from now, which no recorded time is.
			return time.Time{}, fmt.Errorf("%q: a duration ago must not be negative (2h is two hours ago)", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (RFC 3339, YYYY-MM-DD) or a duration ago (2h)", s)
}

// timeRange reads a --since and --until pair; either may be empty. A range
// that ends before it starts would select nothing, so it is a usage error
// rather than an empty answer.
func timeRange(since, until string, now time.Time, hint string) (from, to time.Time, err error) {
	if from, err = parseTime(since, now); err != nil {
		return from, to, &usageError{Msg: "--since " + err.Error(), Hint: hint}
	}
	if to, err = parseTime(until, now); err != nil {
		return from, to, &usageError{Msg: "--until " + err.Error(), Hint: hint}
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return from, to, &usageError{Msg: fmt.Sprintf("--since %s is not before --until %s", since, until), Hint: hint}
	}
	return from, to, nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func fmtLatency(us int64) string {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d < time.Millisecond:
		return strconv.FormatInt(us, 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(us)/1000, 'f', 1, 64) + "ms"
	}
	return d.Round(time.Millisecond).String()
}

func compact(b []byte, n int) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
