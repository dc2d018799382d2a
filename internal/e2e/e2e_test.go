package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
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
	"github.com/qtasks/qtasks-go/executor"
)

func client(t *testing.T, b *bus.Bus) *executor.App {
	t.Helper()
	app, err := executor.New(b, &executor.Config{AckWait: 2 * time.Second})
	require.NoError(t, err)
	return app
}

func waitStatus(t *testing.T, b *bus.Bus, id, status string) {
	t.Helper()
	bustest.WaitFor(t, 30*time.Second, "task status "+status, func() bool {
		rec, err := b.GetTask(context.Background(), id)
		return err == nil && rec.Task.Status == status
	})
}

// A mutator running in a separate OS process patches a task's result.
func TestPluginInAnotherProcess(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	plugin := startProc(t, "scaleplugin", "--nats-url", b.ClientURL(), "--factor", "10")
	plugin.WaitLine("ready", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.Registry().WaitFor(ctx, "scale", "1"))

	app := client(t, b)
	executor.MustRegister(app, "three", func(context.Context, struct{}) (int, error) { return 3, nil }, nil)
	require.NoError(t, app.Start(ctx))
	t.Cleanup(func() { _ = app.Stop(context.Background()) })
	sub, err := app.Submit(ctx, "three", nil, nil)
	require.NoError(t, err)
	final, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	got, err := executor.Result[float64](final)
	require.NoError(t, err)
	require.InDelta(t, 30.0, got, 0)

	pat := bustest.EventsOf(t, b, sub.ID, events.PatchSubject("scale", events.TaskExecutorRunTask))
	require.Len(t, pat, 1)
	require.Equal(t, events.ContentTypeJSONPatch, pat[0].Event.DataContentType)

	// The plugin process stops cleanly on SIGTERM.
	plugin.Signal(syscall.SIGTERM)
	require.Equal(t, 0, plugin.Wait(procLimit))
}

// A worker process killed with SIGKILL mid-task: another worker takes
// over; the task completes once, broker_running_older_tasks is in the log,
// and there is exactly one final status.
func TestWorkerKilledMidTask(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := client(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sub, err := app.Submit(ctx, "sleep", map[string]any{"ms": 3000}, nil)
	require.NoError(t, err)

	args := []string{"--demo", "--nats-url", b.ClientURL(), "--ack-wait", "2s", "--concurrency", "1", "--http", "", "--log-level", "warn"}
	w1 := startProc(t, "qtasksd", args...)
	waitStatus(t, b, sub.ID, events.StatusProcess)
	w1.Signal(syscall.SIGKILL)
	w1.Wait(procLimit)

	startProc(t, "qtasksd", args...)
	final, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, final.Status, final.Error)

	facts := bustest.EventsOf(t, b, sub.ID, events.SubjectTrigger+".>")
	var older, finals, runTask int
	for _, s := range facts {
		switch s.Event.Trigger {
		case events.BrokerRunningOlderTasks:
			older++
			require.Equal(t, 2, s.Event.Run)
		case events.StorageRemoveFinishedTask:
			finals++
		case events.TaskExecutorRunTask:
			runTask++
		}
	}
	require.Equal(t, 1, older, "broker_running_older_tasks facts")
	require.Equal(t, 1, finals, "final facts")
	require.Equal(t, 1, runTask, "the task completed once")
}

// SIGTERM: the daemon stops taking tasks, finishes the in-flight one within
// the grace period, and exits 0.
func TestDaemonGracefulShutdown(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	app := client(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := app.Submit(ctx, "sleep", map[string]any{"ms": 1500}, nil)
	require.NoError(t, err)
	d := startProc(t, "qtasksd", "--demo", "--nats-url", b.ClientURL(), "--http", "", "--grace", "30s", "--log-level", "warn")
	waitStatus(t, b, sub.ID, events.StatusProcess)
	d.Signal(syscall.SIGTERM)
	require.Equal(t, 0, d.Wait(procLimit))
	rec, err := b.GetTask(ctx, sub.ID)
	require.NoError(t, err)
	require.Equal(t, events.StatusSuccess, rec.Task.Status)
	var ms int
	require.NoError(t, json.Unmarshal(rec.Task.Result, &ms))
	require.Equal(t, 1500, ms)
	stops := bustest.Events(t, b, events.SubjectTrigger+"."+events.WorkerStop+".>")
	require.Len(t, stops, 1)
}

// The command line: submit and wait, status, exit codes.
func TestDaemonCommandLine(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	startProc(t, "qtasksd", "--demo", "--nats-url", b.ClientURL(), "--http", "", "--log-level", "warn")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sub := startProc(t, "qtasksd", "submit", "add", "--nats-url", b.ClientURL(), "--kw", `{"a":2,"b":40}`, "--wait")
	require.Equal(t, 0, sub.Wait(procLimit))
	var task events.Task
	require.NoError(t, json.Unmarshal([]byte(sub.Output()), &task))
	require.Equal(t, events.StatusSuccess, task.Status)
	require.JSONEq(t, "42", string(task.Result))

	st := startProc(t, "qtasksd", "status", task.ID, "--nats-url", b.ClientURL())
	require.Equal(t, 0, st.Wait(procLimit))

	fail := startProc(t, "qtasksd", "submit", "fail", "--nats-url", b.ClientURL(), "--wait")
	require.Equal(t, 4, fail.Wait(procLimit), "a failed task exits 4")
	missing := startProc(t, "qtasksd", "status", "no-such-task", "--nats-url", b.ClientURL())
	require.Equal(t, 3, missing.Wait(procLimit), "an unknown task exits 3")
	bad := startProc(t, "qtasksd", "submit", "add", "--nats-url", b.ClientURL(), "--kw", `[1]`)
	require.Equal(t, 2, bad.Wait(procLimit), "bad usage exits 2")
	badLimit := startProc(t, "qtasksd", "--demo", "--nats-url", b.ClientURL(), "--http", "", "--memory-limit", "-1")
	require.Equal(t, 2, badLimit.Wait(procLimit), "a negative memory limit exits 2")
	require.NotErrorIs(t, ctx.Err(), context.DeadlineExceeded)
}

// --pprof serves Go's profiles beside the API, and only when asked.
func TestDaemonProfiles(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	get := func(url string) (int, string) {
		resp, err := httpGet(t, url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, pprof := range []bool{true, false} {
		addr := freeAddr(t)
		args := []string{"--nats-url", b.ClientURL(), "--no-worker", "--no-projection", "--http", addr, "--log-level", "warn"}
		if pprof {
			args = append(args, "--pprof")
		}
		startProc(t, "qtasksd", args...)
		bustest.WaitFor(t, 60*time.Second, "qtasksd's HTTP to answer", func() bool {
			code, _ := get("http://" + addr + "/healthz")
			return code == http.StatusOK
		})
		code, body := get("http://" + addr + "/debug/pprof/heap?debug=1")
		if pprof {
			require.Equal(t, http.StatusOK, code, body)
			require.Contains(t, body, "heap profile")
		} else {
			require.Equal(t, http.StatusNotFound, code, body)
		}
	}
}

// /metrics shows what the daemon did: a task submitted over HTTP counted
// as finished, the projector caught up with the log, and JetStream read.
func TestDaemonMetrics(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	addr := freeAddr(t)
	startProc(t, "qtasksd", "--demo", "--nats-url", b.ClientURL(), "--http", addr, "--db", filepath.Join(t.TempDir(), "p.db"), "--log-level", "warn")
	bustest.WaitFor(t, 60*time.Second, "qtasksd's HTTP to answer", func() bool {
		resp, err := httpGet(t, "http://"+addr+"/healthz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close() // read nothing: nothing to lose
		return resp.StatusCode == http.StatusOK
	})
	post := func(query string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/tasks/add"+query, strings.NewReader(`{"a":1,"b":2}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// A bad wait is refused before anything is submitted: the counter
	// below says one task, not two.
	code, body := post("?wait=soon")
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, "no task was submitted")
	code, body = post("?wait=30s")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"status": "success"`)

	scrape := func() string {
		resp, err := httpGet(t, "http://"+addr+"/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		page, _ := io.ReadAll(resp.Body)
		return string(page)
	}
	var page string
	want := []string{
		`qtasks_tasks_submitted_total{queue="default",task="add"} 1`,
		`qtasks_tasks_finished_total{queue="default",status="success",task="add"} 1`,
		`qtasks_tasks_running 0`,
		`qtasks_jetstream_up 1`,
		`qtasks_tasks_queued 0`,
		`qtasks_projection_lag_events 0`,
		`qtasks_projection_events_rejected_total 0`,
		`qtasks_task_run_seconds_count{queue="default",task="add"} 1`,
		`go_goroutines `,
	}
	bustest.WaitFor(t, 60*time.Second, "the metrics to show the task and a caught-up projector", func() bool {
		page = scrape()
		for _, w := range want {
			if !strings.Contains(page, w) {
				return false
			}
		}
		return true
	})
	// The log holds the task's facts, and the projector applied them all.
	require.Regexp(t, `(?m)^qtasks_projection_events_applied_total [1-9][0-9]*$`, page)
	require.Regexp(t, `(?m)^qtasks_log_messages [1-9][0-9]*$`, page)
}

// httpGet is http.Get under the test's context.
func httpGet(t *testing.T, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, http.NoBody)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// qtasksd --users: its embedded server takes only the users of the file;
// a plugin process connects with its own, least-rights user.
func TestDaemonUsers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	users := filepath.Join(dir, "users.json")
	require.NoError(t, os.WriteFile(users, []byte(`{"users":[
		{"name":"admin","password":"admin-secret"},
		{"name":"scale","password":"scale-secret","plugin":{"mode":"mutator","triggers":["task_executor_run_task"]}}]}`), 0o600))
	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	url := "nats://127.0.0.1:" + port
	startProc(t, "qtasksd", "--demo", "--data-dir", filepath.Join(dir, "data"), "--port", port, "--users", users,
		"--http", "", "--no-projection", "--log-level", "warn")

	open := func(user, password string) (*bus.Bus, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return bus.Open(ctx, bus.Config{URL: url, User: user, Password: password, Logger: bustest.Logger(t)})
	}
	var admin *bus.Bus
	bustest.WaitFor(t, 60*time.Second, "qtasksd's server to take the admin user", func() bool {
		admin, err = open("admin", "admin-secret")
		return err == nil
	})
	t.Cleanup(admin.Close)
	for _, who := range [][2]string{{"", ""}, {"admin", "wrong"}, {"nobody", "admin-secret"}} {
		b, err := open(who[0], who[1])
		if err == nil {
			b.Close()
		}
		require.ErrorContains(t, err, "uthorization", "user %q", who[0])
	}

	plugin := startProc(t, "scaleplugin", "--nats-url", url, "--user", "scale", "--password", "scale-secret", "--factor", "10")
	plugin.WaitLine("ready", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	app := client(t, admin)
	sub, err := app.Submit(ctx, "add", map[string]any{"a": 1, "b": 2}, nil)
	require.NoError(t, err)
	final, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	got, err := executor.Result[float64](final)
	require.NoError(t, err)
	require.InDelta(t, 30.0, got, 0, "the plugin process patched the result")

	// A bad users file is bad usage.
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"users":[{"name":"p","password":"x","plugin":{}}]}`), 0o600))
	d := startProc(t, "qtasksd", "--demo", "--data-dir", filepath.Join(dir, "data2"), "--port", "-1", "--users", bad, "--http", "")
	require.Equal(t, 2, d.Wait(procLimit))
	require.Contains(t, d.Output(), "every right")
}
