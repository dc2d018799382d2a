package e2e_test

import (
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// commands are the programs the tests run, by name: each is built once,
// when a test first starts it (testkit.Build).
var commands = map[string]string{
	"qtasksd":         "../../cmd/qtasksd",
	"qtasks-replay":   "../../cmd/qtasks-replay",
	"scaleplugin":     "../../examples/scaleplugin",
	"quickstart":      "../../examples/quickstart",
	"qtasks-validate": "../../plugins/validate/cmd/qtasks-validate",
	"qtasks-retry":    "../../plugins/retry/cmd/qtasks-retry",
}

// procLimit bounds how long a test waits for one of its processes to exit.
const procLimit = 60 * time.Second

// startProc starts one of the binaries TestMain built.
func startProc(t *testing.T, bin string, args ...string) *testkit.Proc {
	t.Helper()
	pkg, ok := commands[bin]
	if !ok {
		t.Fatalf("no command %s", bin)
	}
	return testkit.StartProc(t, "", testkit.Build(t, pkg), args...)
}
