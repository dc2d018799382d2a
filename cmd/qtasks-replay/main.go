// Command qtasks-replay reads the history and audit trail that the SQLite
// projection keeps, and builds that projection: from the live event log
// (project) or from scratch (rebuild).
//
// Usage:
//
//	qtasks-replay history TASK_ID      a task's timeline: every trigger, plugin call and patch
//	qtasks-replay tasks [filters]      tasks by status, name, tag and creation time, paged
//	qtasks-replay blame TASK_ID        which plugin last changed each field of a task
//	qtasks-replay calls [filters]      plugin calls by plugin, version and outcome
//	qtasks-replay rebuild              rebuild the projection from sequence 1 and swap it in
//	qtasks-replay project              keep the projection up to date with the log
//	qtasks-replay plugin NAME          replay NAME's recorded invocations against a candidate version
//	qtasks-replay export NAME          write NAME's recorded history as NDJSON CloudEvents
//	qtasks-replay redrive TASK_ID...   push recorded runs through today's chain (no task re-runs)
//	qtasks-replay shadow NAME          a shadow plugin's divergence rate
//	qtasks-replay verify               check the event log against its seals
//
// Exit codes: see exitCodes (and "qtasks-replay help"), their one home.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/qtasks/qtasks-go/internal/cli"
)

func main() { os.Exit(mainCode()) }

// mainCode is main but for the exit, so that its deferred calls run first.
func mainCode() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ExitCode(NewMain(os.Stdout, os.Stderr).Run(ctx, os.Args[1:]), os.Stderr)
}

// Exit codes a script can rely on. exitCodes says what each means, in the
// usage text and in the flags that mention one.
const (
	ExitOK       = cli.ExitOK
	ExitFailure  = cli.ExitFailure // the operation failed (NATS, SQLite, ...)
	ExitUsage    = cli.ExitUsage   // bad command line
	ExitNotFound = 3               // the task is not in the projection
	ExitNoDB     = 4               // no projection database, one with a schema this program cannot read, or a --db that is not a projection
	// ExitDivergent: a replay, re-drive or shadow check found a
	// divergence, so that CI can gate a plugin release on it.
	ExitDivergent = 5
	// ExitTampered: the log differs from what its seals say: history was
	// deleted, altered or inserted (or an anchor is gone or changed).
	ExitTampered = 6
	// ExitUnproven: the log holds messages but no seal that could be
	// checked, so nothing is proven (is a qtasksd sealing it?).
	ExitUnproven = 7
)

// exitCodes is the one description of the exit codes: the usage text is
// made from it.
var exitCodes = cli.ExitCodes{
	{Code: ExitOK, Means: "ok"},
	{Code: ExitFailure, Means: "failure"},
	{Code: ExitUsage, Means: "bad usage"},
	{Code: ExitNotFound, Means: "task not found (for redrive, ids with no recorded facts)"},
	{Code: ExitNoDB, Means: "no projection database (or one with a schema this program cannot read, or a --db that is not a projection: it is left untouched)"},
	{Code: ExitDivergent, Means: "a replay, re-drive or shadow check (with --max-rate) diverged: gate a plugin release on it"},
	{Code: ExitTampered, Means: "verify found history deleted, altered or inserted (or the --anchor gone or changed)"},
	{Code: ExitUnproven, Means: "verify found no seal it could check (nothing proven)"},
}

type (
	usageError = cli.UsageError
	exitError  = cli.ExitError
)

// ExitCode prints err (if any) to stderr and returns the process exit code.
func ExitCode(err error, stderr io.Writer) int { return cli.ExitCode("qtasks-replay", err, stderr) }

// Main runs qtasks-replay's commands; tests call Run directly.
type Main struct {
	Stdout, Stderr io.Writer
}

// NewMain returns a Main writing to stdout and stderr.
func NewMain(stdout, stderr io.Writer) *Main { return &Main{Stdout: stdout, Stderr: stderr} }

// Run runs the command in args.
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage())
		return &usageError{Msg: "no command given", Hint: "qtasks-replay help"}
	}
	if cli.PrintVersion(m.Stdout, "qtasks-replay", args) {
		return nil
	}
	cmd, args := args[0], args[1:]
	for _, c := range commands() {
		if c.name == cmd {
			return c.run(m, ctx, args)
		}
	}
	switch cmd {
	case "-h", "-help", "--help":
		return m.help(ctx, args)
	}
	return &usageError{Msg: fmt.Sprintf("unknown command %q", cmd), Hint: "qtasks-replay help"}
}

// commands is qtasks-replay's one table of commands: Run dispatches on it
// and the shell completion lists it.
func commands() []command {
	return []command{
		{"history", (*Main).history},
		{"tasks", (*Main).tasks},
		{"blame", (*Main).blame},
		{"calls", (*Main).calls},
		{"rejected", (*Main).rejected},
		{"rebuild", (*Main).rebuild},
		{"project", (*Main).project},
		{"plugin", (*Main).replayPlugin},
		{"export", (*Main).export},
		{"redrive", (*Main).redrive},
		{"shadow", (*Main).shadow},
		{"verify", (*Main).verify},
		{"completion", (*Main).completion},
		{"help", (*Main).help},
		{"version", (*Main).version},
	}
}

type command struct {
	name string
	run  func(m *Main, ctx context.Context, args []string) error
}

func (m *Main) help(context.Context, []string) error {
	fmt.Fprint(m.Stdout, usage())
	return nil
}

func (m *Main) version(context.Context, []string) error {
	fmt.Fprintln(m.Stdout, cli.Version("qtasks-replay"))
	return nil
}

// completion prints the shell completion script of every command and its
// flags (see cli.CompletionOf).
func (m *Main) completion(_ context.Context, args []string) error {
	names := make([]string, len(commands()))
	for i, c := range commands() {
		names[i] = c.name
	}
	comp := cli.CompletionOf("qtasks-replay", names, func(ctx context.Context, stdout, stderr io.Writer, args []string) error {
		return NewMain(stdout, stderr).Run(ctx, args)
	})
	return cli.RunCompletion(m.Stdout, comp, args)
}

func usage() string { return strings.Replace(usageText, "{exit_codes}", exitCodes.Doc(), 1) }

const usageText = `qtasks-replay: history and audit from the qtasks projection, and its rebuild

Commands:
  qtasks-replay history TASK_ID   a task's timeline: every trigger, each plugin call and its patch as a diff
  qtasks-replay tasks             tasks, newest first (--status, --name, --tag, --since, --until, --limit, --cursor)
  qtasks-replay blame TASK_ID     for each field of a task, the plugin (and version, and sequence) that last changed it
  qtasks-replay calls             plugin calls (--plugin, --version, --outcome, --trigger, --task)
  qtasks-replay rejected          messages of the log that are not valid events, and why (--after SEQ)
  qtasks-replay rebuild           build the projection from sequence 1 beside the live one, then swap it in
  qtasks-replay project           keep the projection up to date with the event log (--once: catch up and exit)
  qtasks-replay plugin NAME       replay NAME's recorded invocations against a candidate version
                                  (--candidate-cmd 'prog --nats-url {nats_url}', --baseline-cmd, --mask, --pace, --json)
  qtasks-replay export NAME       write NAME's recorded history as NDJSON CloudEvents (-o FILE), for go test
  qtasks-replay redrive TASK_ID.. push recorded runs through today's chain or --candidate NAME=CMD; no task re-runs
  qtasks-replay shadow NAME       how often shadow plugin NAME disagrees with the live one (--max-rate)
  qtasks-replay verify            check the event log against its seals: the first sequence where history
                                  was deleted, altered or inserted (--anchor SEQ:DIGEST, --json)
  qtasks-replay completion SHELL  print the completion script of bash, zsh or fish

Every command but verify takes --db (QTASKS_DB, default qtasks-data/qtasks.db);
the read commands and verify take --json. rebuild, project and verify connect with --nats-url
(QTASKS_NATS_URL) and the other NATS credential flags.

{exit_codes}
With --json, stdout is one JSON document on success (and the report on 3 and
5 of redrive and plugin, verify's on 6 and 7) and empty on failure; errors go
to stderr.

verify proves the messages its seals cover, no more: not the messages after
the last seal, not a truncation that removed the last seals too (keep the
anchor it prints, and pass it later as --anchor), and not a rewrite by
someone who may write seals (qtasksd's rights) and recomputes them.

Run "qtasks-replay COMMAND -h" for a command's flags; "qtasks-replay version"
(or --version) prints the version and the protocol version;
"qtasks-replay completion bash|zsh|fish" prints a shell completion script.
`
