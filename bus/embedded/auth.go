package embedded

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/qtasks/qtasks-go/bus"
)

// tlsTimeout bounds a client's TLS handshake with the embedded server, in
// seconds (the server's default of 2 is short for a loaded CI machine).
const tlsTimeout = 5

// applyTLS sets t (nil: no TLS) on the server's options.
func applyTLS(t *bus.ServerTLS, opts *server.Options) error {
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

// splitUsers sorts users into those with a password and those with an NKey,
// as the server takes them.
func splitUsers(us []bus.User) ([]*server.User, []*server.NkeyUser) {
	pw := make([]*server.User, 0, len(us))
	var nk []*server.NkeyUser
	for _, u := range us {
		if u.NKey != "" {
			nk = append(nk, &server.NkeyUser{Nkey: u.NKey, Permissions: permissions(u.Permissions)})
			continue
		}
		pw = append(pw, &server.User{Username: u.Name, Password: u.Password, Permissions: permissions(u.Permissions)})
	}
	return pw, nk
}

// permissions are p in the server's terms; nil allows everything.
func permissions(p *bus.Permissions) *server.Permissions {
	if p == nil {
		return nil
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Publish},
		Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
	}
}
