// Package embedded runs the NATS server with JetStream inside the process,
// for bus.Open with an empty Config.URL: storage in Config.DataDir (locked
// against a second process), Config.Users and Config.ServerTLS applied, on
// Config.Port of 127.0.0.1.
//
// It is a package of its own so that a program that connects to a server
// (every plugin) does not link nats-server: a program that wants the
// embedded server imports this package, usually for its side effect
//
//	import _ "github.com/qtasks/qtasks-go/bus/embedded"
//
// which makes bus.Open start one when Config.URL is empty. The bus shuts it
// down on Close.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/internal/flock"
)

// init registers Start with bus, the one init of the module against the
// style guide's explicit wiring (gochecknoinits): importing the package is
// the wiring, as for a database/sql driver, so that the many programs and
// tests that start a server through bus.Open (most through bustest) stay as
// they are. docs/ARCHITECTURE.md, "The exchange's read side".
func init() { //nolint:gochecknoinits // see above: importing the package is the wiring
	bus.RegisterEmbedded(func(cfg bus.Config) (bus.EmbeddedServer, error) { return Start(cfg) })
}

// ErrDataDirInUse is returned by Start (and so by bus.Open) when another
// process's embedded server stores in Config.DataDir: two servers writing
// one JetStream directory damage it, and the server does not lock it
// itself.
var ErrDataDirInUse = errors.New("data directory in use by another process")

// ErrPortInUse is returned by Start (and so by bus.Open) when Config.Port
// is taken on 127.0.0.1.
var ErrPortInUse = errors.New("port in use")

// DataDirLock is the lock file Start holds in dir while its server runs; it
// holds the pid of the holder.
func DataDirLock(dir string) string { return filepath.Join(dir, "qtasks.lock") }

// readyTimeout bounds the wait for a started server to take connections.
const readyTimeout = 30 * time.Second

// Server is a running embedded server. bus.Open starts one through Start
// and shuts it down on Close.
type Server struct {
	srv    *server.Server
	lock   *flock.Lock // of the data directory; nil for a temporary one
	tmpDir string      // removed on Shutdown
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// InProcessConn is a connection to the server through memory
// (nats.InProcessServer).
func (s *Server) InProcessConn() (net.Conn, error) { return s.srv.InProcessConn() }

// Shutdown stops the server, waits until it has stopped writing, then
// releases the data directory's lock (or removes the temporary directory).
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	_ = s.lock.Release()
	if s.tmpDir != "" {
		_ = os.RemoveAll(s.tmpDir)
	}
}

// Start starts the server cfg describes: DataDir (a new temporary directory
// when empty, removed on Shutdown), Port (0 or -1: a free one), Users and
// ServerTLS. The other fields are the client's and are ignored.
func Start(cfg bus.Config) (*Server, error) {
	dir, tmp := cfg.DataDir, ""
	if dir == "" {
		d, err := os.MkdirTemp("", "qtasks-nats-")
		if err != nil {
			return nil, fmt.Errorf("creating data directory: %w", err)
		}
		dir, tmp = d, d
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	var lock *flock.Lock
	if tmp == "" { // a temporary directory is this process's alone
		l, err := lockDataDir(dir)
		if err != nil {
			return nil, err
		}
		lock = l
	}
	fail := func(err error) (*Server, error) {
		_ = lock.Release()
		if tmp != "" {
			_ = os.RemoveAll(tmp)
		}
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		port = -1
	}
	if port > 0 {
		// The server would only fail to become ready, 30 s later, without
		// saying why.
		var lc net.ListenConfig // Start takes no context; the listener is closed at once
		ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return fail(fmt.Errorf("%w: %d on 127.0.0.1 (%w)", ErrPortInUse, port, err))
		}
		_ = ln.Close()
	}
	opts := &server.Options{
		ServerName: "qtasks-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		// Big enough for a 900 KiB event plus headers.
		MaxPayload: 2 * 1024 * 1024,
	}
	if len(cfg.Users) > 0 {
		opts.Users, opts.Nkeys = splitUsers(cfg.Users)
	}
	if err := applyTLS(cfg.ServerTLS, opts); err != nil {
		return fail(err)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fail(fmt.Errorf("configuring embedded nats-server: %w", err))
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return fail(fmt.Errorf("embedded nats-server did not become ready in %v (is port %d free?)", readyTimeout, port))
	}
	return &Server{srv: srv, lock: lock, tmpDir: tmp}, nil
}

// lockDataDir takes dir's lock, naming the holder when another has it.
func lockDataDir(dir string) (*flock.Lock, error) {
	lock, err := flock.Acquire(DataDirLock(dir))
	if errors.Is(err, flock.ErrLocked) {
		holder := ""
		if pid := flock.Holder(DataDirLock(dir)); pid != "" {
			holder = " (pid " + pid + ")"
		}
		return nil, fmt.Errorf("%w: %s%s", ErrDataDirInUse, dir, holder)
	}
	return lock, err
}
