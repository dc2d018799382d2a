package cli_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/internal/cli"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// A program of two commands: its completion lists them, the flags each
// one's flag set has, and the shells of completion.
func TestCompletion(t *testing.T) {
	t.Parallel()
	run := func(_ context.Context, _, stderr io.Writer, args []string) error {
		fs := cli.NewFlagSet("p "+args[0], stderr, "p "+args[0])
		switch args[0] {
		case "serve":
			fs.Int("port", 0, "port")
			fs.Bool("v", false, "verbose")
		case "get":
			fs.String("output-file", "", "where")
		}
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return fmt.Errorf("ran %v: -h must stop a command before it does anything", args)
	}
	c := cli.CompletionOf("my-prog", []string{"serve", "get", "completion"}, run)
	c.Default = "serve"
	require.Equal(t, []string{"port", "v"}, c.Commands[0].Flags)
	require.Equal(t, []string{"output-file"}, c.Commands[1].Flags)

	bash, err := c.Script("bash")
	require.NoError(t, err)
	require.Equal(t, []string{"serve"}, testkit.BashComplete(t, bash, "my-prog", "se"))
	require.Equal(t, []string{"--port"}, testkit.BashComplete(t, bash, "my-prog", "serve", "--po"))
	require.Equal(t, []string{"-v"}, testkit.BashComplete(t, bash, "my-prog", "serve", "--port", "1", "-v"))
	require.Equal(t, []string{"--output-file"}, testkit.BashComplete(t, bash, "my-prog", "get", "-"))
	require.Equal(t, []string{"zsh"}, testkit.BashComplete(t, bash, "my-prog", "completion", "z"))
	// A flag first runs the default command.
	require.ElementsMatch(t, []string{"--port", "-v", "--version", "--help"}, testkit.BashComplete(t, bash, "my-prog", "-"))
	require.Equal(t, []string{"--port"}, testkit.BashComplete(t, bash, "my-prog", "-v", "--p"))

	zsh, err := c.Script("zsh")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(zsh, "#compdef my-prog\n"))
	require.Contains(t, zsh, "serve) flags=(--port -v)")
	require.Contains(t, zsh, "compdef _my_prog my-prog")
	fish, err := c.Script("fish")
	require.NoError(t, err)
	require.Contains(t, fish, "complete -c my-prog -n '__fish_seen_subcommand_from get' -l output-file")
	require.Contains(t, fish, "complete -c my-prog -n '__fish_seen_subcommand_from serve' -s v")
	testkit.CheckShellSyntax(t, map[string]string{"zsh": zsh, "fish": fish})

	_, err = c.Script("tcsh")
	var ue *cli.UsageError
	require.ErrorAs(t, err, &ue)
	require.ErrorAs(t, cli.RunCompletion(io.Discard, c, nil), &ue)
	var help strings.Builder
	require.NoError(t, cli.RunCompletion(&help, c, []string{"-h"}))
	require.Contains(t, help.String(), "source <(my-prog completion bash)")
	require.ErrorIs(t, run(context.Background(), io.Discard, io.Discard, []string{"serve", "-h"}), flag.ErrHelp)
}
