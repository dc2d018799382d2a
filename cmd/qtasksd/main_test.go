package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// waitLimit bounds every wait on a process; the embedded server's own
// start-up deadline is 30 s, so a failure that takes that long is caught.
const waitLimit = 2 * time.Minute

// bin is qtasksd built once for the tests that run it as a process.
var bin string

func TestMain(m *testing.M) { testkit.Main(m, testkit.Bin{Path: &bin, Pkg: "."}) }

// daemonArgs run qtasksd in dir on a free port, with no HTTP, its
// projection in dir too.
func daemonArgs(dir string, more ...string) []string {
	return append([]string{"run", "--demo", "--data-dir", filepath.Join(dir, "data"), "--db", filepath.Join(dir, "p.db"), "--port", "0", "--http", "", "--log-level", "warn"}, more...)
}

var urlRE = regexp.MustCompile(`nats://127\.0\.0\.1:[0-9]+`)

// startDaemon starts qtasksd and waits until it is ready; it returns the
// process and its NATS URL.
func startDaemon(t *testing.T, dir string, more ...string) (*testkit.Proc, string) {
	t.Helper()
	p := testkit.StartProc(t, dir, bin, daemonArgs(dir, append([]string{"--log-level", "info"}, more...)...)...)
	bustest.WaitFor(t, waitLimit, "qtasksd to be ready", func() bool {
		require.False(t, p.Exited(), "qtasksd exited: %s", p.Output())
		return strings.Contains(p.Output(), `"qtasksd ready"`)
	})
	return p, urlRE.FindString(p.Output())
}

// runCmd runs qtasksd to its end and returns its exit code and output.
func runCmd(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	p := testkit.StartProc(t, dir, bin, args...)
	return p.Wait(waitLimit), p.Output()
}

// Two qtasksd on one data directory would run two servers writing one
// JetStream store: the second now refuses at once, naming the first, and
// what the first wrote is all there after it stops.
func TestDataDirInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, url := startDaemon(t, dir)
	code, out := runCmd(t, dir, "submit", "add", "--kw", `{"a":1,"b":2}`, "--wait", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var task events.Task
	require.NoError(t, json.Unmarshal([]byte(out), &task), out)

	other := t.TempDir() // its own projection: only the data directory is shared
	code, out = runCmd(t, other, "run", "--data-dir", filepath.Join(dir, "data"), "--port", "0", "--http", "", "--db", filepath.Join(other, "p.db"))
	require.Equal(t, exitFailure, code, out)
	require.Contains(t, out, "in use by another qtasksd (pid "+strconv.Itoa(first.Pid())+")")

	first.Signal(syscall.SIGTERM)
	require.Equal(t, exitOK, first.Wait(waitLimit))
	_, url = startDaemon(t, dir)
	code, out = runCmd(t, dir, "status", task.ID, "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, `"status": "success"`)
}

// A taken port, or one that is not a port, is said at once: the embedded
// server used to wait 30 s and then blame "not ready".
func TestPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()

	start := time.Now()
	code, out := runCmd(t, dir, "run", "--data-dir", filepath.Join(dir, "data"), "--port", strconv.Itoa(port), "--http", "", "--db", filepath.Join(dir, "p.db"))
	require.Equal(t, exitFailure, code, out)
	require.Contains(t, out, fmt.Sprintf("port %d on 127.0.0.1 is not free", port))
	require.Less(t, time.Since(start), 20*time.Second, "not the server's 30 s start-up deadline")
	_, err = os.Stat(filepath.Join(dir, "data"))
	require.ErrorIs(t, err, os.ErrNotExist, "a failed start left a data directory behind")

	// The HTTP address taken: the same, no data directory left behind
	// (it was made before the HTTP listener was tried).
	code, out = runCmd(t, dir, "run", "--data-dir", filepath.Join(dir, "data"), "--port", "-1", "--http", ln.Addr().String(), "--db", filepath.Join(dir, "p.db"))
	require.Equal(t, exitFailure, code, out)
	require.Contains(t, out, "HTTP listener")
	_, err = os.Stat(filepath.Join(dir, "data"))
	require.ErrorIs(t, err, os.ErrNotExist, "a failed start left a data directory behind")

	for _, p := range []string{"-5", "70000"} {
		code, out = runCmd(t, dir, daemonArgs(dir, "--port", p)...)
		require.Equal(t, exitUsage, code, out)
		require.Contains(t, out, "--port "+p)
	}
	_, err = os.Stat(filepath.Join(dir, "p.db"))
	require.ErrorIs(t, err, os.ErrNotExist, "no projection was written")
}

// A bad flag is exit 2 and writes no projection: the executor's flags used
// to be checked after the projector had created its database, and a
// negative --grace was taken.
func TestBadFlagsWriteNothing(t *testing.T) {
	t.Parallel()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--ack-wait", "-5s"}, exitUsage, "ack wait -5s"},
		{[]string{"--concurrency", "-3"}, exitUsage, "concurrency -3"},
		{[]string{"--queue", "a.b"}, exitUsage, `queue "a.b"`},
		{[]string{"--grace", "-1s"}, exitUsage, "--grace -1s"},
		{[]string{"--max-deliveries", "1"}, exitUsage, "max deliveries 1"},
		{[]string{"--seal-every", "0"}, exitUsage, "--seal-every 0"},
		{[]string{"--seal-interval", "-1s"}, exitUsage, "--seal-interval -1s"},
		{[]string{"--http", ln.Addr().String()}, exitFailure, "HTTP listener"},
		{[]string{"--server-tls-cert", "cert.pem"}, exitUsage, "--server-tls-key go together"},
		{[]string{"--server-tls-client-ca", "ca.pem"}, exitUsage, "--server-tls-key go together"},
		{[]string{"--server-tls-cert", "no-such.pem", "--server-tls-key", "no-such-key.pem"}, exitFailure, "server TLS"},
		{[]string{"--http-tls-cert", "cert.pem"}, exitUsage, "--http-tls-key go together"},
		{[]string{"--http-tls-cert", "no-such.pem", "--http-tls-key", "no-such-key.pem"}, exitUsage, "--http-tls-cert/--http-tls-key"},
		{[]string{"--http-max-waits", "0"}, exitUsage, "--http-max-waits 0"},
	} {
		dir := t.TempDir()
		code, out := runCmd(t, dir, daemonArgs(dir, tc.args...)...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, out)
		require.Contains(t, out, tc.msg, tc.args)
		_, err := os.Stat(filepath.Join(dir, "p.db"))
		require.ErrorIs(t, err, os.ErrNotExist, "%v: no projection was written", tc.args)
	}

	// A --db that names another program's file is refused and kept.
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(notes, []byte("precious\n"), 0o600))
	code, out := runCmd(t, dir, "run", "--data-dir", filepath.Join(dir, "data"), "--port", "0", "--http", "", "--db", notes)
	require.Equal(t, exitUsage, code, out)
	require.Contains(t, out, "not a qtasks projection")
	data, err := os.ReadFile(notes)
	require.NoError(t, err)
	require.Equal(t, "precious\n", string(data))
}

// submit checks what it can before sending anything (exit 2), and a --wait
// that ends before any record is seen still says which task was submitted.
func TestSubmitCarelessFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, url := startDaemon(t, dir)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"submit", "a.b"}, `task name "a.b"`},
		{[]string{"submit", "add", "--queue", "a b"}, `--queue "a b"`},
		{[]string{"submit", "add", "--wait", "--timeout", "0s"}, "--timeout 0s"},
		{[]string{"submit", "add", "--wait", "--timeout", "-1s"}, "--timeout -1s"},
		{[]string{"submit", "add", "--key", "a b"}, "--key: invalid idempotency key"},
	} {
		code, out := runCmd(t, dir, append(tc.args, "--nats-url", url)...)
		require.Equal(t, exitUsage, code, "%v: %s", tc.args, out)
		require.Contains(t, out, tc.msg)
	}

	cmd := exec.CommandContext(context.Background(), bin, "submit", "sleep", "--kw", `{"ms":60000}`, "--wait", "--timeout", "1ns", "--nats-url", url)
	cmd.Dir = dir
	stdout, err := cmd.Output()
	require.Equal(t, exitTimeout, cmd.ProcessState.ExitCode(), "%v %s", err, stdout)
	var task events.Task
	require.NoError(t, json.Unmarshal(stdout, &task), string(stdout))
	require.NotEmpty(t, task.ID, "the submitted task's id is printed")
	code, out := runCmd(t, dir, "status", task.ID, "--nats-url", url)
	require.Equal(t, exitOK, code, out)
}

// A number or duration variable the flag cannot take is exit 2 naming it:
// it used to give way to the default in silence.
func TestBadEnvironment(t *testing.T) {
	t.Parallel()
	for _, kv := range []string{"QTASKS_CONCURRENCY=ten", "QTASKS_GRACE=30", "QTASKS_TASK_RETENTION=1 week"} {
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, daemonArgs(dir)...) //nolint:gosec // G204: the test's own build of qtasksd
		cmd.Env = append(os.Environ(), kv)
		out, _ := cmd.CombinedOutput()
		require.Equal(t, exitUsage, cmd.ProcessState.ExitCode(), "%s: %s", kv, out)
		require.Contains(t, string(out), strings.SplitN(kv, "=", 2)[0]+"=")
	}
}

// A client command that finds no server says where it looked and how to
// point it elsewhere: client commands do not know a daemon's --port.
func TestClientNamesNatsURL(t *testing.T) {
	t.Parallel()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "nats://" + l.Addr().String()
	require.NoError(t, l.Close()) // nobody listens there now
	for _, args := range [][]string{{"status", "some-id"}, {"plugins"}, {"submit", "add"}} {
		code, out := runCmd(t, t.TempDir(), append(args, "--nats-url", url)...)
		require.Equal(t, exitFailure, code, out)
		require.Contains(t, out, url, args)
		require.Contains(t, out, "--nats-url", args)
		require.Contains(t, out, "QTASKS_NATS_URL", args)
	}
}

// --version (and the version command) print the version and the protocol
// version, exit 0, and start nothing.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--version", "-version", "version"} {
		dir := t.TempDir()
		code, out := runCmd(t, dir, arg)
		require.Equal(t, exitOK, code, out)
		require.Regexp(t, fmt.Sprintf(`^qtasksd \S.* \(protocol %d, go[0-9.]+\S*\)\n$`, events.ProtocolVersion), out)
		_, err := os.Stat(filepath.Join(dir, "qtasks-data"))
		require.True(t, os.IsNotExist(err), "--version created a data directory")
	}
}

// Without --db, the projection lives in --data-dir: two data directories
// run from one folder do not share one.
func TestDefaultDBInDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "elsewhere")
	p := testkit.StartProc(t, dir, bin, "run", "--data-dir", data, "--port", "0", "--http", "", "--log-level", "info")
	bustest.WaitFor(t, waitLimit, "qtasksd to be ready", func() bool {
		require.False(t, p.Exited(), "qtasksd exited: %s", p.Output())
		return strings.Contains(p.Output(), `"qtasksd ready"`)
	})
	p.Signal(syscall.SIGTERM)
	require.Equal(t, exitOK, p.Wait(waitLimit), p.Output())
	_, err := os.Stat(filepath.Join(data, "qtasks.db"))
	require.NoError(t, err, "no projection in --data-dir")
	_, err = os.Stat(filepath.Join(dir, "qtasks-data"))
	require.True(t, os.IsNotExist(err), "a projection was made in the working directory")
}

// qtasksd tasks lists the tasks the daemon runs with their keyword
// arguments, without a server; an empty plugin list says what it means.
func TestTasksAndEmptyPlugins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, out := runCmd(t, dir, "tasks", "--queue", "q1")
	require.Equal(t, exitOK, code, out)
	var tasks []struct {
		Name  string            `json:"name"`
		Queue string            `json:"queue"`
		Kw    map[string]string `json:"kw"`
		Retry int               `json:"retry"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &tasks), out)
	byName := map[string]int{}
	for i, tk := range tasks {
		byName[tk.Name] = i
		require.Equal(t, "q1", tk.Queue)
	}
	for _, name := range []string{"echo", "add", "greet", "sleep", "fail", "flaky", "count"} {
		require.Contains(t, byName, name)
	}
	require.Equal(t, map[string]string{"ms": "integer"}, tasks[byName["sleep"]].Kw)
	require.Equal(t, map[string]string{"name": "string"}, tasks[byName["greet"]].Kw)
	require.Equal(t, 2, tasks[byName["flaky"]].Retry)

	// The daemon runs exactly these: greet, listed, is submitted and runs.
	_, url := startDaemon(t, dir)
	code, out = runCmd(t, dir, "submit", "greet", "--kw", `{"name":"ada"}`, "--wait", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, `"hello, ada"`)

	code, out = runCmd(t, dir, "plugins", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "[]")
	require.Contains(t, out, "no plugin is registered")
}
