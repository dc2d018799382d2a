// Command qtasks-validate runs the validation plugin (package
// plugins/validate) as a process of its own: it refuses submissions whose
// arguments break their task's JSON Schema and coerces arguments before the
// task runs.
//
//	qtasks-validate --nats-url nats://127.0.0.1:4222 --schema add=schemas/add.json --schema resize=schemas/resize.json
//
// It prints "ready" once registered and stops on SIGINT or SIGTERM.
// Exit codes: 0 ok, 1 failure, 2 bad usage (including a schema that does
// not compile).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/qtasks/qtasks-go/internal/cli"
	"github.com/qtasks/qtasks-go/plugins/validate"
)

const cmd = "qtasks-validate"

func main() { os.Exit(mainCode()) }

// mainCode is main but for the exit, so that its deferred calls run first.
func mainCode() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.ExitCode(cmd, run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if cli.PrintVersion(stdout, cmd, args) {
		return nil
	}
	var f cli.PluginFlags
	var specs cli.Strings
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s --schema TASK=FILE [--schema ...] [flags]\n\nFlags:\n", cmd)
		fs.PrintDefaults()
	}
	f.Register(fs, validate.DefaultName)
	fs.Var(&specs, "schema", "TASK=FILE: the JSON Schema of task TASK's input; repeatable")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if err := f.Check(); err != nil {
		return err
	}
	if len(specs) == 0 {
		return cli.Usagef("no --schema given: nothing to validate")
	}
	log, err := f.Logger(stderr)
	if err != nil {
		return err
	}
	schemas := validate.Schemas{}
	for _, s := range specs {
		task, file, ok := strings.Cut(s, "=")
		if !ok || task == "" || file == "" {
			return cli.Usagef("--schema %q: want TASK=FILE", s)
		}
		if _, dup := schemas[task]; dup {
			return cli.Usagef("--schema %q: task %s has a schema already", s, task)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return cli.Usagef("--schema %q: %v", s, err)
		}
		schemas[task] = json.RawMessage(b)
	}
	p, err := validate.New(schemas)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	return f.Serve(ctx, log, p.Spec(), stdout)
}
