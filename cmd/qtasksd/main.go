// Command qtasksd is the qtasks daemon: by default it starts an embedded
// NATS server with JetStream (file storage under a data directory, loopback
// only) and a worker with a few demo tasks. With --nats-url it uses an
// external NATS server or cluster instead. Its subcommands submit tasks and
// read their status from the command line.
//
// Usage:
//
//	qtasksd [run] [flags]          start the daemon (the default)
//	qtasksd submit NAME [flags]    submit a task, optionally wait for it
//	qtasksd submit-many [flags]    submit a batch of tasks, NDJSON on stdin
//	qtasksd status ID              print a task's record
//	qtasksd plugins                list registered plugins
//	qtasksd tasks                  list the tasks qtasksd runs and their arguments
//	qtasksd schedule add|list|remove|pause|resume  periodic tasks
//	qtasksd plugin-permissions NAME  print a plugin's least NATS permissions
//	qtasksd version                print the version (also --version)
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/cli"
)

func main() { os.Exit(mainCode()) }

// mainCode is main but for the exit, so that its deferred calls run first.
func mainCode() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := NewMain(os.Stdout, os.Stderr).Run(ctx, os.Args[1:])
	return exitCode(err, os.Stderr)
}

// Exit codes a script can rely on.
const (
	exitOK       = 0
	exitFailure  = 1 // the operation failed (connection, JetStream, ...)
	exitUsage    = 2 // bad command line
	exitNotFound = 3 // the task does not exist
	exitTask     = 4 // the task ended in error or cancel
	exitTimeout  = 5 // waiting timed out
	exitUnknown  = 6 // the submission's outcome is unknown: retry with the idempotency key it printed
	// exitDuplicate: the idempotency key named an existing task, whose
	// record is printed; nothing new was queued (a retry after exit 6 that
	// finds its task queued ends so too).
	exitDuplicate = 8
	// exitConflict: the key names a task submitted with another task name,
	// queue, args or kw; nothing was queued (--on-conflict existing).
	exitConflict = 9
	// exitPartial: some submissions of a batch (submit-many) were not
	// queued; each result line says which and why.
	exitPartial = 10
	// exitRefused (7, operate.go): the task's state does not allow the action
)

type (
	usageError = cli.UsageError
	exitError  = cli.ExitError
)

func exitCode(err error, stderr io.Writer) int { return cli.ExitCode("qtasksd", err, stderr) }

// Main runs qtasksd's commands; tests call Run directly.
type Main struct {
	Stdout, Stderr io.Writer
	// Stdin is read by submit-many; nil reads os.Stdin.
	Stdin io.Reader
}

// NewMain returns a Main writing to stdout and stderr.
func NewMain(stdout, stderr io.Writer) *Main { return &Main{Stdout: stdout, Stderr: stderr} }

// Run runs the command in args.
func (m *Main) Run(ctx context.Context, args []string) error {
	if cli.PrintVersion(m.Stdout, "qtasksd", args) {
		return nil
	}
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return m.run(ctx, args)
	case "submit":
		return m.submit(ctx, args)
	case "submit-many":
		return m.submitMany(ctx, args)
	case "status":
		return m.status(ctx, args)
	case "chain":
		return m.chain(ctx, args) // chaincmd.go
	case "plugins":
		return m.plugins(ctx, args)
	case "plugin-permissions":
		return m.pluginPermissions(args)
	case "tasks":
		return m.tasks(args)
	case events.ActionCancel, events.ActionRetry, events.ActionPause, events.ActionResume:
		return m.operate(ctx, cmd, args)
	case "schedule":
		return m.schedule(ctx, args)
	case "completion":
		return m.completion(args)
	case "help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	case "version":
		fmt.Fprintln(m.Stdout, cli.Version("qtasksd"))
		return nil
	}
	return &usageError{Msg: fmt.Sprintf("unknown command %q", cmd), Hint: "qtasksd help"}
}

const usage = `qtasksd: the qtasks daemon and its command line

Commands:
  qtasksd [run] [flags]        start the daemon: embedded NATS (or --nats-url), a worker, HTTP
  qtasksd submit NAME [flags]  submit a task (--kw JSON, --args JSON, --wait; --run-at TIME or --run-in D delays it)
  qtasksd submit-many          submit the tasks of NDJSON lines on stdin, one result line each
  qtasksd status ID            print a task's record as JSON
  qtasksd chain STEP... [flags] run tasks in sequence, each result appended to the next's args;
                               STEP is a task name or {"name","args","kw","queue","priority"} (--wait)
  qtasksd plugins              list registered plugins
  qtasksd tasks                the tasks qtasksd runs: names, queue, keyword arguments
  qtasksd cancel ID            cancel a task (queued: never runs; running: its context is cancelled)
  qtasksd retry ID             queue a new attempt of a task that ended in error or cancel
  qtasksd pause QUEUE          stop the queue's workers from taking tasks (kept across restarts)
  qtasksd resume QUEUE         let them take tasks again
                               (each takes --reason and --by, recorded in the log with the action)
  qtasksd schedule add NAME --task T (--cron EXPR [--tz ZONE] | --every D) [--kw JSON] [--catch-up skip|one|all]
  qtasksd schedule list|remove NAME|pause NAME|resume NAME
                               periodic tasks (QTasks' timers), kept in JetStream; one task per tick
  qtasksd plugin-permissions NAME [--mode M] [--trigger T]...
                               print a plugin's least NATS permissions (nats-server config)
  qtasksd version              print the version and the protocol version (also --version)
  qtasksd completion SHELL     print the completion script of bash, zsh or fish

Run "qtasksd COMMAND -h" for a command's flags. Every flag can also be set
through the environment variable named in its help.
`
