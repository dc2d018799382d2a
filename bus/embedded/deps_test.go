package embedded_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// nats-server is linked only where an embedded server runs: package bus and
// the plugin SDK and binaries must not depend on it (it made a plugin
// binary 38 MB instead of 24 MB, docs/ARCHITECTURE.md, "The exchange").
// plugins/replay starts the replay's candidate server and is not part of a
// plugin binary.
func TestPluginsDoNotLinkNATSServer(t *testing.T) {
	t.Parallel()
	const mod = "github.com/qtasks/qtasks-go/"
	pkgs := []string{mod + "bus", mod + "events", mod + "plugins/...", mod + "examples/scaleplugin"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", append([]string{"list", "-f", `{{.ImportPath}} {{join .Deps " "}}`}, pkgs...)...).CombinedOutput() //nolint:gosec // G204: the go tool, listing this module's own packages
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		pkg, deps, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.HasPrefix(pkg, mod+"plugins/replay") {
			continue
		}
		checked++
		for dep := range strings.FieldsSeq(deps) {
			if strings.HasPrefix(dep, "github.com/nats-io/nats-server/") {
				t.Errorf("%s depends on %s: only bus/embedded may link nats-server", pkg, dep)
				break
			}
		}
	}
	if checked < 5 { // bus, events, plugins, its commands...
		t.Fatalf("go list listed %d packages, expected the plugin SDK and its commands:\n%s", checked, out)
	}
}
