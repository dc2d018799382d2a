package main

import (
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/internal/testkit"
)

// qtasks-replay completion bash|zsh|fish, from the built binary: its
// commands (the table Run dispatches on) and each one's flags.
func TestCompletion(t *testing.T) {
	t.Parallel()
	script, err := exec.CommandContext(t.Context(), bin, "completion", "bash").Output()
	require.NoError(t, err)
	complete := func(words ...string) []string {
		return testkit.BashComplete(t, string(script), "qtasks-replay", words...)
	}
	var all []string
	for _, c := range commands() {
		all = append(all, c.name)
	}
	require.ElementsMatch(t, append(all, "--version", "--help"), complete(""))
	require.ElementsMatch(t, []string{"rebuild", "redrive", "rejected"}, complete("re"))
	require.Equal(t, []string{"--candidate-cmd", "--candidate-log"}, complete("plugin", "scale", "--candidate-"))
	require.Equal(t, []string{"--anchor"}, complete("verify", "--an"))
	require.Equal(t, []string{"-o"}, complete("export", "x", "-o"))
	require.Equal(t, []string{"fish"}, complete("completion", "f"))

	shells := map[string]string{}
	for _, sh := range []string{"zsh", "fish"} {
		out, err := exec.CommandContext(t.Context(), bin, "completion", sh).Output()
		require.NoError(t, err)
		require.Contains(t, string(out), "candidate-log")
		shells[sh] = string(out)
	}
	testkit.CheckShellSyntax(t, shells)
}
