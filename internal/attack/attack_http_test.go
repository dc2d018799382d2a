package attack_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// Issue #11, item 8: qtasksd's HTTP API attacked as a process, with --users
// and without --demo. The unit tests of cmd/qtasksd cover the same handler
// in-process, with short timeouts (a slow body, the cap on ?wait=).
//
//nolint:tparallel // the subtests share one qtasksd and its log, and BadHeadersStoreNothing counts what is stored: they run in order
func TestAttackHTTP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := testkit.Build(t, "../../cmd/qtasksd")
	users := filepath.Join(dir, "users.json")
	require.NoError(t, os.WriteFile(users, []byte(`{"users":[
		{"name":"admin","password":"admin-pw"},
		{"name":"dash","password":"dash-pw","roles":["read"]},
		{"name":"ci","password":"ci-pw","roles":["submit"]},
		{"name":"ops","password":"ops-pw","roles":["operate"]},
		{"name":"scale","password":"scale-pw","plugin":{"triggers":["task_executor_run_task"]}}]}`), 0o600))
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	p := testkit.StartProc(t, dir, bin, "run", "--data-dir", filepath.Join(dir, "data"), "--db", filepath.Join(dir, "p.db"),
		"--port", "0", "--users", users, "--http", addr, "--log-level", "info")
	bustest.WaitFor(t, 2*time.Minute, "qtasksd to be ready", func() bool {
		require.False(t, p.Exited(), "qtasksd exited: %s", p.Output())
		return strings.Contains(p.Output(), `"qtasksd ready"`)
	})
	url := regexp.MustCompile(`nats://127\.0\.0\.1:[0-9]+`).FindString(p.Output())
	openBus := func(user, pw string, limit time.Duration) (*bus.Bus, error) {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		return bus.Open(ctx, bus.Config{URL: url, User: user, Password: pw, ReadOnly: true, Logger: bustest.Logger(t)})
	}
	admin, err := openBus("admin", "admin-pw", 30*time.Second)
	require.NoError(t, err)
	t.Cleanup(admin.Close)

	do := func(method, path, user, pw string, hdr map[string]string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, strings.NewReader(`{"ms":60000}`))
		require.NoError(t, err)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	stored := func() (uint64, int) {
		t.Helper()
		ctx := t.Context()
		s, err := admin.JetStream().Stream(ctx, bus.StreamEvents)
		require.NoError(t, err)
		si, err := s.Info(ctx)
		require.NoError(t, err)
		kv, err := admin.JetStream().KeyValue(ctx, bus.BucketTasks)
		require.NoError(t, err)
		keys, err := kv.Keys(ctx)
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			err = nil
		}
		require.NoError(t, err)
		return si.State.LastSeq, len(keys)
	}

	t.Run("CredentialsAndRoles", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, user, pw string
			want                   int
		}{
			{http.MethodGet, "/healthz", "", "", http.StatusOK},
			{http.MethodPost, "/tasks/sleep", "", "", http.StatusUnauthorized},
			{http.MethodGet, "/tasks/x", "", "", http.StatusUnauthorized},
			{http.MethodGet, "/metrics", "", "", http.StatusUnauthorized},
			{http.MethodPost, "/tasks/sleep", "admin", "guess", http.StatusUnauthorized},
			{http.MethodPost, "/tasks/sleep", "nobody", "admin-pw", http.StatusUnauthorized},
			{http.MethodPost, "/tasks/sleep", "scale", "scale-pw", http.StatusUnauthorized}, // a plugin's user has no HTTP rights
			{http.MethodPost, "/tasks/sleep", "dash", "dash-pw", http.StatusForbidden},
			{http.MethodGet, "/metrics", "dash", "dash-pw", http.StatusForbidden},
			{http.MethodGet, "/metrics", "ci", "ci-pw", http.StatusForbidden},
			{http.MethodGet, "/tasks/x", "dash", "dash-pw", http.StatusNotFound},
			{http.MethodGet, "/metrics", "ops", "ops-pw", http.StatusOK},
		} {
			seq, tasks := stored()
			code, body := do(tc.method, tc.path, tc.user, tc.pw, nil)
			require.Equal(t, tc.want, code, "%s %s as %q: %s", tc.method, tc.path, tc.user, body)
			if code >= 400 && code != http.StatusNotFound {
				s, n := stored()
				require.Equal(t, seq, s, "%s %s as %q wrote to the log", tc.method, tc.path, tc.user)
				require.Equal(t, tasks, n)
			}
		}
	})

	t.Run("LesserRolesHaveNoNATSRights", func(t *testing.T) {
		for _, u := range [][2]string{{"dash", "dash-pw"}, {"ci", "ci-pw"}, {"ops", "ops-pw"}} {
			b, err := openBus(u[0], u[1], 2*time.Second) // refused requests go unanswered: the deadline ends them
			if err == nil {
				b.Close()
			}
			require.Error(t, err, "%s opened the log over NATS", u[0])
		}
	})

	t.Run("BadHeadersStoreNothing", func(t *testing.T) {
		seq, tasks := stored()
		for name, hdr := range map[string]map[string]string{
			"60 KiB traceparent": {"traceparent": "00-" + strings.Repeat("f", 60<<10)},
			"bad traceparent":    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"},
			"long key":           {"Idempotency-Key": strings.Repeat("k", events.MaxIdempotencyKeyLen+1)},
			"tab in key":         {"Idempotency-Key": "a\tb"},
		} {
			code, body := do(http.MethodPost, "/tasks/sleep", "ci", "ci-pw", hdr)
			require.Equal(t, http.StatusBadRequest, code, "%s: %s", name, body)
			s, n := stored()
			require.Equal(t, seq, s, "%s: nothing in the log", name)
			require.Equal(t, tasks, n, "%s: no task record", name)
		}
		// Past the header limit, net/http refuses it (431) or cuts the
		// connection while the client still writes.
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/tasks/sleep", strings.NewReader(`{}`))
		require.NoError(t, err)
		req.SetBasicAuth("ci", "ci-pw")
		req.Header.Set("Idempotency-Key", strings.Repeat("k", 950<<10))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
		}
		s, n := stored()
		require.Equal(t, seq, s)
		require.Equal(t, tasks, n)
	})

	t.Run("NoDemoTasks", func(t *testing.T) {
		// sleep would hold a worker for a minute; without --demo it is not
		// registered, and ends in error at once.
		code, body := do(http.MethodPost, "/tasks/sleep?wait=30s", "ci", "ci-pw", nil)
		require.Equal(t, http.StatusOK, code, "ended (in error) within the wait: %s", body)
		var task events.Task
		require.NoError(t, json.Unmarshal([]byte(body), &task))
		require.Equal(t, events.StatusError, task.Status, body)
		require.Contains(t, task.Error, "unknown task name")
	})
}
