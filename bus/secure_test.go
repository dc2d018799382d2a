package bus_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

func tryOpen(t *testing.T, cfg bus.Config) (*bus.Bus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Logger = bustest.Logger(t)
	b, err := bus.Open(ctx, cfg)
	if err == nil {
		t.Cleanup(b.Close)
	}
	return b, err
}

// The embedded server with mutual TLS: its own bus works (through memory),
// a client with a certificate of the CA gets in, one without a
// certificate, with one the server's CA did not sign, or one that does not
// trust the server's CA is refused.
func TestServerMutualTLS(t *testing.T) {
	t.Parallel()
	f := bustest.TLS(t)
	users := []bus.User{{Name: "admin", Password: "pw"}}
	srv := bustest.Open(t, &bus.Config{
		Users: users, User: "admin", Password: "pw",
		ServerTLS: &bus.ServerTLS{Cert: f.ServerCert, Key: f.ServerKey, ClientCA: f.CA},
	})
	url := srv.ClientURL()

	c, err := tryOpen(t, bus.Config{URL: url, User: "admin", Password: "pw", ReadOnly: true, TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey})
	require.NoError(t, err)
	require.True(t, c.Conn().TLSRequired())
	_, err = c.Conn().TLSConnectionState()
	require.NoError(t, err, "the connection is TLS")

	for name, cfg := range map[string]bus.Config{
		"no certificate":      {TLSCA: f.CA},
		"no TLS at all":       {},
		"server not trusted":  {TLSCA: f.OtherCA, TLSCert: f.ClientCert, TLSKey: f.ClientKey},
		"certificate, no key": {TLSCA: f.CA, TLSCert: f.ClientCert},
		"certificate of a CA": {TLSCA: f.CA, TLSCert: f.ServerCert, TLSKey: f.ServerKey}, // not for client auth
	} {
		cfg.URL, cfg.User, cfg.Password, cfg.ReadOnly = url, "admin", "pw", true
		_, err := tryOpen(t, cfg)
		require.Error(t, err, name)
	}
}

// A server with TLS but no client CA takes clients without certificates.
func TestServerTLSWithoutClientCerts(t *testing.T) {
	t.Parallel()
	f := bustest.TLS(t)
	srv := bustest.Open(t, &bus.Config{ServerTLS: &bus.ServerTLS{Cert: f.ServerCert, Key: f.ServerKey}})
	_, err := tryOpen(t, bus.Config{URL: srv.ClientURL(), ReadOnly: true, TLSCA: f.CA})
	require.NoError(t, err)
	_, err = tryOpen(t, bus.Config{URL: srv.ClientURL(), ReadOnly: true})
	require.Error(t, err, "the server's certificate is not trusted by the system")
}

// An NKey user signs with its seed; a seed of another key, or none, is
// refused. A plugin's NKey user has the plugin's least rights.
func TestNKeyUsers(t *testing.T) {
	t.Parallel()
	seedFile := func(kp nkeys.KeyPair) (string, string) {
		seed, err := kp.Seed()
		require.NoError(t, err)
		pub, err := kp.PublicKey()
		require.NoError(t, err)
		p := filepath.Join(t.TempDir(), "seed.nk")
		require.NoError(t, os.WriteFile(p, seed, 0o600))
		return p, pub
	}
	adminKP, err := nkeys.CreateUser()
	require.NoError(t, err)
	adminSeed, adminPub := seedFile(adminKP)
	plugKP, err := nkeys.CreateUser()
	require.NoError(t, err)
	plugSeed, plugPub := seedFile(plugKP)
	otherKP, err := nkeys.CreateUser()
	require.NoError(t, err)
	otherSeed, _ := seedFile(otherKP)
	perms := bus.PluginPermissions(events.PluginInfo{Name: "scale", Mode: events.ModeMutator, Triggers: []string{events.TaskExecutorRunTask}})
	srv := bustest.Open(t, &bus.Config{NKeyFile: adminSeed, Users: []bus.User{
		{Name: "admin", NKey: adminPub},
		{Name: "scale", NKey: plugPub, Permissions: &perms},
		{Name: "pw", Password: "pw"},
	}})
	_, err = tryOpen(t, bus.Config{URL: srv.ClientURL(), NKeyFile: adminSeed, ReadOnly: true})
	require.NoError(t, err)
	_, err = tryOpen(t, bus.Config{URL: srv.ClientURL(), NKeyFile: plugSeed, Plugin: "scale"})
	require.NoError(t, err)
	_, err = tryOpen(t, bus.Config{URL: srv.ClientURL(), NKeyFile: otherSeed, ReadOnly: true})
	require.ErrorContains(t, err, "uthorization")
	_, err = tryOpen(t, bus.Config{URL: srv.ClientURL(), ReadOnly: true})
	require.ErrorContains(t, err, "uthorization")
	_, err = tryOpen(t, bus.Config{URL: srv.ClientURL(), User: "pw", Password: "pw", ReadOnly: true})
	require.NoError(t, err, "password users beside NKey users")
}

// A user with empty permissions (qtasksd gives them to HTTP-only users)
// may connect but neither publish nor subscribe: it cannot even open a
// read-only bus, and Open says it was refused.
func TestEmptyPermissionsAllowNothing(t *testing.T) {
	t.Parallel()
	srv := bustest.Open(t, &bus.Config{User: "admin", Password: "a", Users: []bus.User{
		{Name: "admin", Password: "a"},
		{Name: "reader", Password: "r", Permissions: &bus.Permissions{Publish: []string{}, Subscribe: []string{}}},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := bus.Open(ctx, bus.Config{URL: srv.ClientURL(), User: "reader", Password: "r", ReadOnly: true, Logger: bustest.Logger(t)})
	// Said as a refusal, not as a server that does not answer (its
	// requests time out: a CLI once told such a user "is qtasksd running?").
	require.ErrorIs(t, err, bus.ErrPermissionDenied)
	require.ErrorContains(t, err, "the server refused this user")
	// And said once the server said it, not after Open's requests waited
	// out their bound (a CLI's 10 s).
	require.NotErrorIs(t, err, context.DeadlineExceeded, "Open waited for its deadline")
	nc, err := srv.Dial(nats.UserInfo("reader", "r"))
	require.NoError(t, err)
	defer nc.Close()
	errs := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	require.NoError(t, nc.Publish(events.SubjectTrigger+".x", []byte("x")))
	require.NoError(t, nc.Flush())
	select {
	case err := <-errs:
		require.ErrorContains(t, err, "ermissions")
	case <-time.After(30 * time.Second):
		t.Fatal("a publish was not refused")
	}
}
