package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// exitRefused: the task is not in a state that allows the action (cancel
// of a finished task, retry of one that did not fail).
const exitRefused = 7

// defaultBy names the operator of a CLI action: the OS user at the host.
func defaultBy() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return "cli:" + name
}

// operate runs one of the operator actions: cancel ID, retry ID, pause
// QUEUE, resume QUEUE. Each is recorded in the log (who, what, why).
func (m *Main) operate(ctx context.Context, action string, args []string) error {
	var conn connFlags
	what := "ID"
	if action == events.ActionPause || action == events.ActionResume {
		what = "QUEUE"
	}
	example := "qtasksd " + action + " " + what + " --reason 'why'"
	fs := newFlagSet("qtasksd "+action, m.Stderr, "qtasksd "+action+" "+what+" [flags]")
	conn.register(fs, DefaultClientURL)
	reason := fs.String("reason", "", "why, recorded in the log with the action")
	by := fs.String("by", defaultBy(), "who acts, recorded in the log")
	arg, rest := "", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		arg, rest = args[0], args[1:]
	}
	if err := parse(fs, rest, example); err != nil {
		return err
	}
	if arg == "" && fs.NArg() > 0 {
		arg = fs.Arg(0)
	}
	if !events.ValidToken(arg) {
		return &usageError{Msg: fmt.Sprintf("%s needs a %s (one NATS subject token), got %q", action, what, arg), Hint: example}
	}
	if *by == "" || len(*by) > events.MaxReasonSize || len(*reason) > events.MaxReasonSize {
		return &usageError{Msg: fmt.Sprintf("--by must be 1 to %d bytes and --reason at most %d", events.MaxReasonSize, events.MaxReasonSize), Hint: example}
	}
	b, err := openClient(ctx, &conn, false)
	if err != nil {
		return err
	}
	defer b.Close()
	app, err := executor.New(b, nil)
	if err != nil {
		return err
	}
	act := executor.Action{By: *by, Reason: *reason}
	var t events.Task
	switch action {
	case events.ActionCancel:
		t, err = app.Cancel(ctx, arg, act)
	case events.ActionRetry:
		t, err = app.Retry(ctx, arg, act)
	case events.ActionPause:
		err = app.Pause(ctx, arg, act)
	case events.ActionResume:
		err = app.Resume(ctx, arg, act)
	}
	switch {
	case errors.Is(err, bus.ErrTaskNotFound):
		return &exitError{Code: exitNotFound, Err: err}
	case errors.Is(err, executor.ErrTaskFinished), errors.Is(err, executor.ErrNotRetryable), errors.Is(err, bus.ErrConflict):
		return &exitError{Code: exitRefused, Err: err}
	case err != nil:
		return err
	}
	if t.ID != "" {
		return m.printJSON(t)
	}
	fmt.Fprintf(m.Stdout, "queue %s: %sd\n", arg, action)
	return nil
}
