package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Names of what the bus provisions.
const (
	// StreamEvents is the event log: facts, invocations, patches and dead
	// letters. Limits retention, so it can be replayed from sequence 1.
	StreamEvents = "QTASKS_EVENTS"
	// StreamTasks holds tasks waiting for a worker. Work-queue retention: a
	// task leaves it when a worker acks its final status. It is never the
	// only record: every submission is also a fact in StreamEvents.
	StreamTasks = "QTASKS_TASKS"
	// BucketPlugins is the plugin registry.
	BucketPlugins = "qtasks_plugins"
	// BucketTasks holds the current record of each task, for waiting on
	// results and for deciding a task's fate exactly once.
	BucketTasks = "qtasks_tasks"
	// BucketPluginState holds per-plugin state (QTasks' plugin_cache).
	BucketPluginState = "qtasks_plugin_state"
	// BucketState holds the state tasks share (QTasks' AsyncState) and
	// each task's own state; every write is also a state event in
	// StreamEvents (bus/flow.go).
	BucketState = "qtasks_state"
	// BucketLimits holds the slots and rate cells of cluster-wide limits
	// (executor/limit.go); a slot's value carries its lease's expiry.
	BucketLimits = "qtasks_limits"
)

// Defaults.
const (
	// DefaultEmbeddedPort is the loopback port of the embedded server.
	DefaultEmbeddedPort = 4222
	// DefaultFinishedTaskTTL is how long a finished task's record is kept
	// in the task bucket (Config.FinishedTaskTTL).
	DefaultFinishedTaskTTL = 7 * 24 * time.Hour
	// DefaultDuplicateWindow is how long JetStream remembers Nats-Msg-Ids.
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultMaxPending bounds unacknowledged async publishes.
	DefaultMaxPending = 4096
	// DefaultPublishTimeout bounds the wait for an async publish's ack
	// (Config.PublishTimeout). A leader election takes a few seconds; an
	// ack later than this is taken for lost.
	DefaultPublishTimeout = 15 * time.Second
	// DefaultMaxPluginTimeout is Config.MaxPluginTimeout's default: the
	// longest a plugin may make a firing wait for one answer.
	DefaultMaxPluginTimeout = 5 * time.Minute
)

// RegistrarMode chooses whether a bus answers registration requests.
type RegistrarMode int

const (
	// RegistrarAuto answers them when the bus owns the streams (not a
	// plugin's or read-only bus) and either nothing authenticates the
	// connection (an open server: every registrar is alike) or the bus
	// runs the embedded server with Config.Users (it knows the grants). An
	// executor that logs in to a secured server leaves it to the one that
	// knows the grants (qtasksd).
	RegistrarAuto RegistrarMode = iota
	// RegistrarOn always answers them (on an owner bus).
	RegistrarOn
	// RegistrarOff never answers them.
	RegistrarOff
)

// RecordMode chooses which trigger facts are written.
type RecordMode int

const (
	// RecordAll writes a fact for every trigger firing. The default.
	RecordAll RecordMode = iota
	// RecordLifecycle writes only the lifecycle facts (submission, status
	// changes, resumption, retry, final record) and the facts of triggers
	// that some registered plugin subscribes to. For throughput first.
	RecordLifecycle
)

// Config configures a Bus. The zero value starts an embedded server on a
// random loopback port with its data in a temporary directory, in a program
// that links package bus/embedded (ErrNoEmbedded otherwise).
type Config struct {
	// URL of an external NATS server or cluster. Empty starts an embedded
	// server.
	URL string
	// CredsFile, NKeyFile (a file holding an NKey seed), User, Password and
	// Token authenticate to the server; at most one method should be set.
	CredsFile string
	NKeyFile  string
	User      string
	Password  string
	Token     string
	// TLSCA is a PEM file of the CAs that sign the server's certificate
	// (default: the system's); TLSCert and TLSKey are PEM files of this
	// client's certificate and key, for a server that wants mutual TLS.
	// A server that requires TLS gets it whatever the URL's scheme.
	TLSCA, TLSCert, TLSKey string
	// ServerTLS, when set, makes the embedded server require TLS of its
	// clients (mutual TLS with ServerTLS.ClientCA). The bus's own
	// connection then goes through memory, where TLS has nothing to
	// protect; other processes connect with TLSCA, TLSCert and TLSKey.
	ServerTLS *ServerTLS
	// Name is the NATS connection name. Defaults to "qtasks".
	Name string
	// Plugin, when set, opens the bus for that plugin alone, with the least
	// rights (see PluginPermissions): nothing is provisioned (the streams
	// and buckets must exist), no patches are awaited, and the connection's
	// inbox prefix is PluginInboxPrefix(Plugin). Such a bus can run the
	// plugin, not an executor.
	Plugin string
	// ReadOnly opens the bus to read an existing log, as qtasks-replay
	// does: nothing is provisioned, no patches are awaited, no advisory is
	// turned into a dead letter, so the bus writes nothing on its own.
	// The streams and buckets must exist. Its registry is read-only by
	// convention: do not Register through it.
	ReadOnly bool
	// Users of the embedded server; empty means no authentication. An
	// executor connecting to it must then authenticate too (User/Password).
	// The Grant of each plugin user bounds what it may register.
	Users []User
	// Registrar chooses whether this bus answers plugins' registration
	// requests (docs/PROTOCOL.md §8). Defaults to RegistrarAuto.
	Registrar RegistrarMode
	// MaxPluginTimeout caps the timeout_ms of a registration whose plugin
	// user's grant sets no cap of its own. Defaults to
	// DefaultMaxPluginTimeout. Only a registrar applies it.
	MaxPluginTimeout time.Duration

	// DataDir is the embedded server's storage directory. Defaults to a new
	// temporary directory, removed on Close.
	DataDir string
	// Port of the embedded server on 127.0.0.1; -1 picks a free port.
	// Defaults to -1 (DefaultEmbeddedPort is what qtasksd uses).
	Port int
	// Replicas of streams and buckets. Defaults to 1; use 3 on a cluster.
	Replicas int
	// MaxAge bounds how long the event log keeps events. Defaults to 0:
	// forever.
	MaxAge time.Duration
	// MaxBytes bounds the event log's size. Defaults to -1: unlimited.
	MaxBytes int64
	// FinishedTaskTTL is how long the record of a task that ended in
	// success, error or cancel stays in the task bucket, which otherwise
	// keeps one key per task ever run (and JetStream an index entry per
	// key in memory). The log and the projection keep the task for good.
	// Defaults to DefaultFinishedTaskTTL; negative keeps records forever.
	// Needs a server with per-message TTLs (2.11 or later); with an older
	// one, records are kept and a warning is logged.
	FinishedTaskTTL time.Duration
	// Record chooses which facts are written. Defaults to RecordAll.
	Record RecordMode
	// AloneTriggers are triggers whose facts always travel alone, on their
	// trigger subjects, never packed in a phase message (TravelsAlone):
	// qtasksd names there every trigger a plugin grant lets an observer
	// read by name. The observer grants of Users are added to it.
	AloneTriggers []string
	// MaxPending bounds unacknowledged async publishes. Defaults to
	// DefaultMaxPending.
	MaxPending int
	// PublishTimeout bounds the wait for the ack of an async publish (a
	// fact): an ack lost with a dying stream leader fails the publish
	// with jetstream.ErrAsyncPublishTimeout after it, instead of leaving
	// its waiter (a worker's run) waiting for ever. Defaults to
	// DefaultPublishTimeout.
	PublishTimeout time.Duration
	// Logger receives the bus's logs. Defaults to a discarding logger.
	Logger *slog.Logger
}

func (c *Config) withDefaults() {
	if c.Name == "" {
		c.Name = "qtasks"
	}
	if c.Port == 0 {
		c.Port = -1
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = -1
	}
	if c.FinishedTaskTTL == 0 {
		c.FinishedTaskTTL = DefaultFinishedTaskTTL
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxPluginTimeout == 0 {
		c.MaxPluginTimeout = DefaultMaxPluginTimeout
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Bus is a connection to JetStream with qtasks' streams provisioned. It is
// safe for concurrent use.
type Bus struct {
	cfg Config
	log *slog.Logger
	srv EmbeddedServer // nil when connected to Config.URL
	nc  *nats.Conn
	js  jetstream.JetStream
	// apub makes the async publishes of events (PublishAsync,
	// PublishPhase); js those of records and scheduled task messages.
	apub *asyncPub
	// denied is the last permission violation the server reported, which
	// Open adds to its error.
	denied atomic.Pointer[error]
	// setupDenied ends Open's setup when the server reports a permission
	// violation during it: its requests would otherwise wait out their
	// timeout unanswered. nil once setup is over.
	setupDenied atomic.Pointer[context.CancelCauseFunc]

	events jetstream.Stream
	tasks  jetstream.Stream
	taskKV jetstream.KeyValue
	plugKV jetstream.KeyValue
	stKV   jetstream.KeyValue
	ctlKV  jetstream.KeyValue // nil on a plugin's or a read-only bus
	schKV  jetstream.KeyValue // schedules (schedule.go); nil as ctlKV
	shKV   jetstream.KeyValue // BucketState; nil on a plugin's or a read-only bus
	limKV  jetstream.KeyValue // BucketLimits; nil on a plugin's or a read-only bus

	inv   *invoker
	reg   *Registry
	alone map[string]bool // TravelsAlone's fixed part (aloneSet)
	rgs   *registrar      // nil unless this bus answers registrations
	adv   *nats.Subscription
	local sync.Map // plugin name → LocalHandler
	conn  connStats

	forgeries atomic.Uint64 // see Forgeries

	closeOnce sync.Once
}

// Open connects (starting the embedded server when cfg.URL is empty, see
// EmbeddedServer; its errors then include embedded.ErrDataDirInUse and
// embedded.ErrPortInUse) and provisions streams and buckets. Provisioning is idempotent: opening twice
// on the same data changes nothing.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	cfg.withDefaults()
	b := &Bus{cfg: cfg, log: cfg.Logger.With("component", "bus"), alone: aloneSet(&cfg)}
	url := cfg.URL
	if url == "" {
		srv, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		b.srv = srv
		url = srv.ClientURL()
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			if errors.Is(err, nats.ErrPermissionViolation) {
				b.denied.Store(&err)
				if stop := b.setupDenied.Load(); stop != nil {
					(*stop)(err)
				}
			}
			b.log.WarnContext(ctx, "nats async error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, b.connOptions()...)
	// Not nats.InProcessServer, though the server may be in this process:
	// through memory a round trip is 10-15% faster, but net.Pipe hands
	// every write over synchronously, and asynchronous publishing (every
	// fact) lost 10-14% of its rate (BenchmarkFactPublish, alternated).
	if b.srv != nil && cfg.ServerTLS != nil {
		// tls:// would have the client insist on a handshake that an
		// in-process connection does not do.
		url = strings.Replace(url, "tls://", "nats://", 1)
		opts = append(opts, nats.InProcessServer(b.srv))
	} else {
		tlsOpts, err := clientTLS(cfg)
		if err != nil {
			b.shutdownServer()
			return nil, err
		}
		opts = append(opts, tlsOpts...)
	}
	if cfg.Plugin != "" {
		if !events.ValidToken(cfg.Plugin) {
			b.shutdownServer()
			return nil, fmt.Errorf("plugin name %q: must be a valid NATS subject token", cfg.Plugin)
		}
		opts = append(opts, nats.CustomInboxPrefix(PluginInboxPrefix(cfg.Plugin)))
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			b.shutdownServer()
			return nil, fmt.Errorf("reading nkey seed: %w", err)
		}
		opts = append(opts, o)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	b.nc = nc
	b.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	b.apub = newAsyncPub(nc, cfg.MaxPending, cfg.PublishTimeout)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	sctx, stop := context.WithCancelCause(ctx)
	b.setupDenied.Store(&stop)
	err = b.setup(sctx)
	b.setupDenied.Store(nil)
	stop(nil)
	if err != nil {
		b.Close()
		// A user the server lets in but not at JetStream (a users file's
		// HTTP-only user, a plugin user on a client's command) sees its
		// requests go unanswered: a timeout, which would read as "is the
		// server running?". The server said why, asynchronously: say it.
		if denied := b.denied.Load(); denied != nil {
			if ctx.Err() == nil && errors.Is(err, context.Canceled) {
				// Setup was cut short by the violation: its own error
				// (a lookup cancelled) says nothing more.
				return nil, fmt.Errorf("%w: the server refused this user: %w", ErrPermissionDenied, *denied)
			}
			return nil, fmt.Errorf("%w: %w: the server refused this user: %w", ErrPermissionDenied, err, *denied)
		}
		return nil, err
	}
	return b, nil
}

// setup binds or provisions what the bus uses once it is connected.
func (b *Bus) setup(ctx context.Context) error {
	var err error
	cfg := b.cfg
	if cfg.Plugin != "" || cfg.ReadOnly {
		if err := b.bindPlugin(ctx); err != nil {
			return err
		}
		if b.reg, err = newRegistry(ctx, b); err != nil {
			return err
		}
		return nil
	}
	if err := b.provision(ctx); err != nil {
		return err
	}
	b.inv, err = newInvoker(b)
	if err != nil {
		return err
	}
	// The registrar's rules (grants, cap) before the registry loads, so
	// that its first load ignores what they forbid.
	if b.servesRegistrar() {
		b.rgs = newRegistrar(b)
	}
	b.reg, err = newRegistry(ctx, b)
	if err != nil {
		return err
	}
	if b.rgs != nil {
		if err := b.rgs.serve(); err != nil {
			return err
		}
	}
	if b.adv, err = b.watchMaxDeliveries(); err != nil {
		return err
	}
	return nil
}

// Conn is the underlying NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the underlying JetStream context.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// ClientURL is the URL other processes use to reach this bus's server.
func (b *Bus) ClientURL() string {
	if b.srv != nil {
		return b.srv.ClientURL()
	}
	return b.nc.ConnectedUrl()
}

// Dial opens another NATS connection to this bus's server, the way the bus
// connects itself (to ClientURL). opts carry the credentials, if the server
// wants any, and TLS (nats.RootCAs, nats.ClientCert) when it has
// Config.ServerTLS. The caller closes the connection.
func (b *Bus) Dial(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(b.ClientURL(), opts...)
}

// Registry is the plugin registry, kept in sync with its KV bucket.
func (b *Bus) Registry() *Registry { return b.reg }

// Logger is the bus's logger.
func (b *Bus) Logger() *slog.Logger { return b.cfg.Logger }

// RecordMode is the configured record mode.
func (b *Bus) RecordMode() RecordMode { return b.cfg.Record }

// Close flushes pending publishes (for at most 10 s), closes the connection
// and shuts the embedded server down. It is idempotent.
func (b *Bus) Close() {
	b.closeOnce.Do(func() {
		if b.rgs != nil {
			b.rgs.stop()
		}
		if b.reg != nil {
			b.reg.stop()
		}
		if b.inv != nil {
			b.inv.stop()
		}
		if b.adv != nil {
			_ = b.adv.Unsubscribe()
		}
		if b.js != nil {
			wait := time.NewTimer(10 * time.Second)
		flushed:
			for _, done := range []<-chan struct{}{b.js.PublishAsyncComplete(), b.apub.complete()} {
				select {
				case <-done:
				case <-wait.C:
					b.log.Warn("closing with unacknowledged publishes", "pending", b.js.PublishAsyncPending()+b.apub.inFlight())
					break flushed
				}
			}
			wait.Stop()
			b.apub.close()
		}
		if b.nc != nil {
			_ = b.nc.Drain()
			for i := 0; i < 100 && !b.nc.IsClosed(); i++ {
				time.Sleep(10 * time.Millisecond) // Drain is asynchronous; bounded wait for it
			}
			b.nc.Close()
		}
		b.shutdownServer()
	})
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown() // and releases its data directory once stopped
	}
}
