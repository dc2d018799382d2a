package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BashComplete checks a bash completion script for prog (bash -n accepts
// it, and after sourcing it, complete -p names prog's function), then asks
// it to complete the command line words (the last one being completed)
// and returns what it offers.
func BashComplete(tb testing.TB, script, prog string, words ...string) []string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "completion.bash")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.CommandContext(tb.Context(), "bash", "-n", path).CombinedOutput(); err != nil {
		tb.Fatalf("bash -n refuses the %s completion: %v\n%s", prog, err, out)
	}
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	fn := "_" + strings.NewReplacer("-", "_", ".", "_").Replace(prog)
	sh := `source "$1" || exit 1
spec=$(complete -p ` + prog + `) || exit 1
[[ $spec == *"-F ` + fn + ` ` + prog + `"* ]] || { echo "complete -p: $spec"; exit 1; }
COMP_WORDS=(` + prog + ` ` + strings.Join(quoted, " ") + `)
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
` + fn + `
printf '%s\n' "${COMPREPLY[@]}"`
	out, err := exec.CommandContext(tb.Context(), "bash", "-c", sh, "bash", path).CombinedOutput()
	if err != nil {
		tb.Fatalf("completing %v with the %s completion: %v\n%s", words, prog, err, out)
	}
	return strings.Fields(string(out))
}

// CheckShellSyntax has each shell of scripts (zsh, fish) check its
// script's syntax (zsh -n, fish -n), when that shell is installed here;
// bash is always checked, by BashComplete.
func CheckShellSyntax(tb testing.TB, scripts map[string]string) {
	tb.Helper()
	for shell, script := range scripts {
		if _, err := exec.LookPath(shell); err != nil {
			tb.Logf("%s is not installed: its completion's syntax is not checked", shell)
			continue
		}
		path := filepath.Join(tb.TempDir(), "completion."+shell)
		if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
			tb.Fatal(err)
		}
		if out, err := exec.CommandContext(tb.Context(), shell, "-n", path).CombinedOutput(); err != nil {
			tb.Fatalf("%s -n refuses the completion: %v\n%s", shell, err, out)
		}
	}
}
