package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// statusOf reads a task's record through `qtasksd status`.
func statusOf(t *testing.T, dir, url, id string) events.Task {
	t.Helper()
	code, out := runCmd(t, dir, "status", id, "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var task events.Task
	require.NoError(t, json.Unmarshal([]byte(out), &task), out)
	return task
}

// An operator in another process cancels a task running in the daemon's
// worker: it ends in cancel with the operator's reason; a second cancel,
// and a retry of a task that did not fail, are refused (exit 7).
func TestCancelRunningFromAnotherProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, url := startDaemon(t, dir)
	code, out := runCmd(t, dir, "submit", "sleep", "--kw", `{"ms":600000}`, "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var task events.Task
	require.NoError(t, json.Unmarshal([]byte(out), &task), out)
	bustest.WaitFor(t, waitLimit, "the task to run", func() bool {
		return statusOf(t, dir, url, task.ID).Status == events.StatusProcess
	})

	code, out = runCmd(t, dir, "cancel", task.ID, "--reason", "runaway", "--by", "ops", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	bustest.WaitFor(t, waitLimit, "the task to end in cancel", func() bool {
		return statusOf(t, dir, url, task.ID).Status == events.StatusCancel
	})
	require.Equal(t, "cancelled by ops: runaway", statusOf(t, dir, url, task.ID).Error)

	code, out = runCmd(t, dir, "cancel", task.ID, "--nats-url", url)
	require.Equal(t, exitRefused, code, out)
	require.Contains(t, out, "already finished")
	code, out = runCmd(t, dir, "cancel", "no-such-task", "--nats-url", url)
	require.Equal(t, exitNotFound, code, out)
	code, out = runCmd(t, dir, "pause", "a.b", "--nats-url", url)
	require.Equal(t, exitUsage, code, out)
}

// A paused queue stays paused across a restart of qtasksd: a task
// submitted then waits until the queue is resumed.
func TestPauseSurvivesDaemonRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, url := startDaemon(t, dir)
	code, out := runCmd(t, dir, "pause", "default", "--reason", "deploy", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	require.Contains(t, out, "queue default: paused")
	first.Signal(syscall.SIGTERM)
	require.Equal(t, exitOK, first.Wait(waitLimit))

	second, url := startDaemon(t, dir)
	code, out = runCmd(t, dir, "submit", "add", "--kw", `{"a":1,"b":2}`, "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var task events.Task
	require.NoError(t, json.Unmarshal([]byte(out), &task), out)
	bustest.WaitFor(t, waitLimit, "the worker to say it is paused", func() bool {
		return strings.Contains(second.Output(), `"queue paused: taking no task"`)
	})
	require.Equal(t, events.StatusNew, statusOf(t, dir, url, task.ID).Status)

	code, out = runCmd(t, dir, "resume", "default", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	bustest.WaitFor(t, waitLimit, "the task to run after the resume", func() bool {
		return statusOf(t, dir, url, task.ID).Status == events.StatusSuccess
	})
}
