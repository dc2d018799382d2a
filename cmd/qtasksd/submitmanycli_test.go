package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// cliRun runs a qtasksd command in this process and returns its exit code
// and stdout.
func cliRun(t *testing.T, stdin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var out, errOut bytes.Buffer
	m := NewMain(&out, &errOut)
	m.Stdin = strings.NewReader(stdin)
	code := exitCode(m.Run(ctx, args), io.Discard)
	t.Logf("qtasksd %s: exit %d; stderr: %s", strings.Join(args, " "), code, errOut.String())
	return code, out.String()
}

// submit's exit codes: 0 for a task made, 8 for the key's existing task, 9
// for the key with other arguments (8 with --on-conflict existing);
// --unique makes the key; bad unique flags are usage errors.
func TestCLISubmitDuplicateAndConflict(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	url := b.ClientURL()
	code, out := cliRun(t, "", "submit", "add", "--kw", `{"a":1}`, "--key", "cli-1", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var first events.Task
	require.NoError(t, json.Unmarshal([]byte(out), &first))
	code, out = cliRun(t, "", "submit", "add", "--kw", `{"a":1}`, "--key", "cli-1", "--nats-url", url)
	require.Equal(t, exitDuplicate, code, out)
	require.Contains(t, out, first.ID, "the existing task's record is printed")
	code, _ = cliRun(t, "", "submit", "add", "--kw", `{"a":2}`, "--key", "cli-1", "--nats-url", url)
	require.Equal(t, exitConflict, code)
	code, _ = cliRun(t, "", "submit", "add", "--kw", `{"a":2}`, "--key", "cli-1", "--on-conflict", "existing", "--nats-url", url)
	require.Equal(t, exitDuplicate, code)

	code, _ = cliRun(t, "", "submit", "add", "--kw", `{"a":3}`, "--unique", "args,queue", "--nats-url", url)
	require.Equal(t, exitOK, code)
	code, _ = cliRun(t, "", "submit", "add", "--kw", `{"a":3}`, "--unique", "args,queue", "--nats-url", url)
	require.Equal(t, exitDuplicate, code)
	for _, bad := range [][]string{{"--unique", "colour"}, {"--unique-period", "1ms"}, {"--unique", "args", "--key", "k"}, {"--on-conflict", "maybe"}} {
		code, _ = cliRun(t, "", append([]string{"submit", "add", "--nats-url", url}, bad...)...)
		require.Equal(t, exitUsage, code, "%v", bad)
	}
}

// submit-many: one result line per input line, in order, with its line
// number; exit 0 when all were queued, 10 when some were not.
func TestCLISubmitMany(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	url := b.ClientURL()
	var in strings.Builder
	for i := range 20 {
		fmt.Fprintf(&in, `{"name":"add","kw":{"a":%d}}`+"\n", i)
	}
	in.WriteString("\n" + `{"name":"add","kw":{"a":1},"key":"m-1"}` + "\n")
	code, out := cliRun(t, in.String(), "submit-many", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 21)
	var r batchResult
	require.NoError(t, json.Unmarshal([]byte(lines[20]), &r))
	require.Equal(t, 22, r.Line, "the blank line counts")
	require.Equal(t, 201, r.Status)

	code, out = cliRun(t, `{"name":"add","kw":{"a":1},"key":"m-1"}`+"\n"+`{"name":"a.b"}`+"\nnot json\n"+`{"name":"add"}`+"\n", "submit-many", "--nats-url", url)
	require.Equal(t, exitPartial, code, out)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4)
	for i, want := range []int{200, 400, 400, 201} {
		var r batchResult
		require.NoError(t, json.Unmarshal([]byte(lines[i]), &r))
		require.Equal(t, want, r.Status, lines[i])
		require.Equal(t, i+1, r.Line)
	}
}
