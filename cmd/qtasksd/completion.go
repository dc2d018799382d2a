package main

import (
	"context"
	"io"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/cli"
)

// commandNames are the commands Run takes, for the shell completion (the
// flags of each come from the command's own flag set: cli.CompletionOf).
// TestCompletion checks it against Run and the usage text.
var commandNames = []string{
	"run", "submit", "submit-many", "status", "plugins", "tasks", "schedule", "chain",
	events.ActionCancel, events.ActionRetry, events.ActionPause, events.ActionResume,
	"plugin-permissions", "completion", "help", "version",
}

// completion prints the shell completion script of qtasksd's commands.
func (m *Main) completion(args []string) error {
	comp := cli.CompletionOf("qtasksd", commandNames, func(ctx context.Context, stdout, stderr io.Writer, args []string) error {
		return NewMain(stdout, stderr).Run(ctx, args)
	})
	comp.Default = "run" // "qtasksd --port 4223" runs the daemon
	return cli.RunCompletion(m.Stdout, comp, args)
}
