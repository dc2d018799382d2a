package main

import (
	"os/exec"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/internal/testkit"
)

// qtasksd completion bash|zsh|fish, from the installed binary: every
// command of the usage text, each with its flags, and run's flags before
// any command (qtasksd --port 4223 runs the daemon).
func TestCompletion(t *testing.T) {
	t.Parallel()
	usageCmds := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  qtasksd \[?([a-z-]+)`).FindAllStringSubmatch(usage, -1) {
		usageCmds[m[1]] = true
	}
	usageCmds["help"] = true // the usage text is help's
	for _, name := range commandNames {
		require.True(t, usageCmds[name], "%s is completed but not in the usage text", name)
		delete(usageCmds, name)
		if name == "completion" {
			continue
		}
		out, err := exec.CommandContext(t.Context(), bin, name, "-h").CombinedOutput()
		require.NoError(t, err, "%s -h: %s", name, out)
		require.NotContains(t, string(out), "unknown command", name)
	}
	require.Empty(t, usageCmds, "commands of the usage text that are not completed")

	script, err := exec.CommandContext(t.Context(), bin, "completion", "bash").Output()
	require.NoError(t, err)
	complete := func(words ...string) []string { return testkit.BashComplete(t, string(script), "qtasksd", words...) }
	require.ElementsMatch(t, []string{"plugins", "plugin-permissions"}, complete("plug"))
	require.Equal(t, []string{"--kw"}, complete("submit", "add", "--kw"))
	require.Equal(t, []string{"--data-dir"}, complete("--data"))
	require.Equal(t, []string{"--data-dir"}, complete("run", "--data"))
	require.Equal(t, []string{"--reason"}, complete("cancel", "ID", "--rea"))

	shells := map[string]string{}
	for _, sh := range []string{"zsh", "fish"} {
		out, err := exec.CommandContext(t.Context(), bin, "completion", sh).Output()
		require.NoError(t, err)
		require.Contains(t, string(out), "plugin-permissions")
		require.Contains(t, string(out), "http-max-waits")
		shells[sh] = string(out)
	}
	testkit.CheckShellSyntax(t, shells)
	out, err := exec.CommandContext(t.Context(), bin, "completion", "tcsh").CombinedOutput()
	require.Error(t, err)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, exitUsage, ee.ExitCode())
	require.Contains(t, string(out), "want bash, zsh or fish")
}
