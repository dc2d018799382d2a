package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// qtasksd's embedded server with mutual TLS and a users file: a plugin
// process (authenticating with an NKey), the JavaScript plugin (when node
// is there) and qtasks-replay all connect over TLS with client
// certificates; a client without a certificate is refused. Certificates
// and keys are made here, at test time.
func TestMutualTLSProcesses(t *testing.T) {
	t.Parallel()
	f := bustest.TLS(t)
	dir := t.TempDir()
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	seedFile := filepath.Join(dir, "scale.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))
	users := filepath.Join(dir, "users.json")
	require.NoError(t, os.WriteFile(users, []byte(`{"users":[
		{"name":"admin","password":"admin-secret"},
		{"name":"scale","nkey":"`+pub+`","plugin":{"mode":"mutator","triggers":["task_executor_run_task"]}},
		{"name":"node-upper","password":"node-secret","plugin":{"mode":"mutator","triggers":["task_executor_after_execute_result_replace"]}}]}`), 0o600))
	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	url := "tls://127.0.0.1:" + port
	httpAddr := freeAddr(t)
	startProc(t, "qtasksd", "--demo", "--data-dir", filepath.Join(dir, "data"), "--port", port, "--users", users,
		"--server-tls-cert", f.ServerCert, "--server-tls-key", f.ServerKey, "--server-tls-client-ca", f.CA,
		"--http", httpAddr, "--http-tls-cert", f.ServerCert, "--http-tls-key", f.ServerKey, "--no-projection", "--log-level", "warn")

	tlsFlags := []string{"--tls-ca", f.CA, "--tls-cert", f.ClientCert, "--tls-key", f.ClientKey}
	open := func(cfg bus.Config) (*bus.Bus, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg.URL, cfg.User, cfg.Password, cfg.Logger = url, "admin", "admin-secret", bustest.Logger(t)
		return bus.Open(ctx, cfg)
	}
	var admin *bus.Bus
	bustest.WaitFor(t, 60*time.Second, "qtasksd's server to take the admin over mutual TLS", func() bool {
		admin, err = open(bus.Config{TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey})
		return err == nil
	})
	t.Cleanup(admin.Close)
	_, err = admin.Conn().TLSConnectionState()
	require.NoError(t, err)
	for name, cfg := range map[string]bus.Config{
		"no client certificate": {TLSCA: f.CA},
		"no TLS":                {},
	} {
		b, err := open(cfg)
		if err == nil {
			b.Close()
		}
		require.Error(t, err, name)
	}

	plugin := startProc(t, "scaleplugin", append([]string{"--nats-url", url, "--nkey", seedFile, "--factor", "10"}, tlsFlags...)...)
	plugin.WaitLine("ready", 30*time.Second)
	node := startNodePlugin(t, url, f)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	app := client(t, admin)
	sub, err := app.Submit(ctx, "add", map[string]any{"a": 1, "b": 2}, nil)
	require.NoError(t, err)
	final, err := app.Wait(ctx, sub.ID)
	require.NoError(t, err)
	got, err := executor.Result[float64](final)
	require.NoError(t, err)
	require.InDelta(t, 30.0, got, 0, "the plugin process patched the result over TLS")
	if node != nil {
		sub, err := app.Submit(ctx, "greet", map[string]any{"name": "ada"}, nil)
		require.NoError(t, err)
		final, err := app.Wait(ctx, sub.ID)
		require.NoError(t, err)
		got, err := executor.Result[string](final)
		require.NoError(t, err)
		require.Equal(t, "HELLO, ADA", got, "the JavaScript plugin patched the result over TLS")
	}

	// HTTP over TLS, with the users file's credentials.
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(f.CA)
	require.NoError(t, err)
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+httpAddr+"/tasks/"+sub.ID, nil)
	require.NoError(t, err)
	req.SetBasicAuth("admin", "admin-secret")
	resp, err := hc.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	db := filepath.Join(dir, "replay.db")
	conn := append([]string{"--nats-url", url, "--user", "admin", "--password", "admin-secret"}, tlsFlags...)
	rp := startProc(t, "qtasks-replay", append([]string{"project", "--once", "--db", db}, conn...)...)
	require.Equal(t, 0, rp.Wait(procLimit), rp.Output())
	h := startProc(t, "qtasks-replay", "history", sub.ID, "--db", db)
	require.Equal(t, 0, h.Wait(procLimit), h.Output())
	require.Contains(t, h.Output(), "scale")
	noCert := startProc(t, "qtasks-replay", "project", "--once", "--db", filepath.Join(dir, "other.db"), "--nats-url", url,
		"--user", "admin", "--password", "admin-secret", "--tls-ca", f.CA)
	require.NotEqual(t, 0, noCert.Wait(procLimit), "qtasks-replay without a client certificate is refused")
}

// startNodePlugin starts examples/node-plugin over mutual TLS, or returns
// nil when node or its modules are missing (TestNodePlugin says so).
func startNodePlugin(t *testing.T, url string, f bustest.TLSFiles) *testkit.Proc {
	t.Helper()
	dir, err := filepath.Abs("../../examples/node-plugin")
	require.NoError(t, err)
	node, err := exec.LookPath("node")
	if _, modErr := os.Stat(filepath.Join(dir, "node_modules", "nats")); err != nil || modErr != nil {
		return nil
	}
	cmd := testkit.Command(node, filepath.Join(dir, "plugin.js"), "--nats-url", url, "--name", "node-upper")
	cmd.Env = append(os.Environ(), "QTASKS_NATS_USER=node-upper", "QTASKS_NATS_PASSWORD=node-secret",
		"QTASKS_TLS_CA="+f.CA, "QTASKS_TLS_CERT="+f.ClientCert, "QTASKS_TLS_KEY="+f.ClientKey)
	p := testkit.StartProcCmd(t, cmd)
	p.WaitLine("ready", 30*time.Second)
	return p
}
