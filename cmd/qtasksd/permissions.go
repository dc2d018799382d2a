package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// pluginPermissions prints a nats-server authorization block for a plugin's
// user: the least rights it needs (bus.PluginPermissions).
func (m *Main) pluginPermissions(args []string) error {
	fs := newFlagSet("qtasksd plugin-permissions", m.Stderr, "qtasksd plugin-permissions NAME [--mode mutator|observer|shadow] [--trigger T]...")
	mode := fs.String("mode", events.ModeMutator, "plugin mode: mutator, observer or shadow")
	password := fs.String("password", "CHANGE-ME", "password to put in the block")
	var triggers multiFlag
	fs.Var(&triggers, "trigger", "a trigger the plugin is named for (repeatable); none means global")
	name, rest := "", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, rest = args[0], args[1:]
	}
	if err := parse(fs, rest, "qtasksd plugin-permissions my-plugin --trigger task_executor_args_replace"); err != nil {
		return err
	}
	if name == "" || !events.ValidToken(name) {
		return &usageError{Msg: fmt.Sprintf("plugin name %q is not a valid name", name), Hint: "qtasksd plugin-permissions my-plugin"}
	}
	switch *mode {
	case events.ModeMutator, events.ModeObserver, events.ModeShadow:
	default:
		return &usageError{Msg: fmt.Sprintf("--mode %q: want mutator, observer or shadow", *mode)}
	}
	for _, t := range triggers {
		if _, ok := events.Lookup(t); !ok {
			return &usageError{Msg: fmt.Sprintf("unknown trigger %q", t)}
		}
	}
	p := bus.PluginPermissions(events.PluginInfo{Name: name, Mode: *mode, Triggers: triggers})
	q := func(ss []string) string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = "        " + strconv.Quote(s)
		}
		return strings.Join(out, ",\n")
	}
	fmt.Fprintf(m.Stdout, `# nats-server authorization for qtasks plugin %q (%s).
# The plugin must use the inbox prefix %q.
# The rights are the same for every mode: the plugin registers through
# the registrar (qtasksd --registrar on), which creates its consumer.
authorization {
  users: [
    {
      user: %q
      password: %q
      permissions: {
        publish: { allow: [
%s
        ] }
        subscribe: { allow: [
%s
        ] }
      }
    }
  ]
}
`, name, *mode, bus.PluginInboxPrefix(name), name, *password, q(p.Publish), q(p.Subscribe))
	return nil
}
