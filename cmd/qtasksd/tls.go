package main

import (
	"flag"

	"github.com/qtasks/qtasks-go/bus"
)

// serverTLSFlags secure the embedded server (qtasksd run). The client
// side of TLS (--tls-ca, --tls-cert, --tls-key) is every command's, in
// the connection flags.
type serverTLSFlags struct{ cert, key, clientCA string }

func (s *serverTLSFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.cert, "server-tls-cert", envOr("QTASKS_SERVER_TLS_CERT", ""), "embedded server: require TLS of every client, with this certificate (PEM) (QTASKS_SERVER_TLS_CERT)")
	fs.StringVar(&s.key, "server-tls-key", envOr("QTASKS_SERVER_TLS_KEY", ""), "embedded server: the key of --server-tls-cert (PEM) (QTASKS_SERVER_TLS_KEY)")
	fs.StringVar(&s.clientCA, "server-tls-client-ca", envOr("QTASKS_SERVER_TLS_CLIENT_CA", ""), "embedded server: mutual TLS, refusing clients without a certificate signed by these CAs (PEM) (QTASKS_SERVER_TLS_CLIENT_CA)")
}

// config is the server TLS of the flags; nil when none is set.
func (s *serverTLSFlags) config() (*bus.ServerTLS, error) {
	switch {
	case s.cert == "" && s.key == "" && s.clientCA == "":
		return nil, nil //nolint:nilnil // no TLS: bus.Config.ServerTLS's nil
	case s.cert == "" || s.key == "":
		return nil, &usageError{Msg: "--server-tls-cert and --server-tls-key go together (and --server-tls-client-ca needs them)", Hint: "qtasksd run --server-tls-cert server.pem --server-tls-key server-key.pem --server-tls-client-ca ca.pem"}
	}
	return &bus.ServerTLS{Cert: s.cert, Key: s.key, ClientCA: s.clientCA}, nil
}
