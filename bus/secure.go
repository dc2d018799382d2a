package bus

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerTLS secures the embedded server's client port with TLS.
type ServerTLS struct {
	// Cert and Key are PEM files of the server's certificate and its key.
	Cert, Key string
	// ClientCA, when set, is a PEM file of the CAs that sign client
	// certificates, and turns on mutual TLS: a client without a
	// certificate signed by one of them is refused during the handshake,
	// before any credential is looked at. Users still authenticate as the
	// users file says.
	ClientCA string
}

// tlsTimeout bounds a client's TLS handshake with the embedded server, in
// seconds (the server's default of 2 is short for a loaded CI machine).
const tlsTimeout = 5

func (t *ServerTLS) apply(opts *server.Options) error {
	if t == nil {
		return nil
	}
	if t.Cert == "" || t.Key == "" {
		return errors.New("server TLS needs both a certificate and its key")
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.Cert, KeyFile: t.Key, CaFile: t.ClientCA, Verify: t.ClientCA != ""})
	if err != nil {
		return fmt.Errorf("server TLS: %w", err)
	}
	opts.TLSConfig, opts.TLSVerify, opts.TLSTimeout = tc, t.ClientCA != "", tlsTimeout
	return nil
}

// clientTLS are the connection options of c's TLS settings.
func clientTLS(c Config) ([]nats.Option, error) {
	var opts []nats.Option
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return nil, errors.New("a TLS client certificate needs its key, and a key its certificate")
	case c.TLSCert != "":
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// splitUsers sorts users into those with a password and those with an NKey,
// as the server takes them.
func splitUsers(us []User) ([]*server.User, []*server.NkeyUser) {
	var pw []User
	var nk []*server.NkeyUser
	for _, u := range us {
		if u.NKey != "" {
			nk = append(nk, &server.NkeyUser{Nkey: u.NKey, Permissions: u.Permissions.server()})
			continue
		}
		pw = append(pw, u)
	}
	return serverUsers(pw), nk
}
