package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// ticksOf reads the tick events of schedule name from the log of the
// server at url.
func ticksOf(t *testing.T, b *bus.Bus, name string) (ticks []events.ScheduleEvent, all []events.ScheduleEvent) {
	t.Helper()
	for _, s := range bustest.Events(t, b, events.ScheduleSubject(name)) {
		require.NoError(t, s.Err)
		var e events.ScheduleEvent
		require.NoError(t, json.Unmarshal(s.Event.Data, &e))
		all = append(all, e)
		if e.Action == events.ScheduleTick {
			ticks = append(ticks, e)
		}
	}
	return ticks, all
}

// TestScheduleThreeDaemons: three qtasksd processes on one server, each
// running a scheduler and a worker; a schedule of every second added with
// the CLI makes exactly one task per tick, over several ticks, each run
// once. The CLI lists, pauses and removes it, and each action is in the
// log with who did it.
func TestScheduleThreeDaemons(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, url := startDaemon(t, dir)
	procs := []*testkit.Proc{first}
	for i := range 2 {
		d := filepath.Join(dir, "d"+string(rune('1'+i)))
		require.NoError(t, os.MkdirAll(d, 0o750))
		p := startClientDaemon(t, d, url)
		procs = append(procs, p)
	}
	// A delayed submission from the command line.
	before := time.Now()
	code, out := runCmd(t, dir, "submit", "echo", "--run-in", "1h", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var delayed events.Task
	require.NoError(t, json.Unmarshal([]byte(out), &delayed), out)
	require.WithinDuration(t, before.Add(time.Hour), delayed.NotBefore, time.Minute)
	code, out = runCmd(t, dir, "submit", "echo", "--run-at", "tomorrow", "--nats-url", url)
	require.Equal(t, exitUsage, code, out)
	code, out = runCmd(t, dir, "submit", "echo", "--run-at", "2030-01-01T00:00:00Z", "--run-in", "1h", "--nats-url", url)
	require.Equal(t, exitUsage, code, out)

	code, out = runCmd(t, dir, "schedule", "add", "beat", "--task", "echo", "--every", "1s", "--kw", `{"hello":"world"}`,
		"--by", "ops", "--reason", "heartbeat", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	code, out = runCmd(t, dir, "schedule", "add", "beat", "--task", "echo", "--every", "1s", "--nats-url", url)
	require.Equal(t, exitRefused, code, out)
	code, out = runCmd(t, dir, "schedule", "add", "bad", "--task", "echo", "--cron", "61 * * * *", "--nats-url", url)
	require.Equal(t, exitUsage, code, out)

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{URL: url, ReadOnly: true, Logger: bustest.Logger(t)})
	require.NoError(t, err)
	defer b.Close()
	const want = 4
	bustest.WaitFor(t, waitLimit, "four ticks", func() bool {
		ticks, _ := ticksOf(t, b, "beat")
		return len(ticks) >= want
	})
	code, out = runCmd(t, dir, "schedule", "pause", "beat", "--by", "ops", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	code, out = runCmd(t, dir, "schedule", "list", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	var list []bus.ScheduleState
	require.NoError(t, json.Unmarshal([]byte(out), &list), out)
	require.Len(t, list, 1)
	require.True(t, list[0].Paused)
	require.Equal(t, "ops", list[0].AddedBy)

	// Every task of the schedule is a tick's, and every tick has one task
	// (read until they agree: a tick claimed before the pause may still be
	// on its way to the log).
	var ticks, all []events.ScheduleEvent
	bustest.WaitFor(t, waitLimit, "one task per tick", func() bool {
		ticks, all = ticksOf(t, b, "beat")
		tasks := map[string]bool{}
		for _, s := range bustest.Events(t, b, events.FactSubject(events.StorageAdd, "*")) {
			var f events.Fact
			require.NoError(t, json.Unmarshal(s.Event.Data, &f))
			if strings.Contains(string(f.Input), `"schedule:beat"`) && f.Failed == "" {
				tasks[s.Event.TaskID] = true
			}
		}
		for _, e := range ticks {
			if !tasks[e.TaskID] {
				return false
			}
		}
		return len(tasks) == len(ticks)
	})
	require.Equal(t, events.ScheduleAdd, all[0].Action)
	require.Equal(t, "ops", all[0].By)
	require.Equal(t, "heartbeat", all[0].Reason)
	for i, e := range ticks {
		if i > 0 {
			require.Equal(t, time.Second, e.Tick.Sub(ticks[i-1].Tick), "ticks %d and %d: one event per tick, none skipped", i-1, i)
		}
		bustest.WaitFor(t, waitLimit, "the tick's task to finish", func() bool {
			return statusOf(t, dir, url, e.TaskID).Status == events.StatusSuccess
		})
		task := statusOf(t, dir, url, e.TaskID)
		require.Equal(t, 1, task.Run, "the tick's task ran once")
		require.Equal(t, events.ScheduleTickKey("beat", e.Tick), task.IdempotencyKey)
		require.JSONEq(t, `{"hello":"world"}`, string(task.Result))
	}

	code, out = runCmd(t, dir, "schedule", "remove", "beat", "--nats-url", url)
	require.Equal(t, exitOK, code, out)
	code, out = runCmd(t, dir, "schedule", "remove", "beat", "--nats-url", url)
	require.Equal(t, exitNotFound, code, out)
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
	}
}

// startClientDaemon starts a qtasksd that uses the server at url (no
// embedded server, no projection), as a second process of a deployment.
func startClientDaemon(t *testing.T, dir, url string) *testkit.Proc {
	t.Helper()
	p, _ := startDaemon(t, dir, "--nats-url", url, "--no-projection")
	return p
}

// TestHTTPSchedulesAndDelay: the schedule routes need role read to list
// and operate to change; an action's "by" is the user; ?run_in= delays a
// submission (the record's not_before), and a bad one is a 400 that
// writes nothing.
func TestHTTPSchedulesAndDelay(t *testing.T) {
	t.Parallel()
	data := `{"users":[
		{"name":"reader","password":"reader-pw","roles":["read"]},
		{"name":"submitter","password":"submit-pw","roles":["submit"]},
		{"name":"operator","password":"operator-pw","roles":["operate"]}]}`
	auth, err := parseHTTPUsers([]byte(data))
	require.NoError(t, err)
	hb := setupHTTP(t, httpConfig{Auth: auth})

	spec := `{"name":"nightly","task":"echo","cron":"0 3 * * *","time_zone":"Europe/Paris","kw":{"x":1}}`
	code, body := hb.do(t, http.MethodPost, "/schedules?reason=backup", spec, nil, "reader", "reader-pw")
	require.Equal(t, http.StatusForbidden, code, body)
	code, body = hb.do(t, http.MethodPost, "/schedules", `{"name":"nightly","task":"echo","cron":"0 3 * * *","time_zone":"Mars/Olympus"}`, nil, "operator", "operator-pw")
	require.Equal(t, http.StatusBadRequest, code, body)
	code, body = hb.do(t, http.MethodPost, "/schedules", `{"name":"nightly","task":"echo","every":"1h"}`, nil, "operator", "operator-pw")
	require.Equal(t, http.StatusBadRequest, code, body, "an unknown field is refused")
	code, body = hb.do(t, http.MethodPost, "/schedules?reason=backup", spec, nil, "operator", "operator-pw")
	require.Equal(t, http.StatusCreated, code, body)
	code, body = hb.do(t, http.MethodPost, "/schedules", spec, nil, "operator", "operator-pw")
	require.Equal(t, http.StatusConflict, code, body)
	code, body = hb.do(t, http.MethodGet, "/schedules", "", nil, "reader", "reader-pw")
	require.Equal(t, http.StatusOK, code, body)
	var list []bus.ScheduleState
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	require.Len(t, list, 1)
	require.Equal(t, "operator", list[0].AddedBy)
	require.Equal(t, "Europe/Paris", list[0].Spec.TimeZone)
	code, body = hb.do(t, http.MethodPost, "/schedules/nightly/pause", "", nil, "reader", "reader-pw")
	require.Equal(t, http.StatusForbidden, code, body)
	code, body = hb.do(t, http.MethodPost, "/schedules/nightly/pause", "", nil, "operator", "operator-pw")
	require.Equal(t, http.StatusOK, code, body)
	code, body = hb.do(t, http.MethodPost, "/schedules/nightly/resume", "", nil, "operator", "operator-pw")
	require.Equal(t, http.StatusOK, code, body)
	code, body = hb.do(t, http.MethodDelete, "/schedules/nightly", "", nil, "operator", "operator-pw")
	require.Equal(t, http.StatusNoContent, code, body)
	code, body = hb.do(t, http.MethodDelete, "/schedules/nightly", "", nil, "operator", "operator-pw")
	require.Equal(t, http.StatusNotFound, code, body)
	var actions []string
	for _, s := range bustest.Events(t, hb.b, events.ScheduleSubject("nightly")) {
		var e events.ScheduleEvent
		require.NoError(t, json.Unmarshal(s.Event.Data, &e))
		require.Equal(t, "operator", e.By)
		actions = append(actions, e.Action)
	}
	require.Equal(t, []string{"add", "pause", "resume", "remove"}, actions)

	// A delayed submission.
	snap := hb.stored(t)
	code, body = hb.do(t, http.MethodPost, "/tasks/echo?run_in=soon", `{}`, nil, "submitter", "submit-pw")
	require.Equal(t, http.StatusBadRequest, code, body)
	code, body = hb.do(t, http.MethodPost, "/tasks/echo?run_in=1h&run_at=2030-01-01T00:00:00Z", `{}`, nil, "submitter", "submit-pw")
	require.Equal(t, http.StatusBadRequest, code, body)
	hb.requireUnchanged(t, snap, "a refused delayed submission")
	before := time.Now()
	code, body = hb.do(t, http.MethodPost, "/tasks/echo?run_in=1h", `{}`, nil, "submitter", "submit-pw")
	require.Equal(t, http.StatusCreated, code, body)
	var task events.Task
	require.NoError(t, json.Unmarshal([]byte(body), &task))
	require.WithinDuration(t, before.Add(time.Hour), task.NotBefore, 10*time.Second)
	require.Equal(t, events.StatusNew, task.Status)
	code, body = hb.do(t, http.MethodPost, "/tasks/echo?run_at=2030-01-01T00:00:00Z", `{}`, nil, "submitter", "submit-pw")
	require.Equal(t, http.StatusBadRequest, code, body, "more than executor.MaxDelay ahead")
}
