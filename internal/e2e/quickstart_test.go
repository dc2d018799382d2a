package e2e_test

import (
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// README's Go example (examples/quickstart) runs, keeps its data, and
// leaves a projection that qtasks-replay reads: a newcomer can inspect
// what it did.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "qtasks-data")
	p := startProc(t, "quickstart", data)
	require.Equal(t, 0, p.Wait(procLimit), p.Output())
	m := regexp.MustCompile(`task (\S+): success, 1 \+ 2 \+ x = 4`).FindStringSubmatch(p.Output())
	require.NotNil(t, m, p.Output())

	h := startProc(t, "qtasks-replay", "history", m[1], "--db", filepath.Join(data, "qtasks.db"))
	require.Equal(t, 0, h.Wait(procLimit), h.Output())
	require.Contains(t, h.Output(), "result 4")
	require.Contains(t, h.Output(), "task_executor_args_replace")
}
