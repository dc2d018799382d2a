package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/qtasks/qtasks-go/events"
)

// Version is the line a command prints for --version: its name, the
// module's version (the VCS revision when built from a checkout), the wire
// protocol it speaks (events.ProtocolVersion) and the Go release.
func Version(prog string) string {
	v := "(unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if (v == "" || v == "(devel)") && rev != "" {
			v = "devel " + rev[:min(12, len(rev))]
			if modified == "true" {
				v += "+dirty"
			}
		}
	}
	return fmt.Sprintf("%s %s (protocol %d, %s)", prog, v, events.ProtocolVersion, runtime.Version())
}

// PrintVersion prints Version(prog) to w and reports true when args ask for
// it: --version (or -version) as the first argument.
func PrintVersion(w io.Writer, prog string, args []string) bool {
	if len(args) == 0 || args[0] != "--version" && args[0] != "-version" {
		return false
	}
	fmt.Fprintln(w, Version(prog))
	return true
}
