package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// Shells that Completion.Script writes for.
var Shells = []string{"bash", "zsh", "fish"}

// Completion describes a program for its shell completion: its commands
// and the flags of each.
type Completion struct {
	Prog     string
	Commands []CompletionCommand
	// Default is the command a first argument that is a flag runs
	// (qtasksd's run), if any.
	Default string
}

// CompletionCommand is one command and its flags (names without dashes).
type CompletionCommand struct {
	Name  string
	Flags []string
	// Args completes the command's first argument (completion's shells);
	// empty: file names.
	Args []string
}

// flagLine is a flag in the output of flag.FlagSet.PrintDefaults.
var flagLine = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][A-Za-z0-9_.-]*)`)

// CompletionOf builds the completion of prog from its commands: the flags
// of each are read from what the command prints for -h, which run produces
// from the command's own flag set, so that the completion cannot list a
// flag the command does not take, nor miss one. run is called with a
// cancelled context and "NAME -h"; each command parses its flags first
// and returns at -h, so nothing else runs.
func CompletionOf(prog string, names []string, run func(ctx context.Context, stdout, stderr io.Writer, args []string) error) Completion {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := Completion{Prog: prog}
	for _, name := range names {
		cmd := CompletionCommand{Name: name}
		if name == "completion" { // no flags; and asking it would recurse
			cmd.Args = Shells
			c.Commands = append(c.Commands, cmd)
			continue
		}
		var help bytes.Buffer
		_ = run(ctx, io.Discard, &help, []string{name, "-h"})
		for _, m := range flagLine.FindAllStringSubmatch(help.String(), -1) {
			if !slices.Contains(cmd.Flags, m[1]) {
				cmd.Flags = append(cmd.Flags, m[1])
			}
		}
		c.Commands = append(c.Commands, cmd)
	}
	return c
}

// Script is the completion script for shell (bash, zsh or fish).
func (c Completion) Script(shell string) (string, error) {
	switch shell {
	case "bash":
		return c.bash(), nil
	case "zsh":
		return c.zsh(), nil
	case "fish":
		return c.fish(), nil
	}
	return "", &UsageError{Msg: fmt.Sprintf("completion %q: want bash, zsh or fish", shell), Hint: c.Prog + " completion bash"}
}

// dashed is a flag as typed: -o for one letter, --name otherwise (the
// flag package takes both forms; these are the ones the help shows).
func dashed(f string) string {
	if len(f) == 1 {
		return "-" + f
	}
	return "--" + f
}

func (c Completion) fn() string { return "_" + strings.NewReplacer("-", "_", ".", "_").Replace(c.Prog) }

func (c Completion) names() string {
	var out []string
	for _, cmd := range c.Commands {
		out = append(out, cmd.Name)
	}
	return strings.Join(append(out, "--version", "--help"), " ")
}

func (cmd CompletionCommand) flags() string {
	out := make([]string, len(cmd.Flags))
	for i, f := range cmd.Flags {
		out[i] = dashed(f)
	}
	return strings.Join(out, " ")
}

func (c Completion) bash() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# bash completion for %s; load with: source <(%s completion bash)\n", c.Prog, c.Prog)
	fmt.Fprintf(&b, "%s() {\n", c.fn())
	b.WriteString("\tlocal cur=\"${COMP_WORDS[COMP_CWORD]}\" cmd=\"${COMP_WORDS[1]}\" flags=\"\" args=\"\"\n")
	if c.Default != "" {
		fmt.Fprintf(&b, "\t[[ $cmd == -* ]] && cmd=%s\n", c.Default)
	}
	b.WriteString("\tif [[ $COMP_CWORD -eq 1 && $cur != -* ]]; then\n")
	fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\treturn\n\tfi\n", c.names())
	b.WriteString("\tcase \"$cmd\" in\n")
	for _, cmd := range c.Commands {
		fmt.Fprintf(&b, "\t%s) flags=%q; args=%q ;;\n", cmd.Name, cmd.flags(), strings.Join(cmd.Args, " "))
	}
	b.WriteString("\tesac\n")
	b.WriteString("\tif [[ $cur == -* ]]; then\n")
	b.WriteString("\t\t[[ $COMP_CWORD -eq 1 ]] && flags=\"$flags --version --help\"\n")
	b.WriteString("\t\tCOMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n")
	b.WriteString("\telif [[ -n $args && $COMP_CWORD -eq 2 ]]; then\n\t\tCOMPREPLY=($(compgen -W \"$args\" -- \"$cur\"))\n")
	b.WriteString("\telse\n\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n\tfi\n}\n")
	fmt.Fprintf(&b, "complete -o default -F %s %s\n", c.fn(), c.Prog)
	return b.String()
}

func (c Completion) zsh() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#compdef %s\n# zsh completion for %s; load with: source <(%s completion zsh), or save as _%s in $fpath\n",
		c.Prog, c.Prog, c.Prog, c.Prog)
	fmt.Fprintf(&b, "%s() {\n", c.fn())
	b.WriteString("\tlocal cmd=$words[2]\n\tlocal -a flags args\n")
	if c.Default != "" {
		fmt.Fprintf(&b, "\t[[ $cmd == -* ]] && cmd=%s\n", c.Default)
	}
	b.WriteString("\tif (( CURRENT == 2 )) && [[ $PREFIX != -* ]]; then\n")
	fmt.Fprintf(&b, "\t\tcompadd -- %s\n\t\treturn\n\tfi\n", c.names())
	b.WriteString("\tcase $cmd in\n")
	for _, cmd := range c.Commands {
		fmt.Fprintf(&b, "\t%s) flags=(%s); args=(%s) ;;\n", cmd.Name, cmd.flags(), strings.Join(cmd.Args, " "))
	}
	b.WriteString("\tesac\n")
	b.WriteString("\tif [[ $PREFIX == -* ]]; then\n\t\t(( CURRENT == 2 )) && flags+=(--version --help)\n\t\tcompadd -- $flags\n")
	b.WriteString("\telif (( ${#args} && CURRENT == 3 )); then\n\t\tcompadd -- $args\n")
	b.WriteString("\telse\n\t\t_files\n\tfi\n}\n")
	fmt.Fprintf(&b, "if [[ $funcstack[1] == %s ]]; then\n\t%s \"$@\"\nelse\n\tcompdef %s %s\nfi\n", c.fn(), c.fn(), c.fn(), c.Prog)
	return b.String()
}

func (c Completion) fish() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# fish completion for %s; load with: %s completion fish | source\n", c.Prog, c.Prog)
	var names []string
	for _, cmd := range c.Commands {
		names = append(names, cmd.Name)
	}
	fmt.Fprintf(&b, "complete -c %s -n __fish_use_subcommand -f -a %q\n", c.Prog, strings.Join(names, " "))
	fmt.Fprintf(&b, "complete -c %s -n __fish_use_subcommand -l version -d 'print the version'\n", c.Prog)
	for _, cmd := range c.Commands {
		if cmd.Name != c.Default {
			continue
		}
		for _, f := range cmd.Flags { // the default command's flags, before any command
			fmt.Fprintf(&b, "complete -c %s -n __fish_use_subcommand %s %s\n", c.Prog, fishOpt(f), f)
		}
	}
	for _, cmd := range c.Commands {
		cond := fmt.Sprintf("'__fish_seen_subcommand_from %s'", cmd.Name)
		for _, f := range cmd.Flags {
			fmt.Fprintf(&b, "complete -c %s -n %s %s %s\n", c.Prog, cond, fishOpt(f), f)
		}
		if len(cmd.Args) > 0 {
			fmt.Fprintf(&b, "complete -c %s -n %s -f -a %q\n", c.Prog, cond, strings.Join(cmd.Args, " "))
		}
	}
	return b.String()
}

// fishOpt is fish's option kind for flag f: -s for one letter, -l else.
func fishOpt(f string) string {
	if len(f) == 1 {
		return "-s"
	}
	return "-l"
}

// RunCompletion is the completion command: it prints the script for the
// shell in args to w.
func RunCompletion(w io.Writer, c Completion, args []string) error {
	if len(args) != 1 {
		return &UsageError{Msg: "completion takes one shell: bash, zsh or fish", Hint: c.Prog + " completion bash"}
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprintf(w, "Usage: %s completion bash|zsh|fish\n\nPrints the shell's completion script for %s's commands and flags:\n"+
			"  source <(%s completion bash)    # bash, or zsh\n  %s completion fish | source     # fish\n", c.Prog, c.Prog, c.Prog, c.Prog)
		return nil
	}
	s, err := c.Script(args[0])
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, s)
	return err
}
