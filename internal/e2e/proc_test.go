package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/internal/cli/clitest"
)

// binDir holds the binaries built once for the package's tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qtasks-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, pkg := range []string{"./cmd/qtasksd", "./cmd/qtasks-replay", "./examples/scaleplugin", "./examples/quickstart", "./plugins/validate/cmd/qtasks-validate"} {
		out := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = "../.."
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// procLimit bounds how long a test waits for one of its processes to exit.
const procLimit = 60 * time.Second

// startProc starts one of the binaries TestMain built.
func startProc(t *testing.T, bin string, args ...string) *clitest.Proc {
	t.Helper()
	return clitest.Start(t, "", filepath.Join(binDir, bin), args...)
}
