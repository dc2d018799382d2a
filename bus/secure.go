package bus

import (
	"errors"

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
