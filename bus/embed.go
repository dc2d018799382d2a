package bus

import (
	"errors"
	"net"
	"sync"
)

// EmbeddedServer is a NATS server with JetStream running in this process,
// which Open starts when Config.URL is empty and shuts down on Close.
// Package bus/embedded provides it; it lives there so that a program that
// only connects (every plugin) does not link nats-server.
type EmbeddedServer interface {
	// ClientURL is the URL clients connect to.
	ClientURL() string
	// InProcessConn connects through memory (nats.InProcessServer).
	InProcessConn() (net.Conn, error)
	// Shutdown stops the server and, once it has stopped writing,
	// releases its data directory.
	Shutdown()
}

// ErrNoEmbedded is returned by Open when Config.URL is empty and no
// embedded server is linked into the program.
var ErrNoEmbedded = errors.New("no server URL, and no embedded server linked in " +
	"(import _ \"github.com/qtasks/qtasks-go/bus/embedded\", or set Config.URL)")

var (
	embeddedMu    sync.RWMutex
	embeddedStart func(Config) (EmbeddedServer, error)
)

// RegisterEmbedded makes Open start servers with start when Config.URL is
// empty. Package bus/embedded calls it when imported; start gets the
// Config with its defaults applied and must start a server for its
// DataDir, Port, Users and ServerTLS.
func RegisterEmbedded(start func(Config) (EmbeddedServer, error)) {
	embeddedMu.Lock()
	defer embeddedMu.Unlock()
	embeddedStart = start
}

func startEmbedded(cfg Config) (EmbeddedServer, error) {
	embeddedMu.RLock()
	start := embeddedStart
	embeddedMu.RUnlock()
	if start == nil {
		return nil, ErrNoEmbedded
	}
	return start(cfg)
}
