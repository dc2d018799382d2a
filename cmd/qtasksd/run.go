package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/embedded"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/console"
	"github.com/qtasks/qtasks-go/internal/flock"
	"github.com/qtasks/qtasks-go/internal/telemetry"
	"github.com/qtasks/qtasks-go/projections"
)

// runFlags configure the daemon.
type runFlags struct {
	conn        connFlags
	dataDir     string
	port        int
	queue       string
	concurrency int
	prefetch    int
	ackWait     time.Duration
	grace       time.Duration
	maxDeliver  int
	record      string
	httpAddr    string
	logLevel    string
	noWorker    bool
	noSched     bool // schedule.go
	replicas    int
	db          string
	noProj      bool
	pprof       bool
	memLimitMiB int
	retention   time.Duration
	orphanAge   time.Duration
	users       string
	maxPluginTO time.Duration
	registrar   string
	demo        bool
	httpWaits   int
	httpCert    string
	httpKey     string
	server      serverTLSFlags
	sealEvery   int
	sealEach    time.Duration
}

// runEnv are the environment variables of run's number and duration flags.
var runEnv = [][2]string{
	{"port", "QTASKS_PORT"},
	{"concurrency", "QTASKS_CONCURRENCY"},
	{"prefetch", "QTASKS_PREFETCH"},
	{"ack-wait", "QTASKS_ACK_WAIT"},
	{"grace", "QTASKS_GRACE"},
	{"task-retention", "QTASKS_TASK_RETENTION"},
	{"memory-limit", "QTASKS_MEMORY_LIMIT"},
	{"replicas", "QTASKS_REPLICAS"},
	{"max-deliveries", "QTASKS_MAX_DELIVERIES"},
	{"max-plugin-timeout", "QTASKS_MAX_PLUGIN_TIMEOUT"},
	{"demo", "QTASKS_DEMO"},
	{"http-max-waits", "QTASKS_HTTP_MAX_WAITS"},
	{"seal-every", "QTASKS_SEAL_EVERY"},
	{"seal-interval", "QTASKS_SEAL_INTERVAL"},
	{"orphan-age", "QTASKS_ORPHAN_AGE"},
}

func (m *Main) run(ctx context.Context, args []string) error {
	var f runFlags
	fs := newFlagSet("qtasksd run", m.Stderr, "qtasksd [run] [flags]\n\nStarts the daemon. The other commands (submit, status, cancel, retry, pause, resume, schedule...): qtasksd help")
	f.conn.register(fs, "")
	fs.StringVar(&f.dataDir, "data-dir", envOr("QTASKS_DATA_DIR", "qtasks-data"), "embedded server's storage directory (QTASKS_DATA_DIR)")
	fs.StringVar(&f.users, "users", envOr("QTASKS_USERS", ""), "JSON file of users: of the embedded server (admins, HTTP-only users with roles, plugin users with the least rights) and of HTTP (see README); qtasksd connects as --user or the first admin; with --nats-url, of HTTP only (QTASKS_USERS)")
	fs.DurationVar(&f.maxPluginTO, "max-plugin-timeout", bus.DefaultMaxPluginTimeout, "longest timeout a plugin may register; a plugin user's max_timeout_ms in --users overrides it (QTASKS_MAX_PLUGIN_TIMEOUT)")
	fs.StringVar(&f.registrar, "registrar", envOr("QTASKS_REGISTRAR", "auto"), "answer plugins' registration requests: auto (on with the embedded server, or with no credentials), on, or off; with --nats-url and credentials, auto is off: give on to one set of qtasksd that share the plugins' grants (QTASKS_REGISTRAR)")
	fs.IntVar(&f.port, "port", bus.DefaultEmbeddedPort, "embedded server's port on 127.0.0.1; 0 or -1: any free port (QTASKS_PORT)")
	fs.StringVar(&f.queue, "queue", envOr("QTASKS_QUEUE", executor.DefaultQueue), "queue the worker pulls from (QTASKS_QUEUE)")
	fs.IntVar(&f.concurrency, "concurrency", executor.DefaultConcurrency, "tasks run at once (QTASKS_CONCURRENCY)")
	fs.IntVar(&f.prefetch, "prefetch", 0, "tasks pulled beyond those running, started by priority; a held task waits even while another worker idles; negative: none, for long tasks; default: --concurrency (QTASKS_PREFETCH)")
	fs.DurationVar(&f.ackWait, "ack-wait", executor.DefaultAckWait, "redeliver a task whose worker is silent this long (QTASKS_ACK_WAIT)")
	fs.DurationVar(&f.grace, "grace", executor.DefaultGracePeriod, "on SIGTERM, let in-flight tasks finish this long (QTASKS_GRACE)")
	fs.IntVar(&f.maxDeliver, "max-deliveries", executor.DefaultMaxDeliveries, "end a task attempt in error when its message is delivered more often than this (crashes, hand-backs): a poison task is not run forever; at least 2 (QTASKS_MAX_DELIVERIES)")
	fs.StringVar(&f.record, "record", envOr("QTASKS_RECORD", "all"), "which facts to write: all, or lifecycle (lifecycle facts plus subscribed triggers) (QTASKS_RECORD)")
	fs.StringVar(&f.httpAddr, "http", envOr("QTASKS_HTTP", "127.0.0.1:7400"), "HTTP address of the web console (/), its API (/api/v1), /tasks, /schedules, /chains, /state, /metrics and /healthz; empty disables (QTASKS_HTTP)")
	fs.DurationVar(&f.orphanAge, "orphan-age", executor.DefaultOrphanAge, "end a task record still new this long after its submission with no task message for it (a submission that did not finish left it; status error, reason 'never queued'); negative: never (QTASKS_ORPHAN_AGE)")
	fs.DurationVar(&f.retention, "task-retention", bus.DefaultFinishedTaskTTL, "how long a finished task's record stays in the task bucket (the log and the projection keep it); negative: forever (QTASKS_TASK_RETENTION)")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve Go's profiles under /debug/pprof/ on the HTTP address (to admins with --users; else keep that address private)")
	fs.BoolVar(&f.demo, "demo", false, "register the demo tasks echo, add, greet, sleep, fail, flaky and count, for trying qtasks out; never in production (QTASKS_DEMO)")
	fs.IntVar(&f.httpWaits, "http-max-waits", defaultHTTPMaxWaits, "HTTP submissions waiting on ?wait= at once; beyond: 429 (QTASKS_HTTP_MAX_WAITS)")
	fs.StringVar(&f.httpCert, "http-tls-cert", envOr("QTASKS_HTTP_TLS_CERT", ""), "serve HTTP over TLS with this certificate (PEM) (QTASKS_HTTP_TLS_CERT)")
	fs.StringVar(&f.httpKey, "http-tls-key", envOr("QTASKS_HTTP_TLS_KEY", ""), "the key of --http-tls-cert (PEM) (QTASKS_HTTP_TLS_KEY)")
	f.server.register(fs)
	fs.IntVar(&f.memLimitMiB, "memory-limit", memoryLimitDefault(), "soft limit of the process's Go memory, in MiB: near it the GC works harder rather than let the heap grow to twice what is live; default 192, or 3/4 of the cgroup's memory limit when lower; 0: no limit; GOMEMLIMIT, when set, wins (QTASKS_MEMORY_LIMIT)")
	fs.StringVar(&f.logLevel, "log-level", envOr("LOG_LEVEL", "info"), "debug, info, warn or error (LOG_LEVEL)")
	fs.BoolVar(&f.noWorker, "no-worker", false, "run no worker (only the embedded server and HTTP)")
	fs.IntVar(&f.replicas, "replicas", 1, "stream replicas; 3 on a cluster (QTASKS_REPLICAS)")
	fs.StringVar(&f.db, "db", envOr("QTASKS_DB", ""), "SQLite projection of the event log, kept up to date; default: qtasks.db in --data-dir (QTASKS_DB)")
	fs.BoolVar(&f.noProj, "no-projection", false, "run no projector")
	fs.BoolVar(&f.noSched, "no-scheduler", false, "fire no ticks of the periodic schedules here (every qtasksd may fire them: one task per tick between them)")
	fs.IntVar(&f.sealEvery, "seal-every", bus.DefaultSealEvery, "seal the event log after this many messages (QTASKS_SEAL_EVERY); see qtasks-replay verify")
	fs.DurationVar(&f.sealEach, "seal-interval", bus.DefaultSealInterval, "seal the messages waiting at least this often; 0: write no seals (QTASKS_SEAL_INTERVAL)")
	if err := parse(fs, args, "qtasksd run -h"); err != nil {
		return err
	}
	if err := setFromEnv(fs, runEnv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{Msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), Hint: "qtasksd run -h"}
	}
	if f.db == "" {
		// Beside the log it projects, not in the working directory: two
		// data directories run from one folder must not share a projection.
		f.db = filepath.Join(f.dataDir, filepath.Base(projections.DefaultPath))
	}
	log, err := newLogger(m.Stderr, f.logLevel)
	if err != nil {
		return err
	}
	if f.memLimitMiB < 0 {
		return &usageError{Msg: fmt.Sprintf("--memory-limit %d: must be 0 or a number of MiB", f.memLimitMiB), Hint: "qtasksd run -h"}
	}
	if f.port < -1 || f.port > 65535 {
		return &usageError{Msg: fmt.Sprintf("--port %d: want 1 to 65535, or 0 (or -1, as the server takes it) for any free port", f.port), Hint: "qtasksd run --port 4222"}
	}
	if f.grace < 0 {
		return &usageError{Msg: fmt.Sprintf("--grace %v: must not be negative", f.grace), Hint: "qtasksd run --grace 30s"}
	}
	if f.sealEach < 0 {
		return &usageError{Msg: fmt.Sprintf("--seal-interval %v: must not be negative (0 writes no seals)", f.sealEach), Hint: "qtasksd run --seal-interval 10s"}
	}
	if f.sealEvery < 1 || f.sealEvery > events.MaxSealMessages {
		return &usageError{Msg: fmt.Sprintf("--seal-every %d: want 1 to %d", f.sealEvery, events.MaxSealMessages), Hint: "qtasksd run --seal-every 1000"}
	}
	if !f.noProj {
		if err := projections.CheckPath(ctx, f.db); err != nil {
			return &usageError{Msg: fmt.Sprintf("--db: %v", err), Hint: "qtasksd run --db " + projections.DefaultPath}
		}
	}
	if f.memLimitMiB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(f.memLimitMiB) << 20)
		log.InfoContext(ctx, "memory limit set", "mib", f.memLimitMiB)
	}
	cfg := f.conn.config()
	cfg.Name = "qtasksd"
	cfg.Logger = log
	cfg.Replicas = f.replicas
	cfg.FinishedTaskTTL = f.retention
	if f.maxPluginTO < time.Millisecond {
		return &usageError{Msg: fmt.Sprintf("--max-plugin-timeout %v: want 1ms or more", f.maxPluginTO), Hint: "qtasksd run --max-plugin-timeout 1m"}
	}
	cfg.MaxPluginTimeout = f.maxPluginTO
	switch f.registrar {
	case "auto":
		cfg.Registrar = bus.RegistrarAuto
	case "on":
		cfg.Registrar = bus.RegistrarOn
	case "off":
		cfg.Registrar = bus.RegistrarOff
	default:
		return &usageError{Msg: fmt.Sprintf("--registrar %q: want auto, on or off", f.registrar), Hint: "qtasksd run --registrar on"}
	}
	var httpAuth *httpAuth
	switch f.record {
	case "all":
		cfg.Record = bus.RecordAll
	case "lifecycle":
		cfg.Record = bus.RecordLifecycle
	default:
		return &usageError{Msg: fmt.Sprintf("--record %q: want all or lifecycle", f.record), Hint: "qtasksd run --record lifecycle"}
	}
	if f.users != "" {
		users, auth, err := loadUsers(f.users)
		if err != nil {
			return &usageError{Msg: err.Error(), Hint: "qtasksd run -h"}
		}
		httpAuth = auth
		// An observer that a grant names triggers for may not read phase
		// messages: those triggers' facts always travel alone, so that it
		// finds their whole history (bus.TravelsAlone).
		cfg.AloneTriggers = bus.GrantedObserverTriggers(users)
		if cfg.URL != "" {
			// An external server has its own NATS users: the file then
			// gives HTTP its users and roles, and nothing else.
			log.InfoContext(ctx, "--users with --nats-url: the users file authenticates HTTP only; the NATS server has its own users")
		} else {
			cfg.Users = users
			if cfg.NKeyFile == "" { // else qtasksd signs with the seed
				if cfg.User, cfg.Password, err = ownUser(users, cfg.User, cfg.Password); err != nil {
					return &usageError{Msg: err.Error(), Hint: "qtasksd run --users users.json --user NAME"}
				}
			}
		}
	}
	if (f.httpCert == "") != (f.httpKey == "") {
		return &usageError{Msg: "--http-tls-cert and --http-tls-key go together", Hint: "qtasksd run --http-tls-cert cert.pem --http-tls-key key.pem"}
	}
	// Loaded now, so that a bad pair stops qtasksd before anything starts
	// rather than leaving it running without HTTP.
	var httpTLS *tls.Config
	if f.httpCert != "" {
		pair, err := tls.LoadX509KeyPair(f.httpCert, f.httpKey)
		if err != nil {
			return &usageError{Msg: fmt.Sprintf("--http-tls-cert/--http-tls-key: %v", err), Hint: "qtasksd run --http-tls-cert cert.pem --http-tls-key key.pem"}
		}
		httpTLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	if f.httpWaits <= 0 {
		return &usageError{Msg: fmt.Sprintf("--http-max-waits %d: must be positive", f.httpWaits), Hint: "qtasksd run --http-max-waits 256"}
	}
	if cfg.ServerTLS, err = f.server.config(); err != nil {
		return err
	}
	if cfg.ServerTLS != nil && cfg.URL != "" {
		return &usageError{Msg: "--server-tls-* secure the embedded server; an external server (--nats-url) has its own TLS", Hint: "qtasksd run --nats-url tls://host:4222 --tls-ca ca.pem"}
	}
	// Listening before the bus opens, and before the data directory is
	// made, makes a taken address an error with no server started, no
	// projection written and no directory left behind.
	var ln net.Listener
	if f.httpAddr != "" {
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", f.httpAddr); err != nil {
			return fmt.Errorf("HTTP listener: %w", err)
		}
		defer ln.Close() // a no-op once the server has it
	}
	if cfg.URL == "" {
		dir, err := filepath.Abs(f.dataDir)
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		// bus.Open locks the directory for as long as its server runs; a
		// probe first says who holds it before anything else is started.
		// A directory that does not exist yet is nobody's, and is made
		// only once the port is known to be free: a start that fails
		// leaves nothing behind.
		if _, err := os.Stat(dir); err == nil {
			lock, err := flock.Acquire(embedded.DataDirLock(dir))
			if errors.Is(err, flock.ErrLocked) {
				return errDataDirInUse(dir)
			}
			if err != nil {
				return fmt.Errorf("locking the data directory: %w", err)
			}
			_ = lock.Release()
		}
		if err := checkPortFree(ctx, f.port); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		cfg.DataDir, cfg.Port = dir, f.port
	}
	// Traces go where the OTEL_* variables say (nowhere when unset); the
	// deferred flush runs after the executor has stopped.
	tr, err := telemetry.Setup(ctx, "qtasksd")
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(fctx); err != nil {
			log.WarnContext(ctx, "traces not flushed", "err", err)
		}
	}()
	if tr.Enabled {
		log.InfoContext(ctx, "tracing on: exporting spans over OTLP/HTTP")
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	b, err := bus.Open(openCtx, cfg)
	cancel()
	if errors.Is(err, embedded.ErrDataDirInUse) { // taken since the probe
		return errDataDirInUse(cfg.DataDir)
	}
	if err != nil {
		return err
	}
	defer b.Close()
	if cfg.URL == "" {
		log.InfoContext(ctx, "embedded NATS server ready", "url", b.ClientURL(), "data_dir", cfg.DataDir)
	} else {
		log.InfoContext(ctx, "connected to NATS", "url", b.Conn().ConnectedUrl())
	}

	reg := newRegistry()
	// The executor checks its flags: before the projector starts, so that
	// a bad one writes nothing.
	app, err := executor.New(b, &executor.Config{
		Queue: f.queue, Concurrency: f.concurrency, Prefetch: f.prefetch, AckWait: f.ackWait, GracePeriod: f.grace, Logger: log,
		MaxDeliveries: f.maxDeliver, OrphanAge: f.orphanAge,
		Metrics: reg, TracerProvider: tr.Provider,
	})
	if err != nil {
		return &usageError{Msg: err.Error(), Hint: "qtasksd run -h"}
	}
	if f.demo {
		registerDemoTasks(app)
		log.WarnContext(ctx, "demo tasks registered (--demo): anyone who may submit can run them; not for production")
	}

	// The sealer makes the log tamper-evident (qtasks-replay verify). With
	// several qtasksd on one log, each runs one and they write one chain.
	var sealer *bus.Sealer
	if f.sealEach > 0 {
		sm := newSealMetrics(reg)
		sealer, err = b.StartSealer(ctx, bus.SealerConfig{
			Node: app.NodeID(), Every: f.sealEvery, Interval: f.sealEach, Logger: log,
			Sealed: sm.sealed, Anomaly: sm.anomaly,
		})
		if err != nil {
			return err
		}
		defer sealer.Stop()
		sm.watch(reg, sealer)
	}

	var proj *projections.Projector
	if !f.noProj {
		if proj, err = startProjector(ctx, b, f.db, log, newProjectionMetrics(reg).onBatch); err != nil {
			return err
		}
		if proj != nil { // stopped below; this covers the early returns
			defer func() { _ = proj.Stop(context.Background()) }()
		}
	}

	reg.MustRegister(newLogCollector(b, proj), b.Registry().Metrics())
	registerConnMetrics(reg, b)

	var srv *http.Server
	if ln != nil {
		view := openView(ctx, &f, log)
		if view != nil {
			defer view.Close()
		}
		hc := httpConfig{Auth: httpAuth, MaxWaits: f.httpWaits, Pprof: f.pprof, Console: newConsole(app, proj, view, httpAuth, log)}
		srv = newHTTPServer(newHTTPHandler(app, metricsHandler(reg, log), hc), hc)
		srv.TLSConfig = httpTLS
		go func() {
			var err error
			if srv.TLSConfig != nil {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.ErrorContext(ctx, "HTTP server", "err", err)
			}
		}()
		log.InfoContext(ctx, "HTTP listening", "addr", ln.Addr().String(), "tls", httpTLS != nil, "auth", httpAuth != nil)
	}
	if !f.noWorker {
		if err := app.Start(ctx); err != nil {
			return err
		}
	}
	if !f.noSched {
		stopSched, err := startScheduler(ctx, app)
		if err != nil {
			return err
		}
		defer stopSched()
	}
	log.InfoContext(ctx, "qtasksd ready", "queue", f.queue, "pid", os.Getpid())
	<-ctx.Done()
	log.InfoContext(ctx, "shutting down: no new tasks; finishing in-flight ones", "grace", f.grace.String())

	// A second signal during shutdown is the user insisting: the grace
	// period ends at once.
	stopCtx, cancelStop := context.WithCancel(context.Background())
	defer cancelStop()
	go func() {
		sig := make(chan os.Signal, 1)
		notifySecond(sig)
		select {
		case <-sig:
			log.WarnContext(ctx, "second signal: cancelling in-flight tasks")
			cancelStop()
		case <-stopCtx.Done():
		}
	}()
	var errs []error
	if !f.noWorker {
		errs = append(errs, app.Stop(stopCtx))
	}
	if srv != nil {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, srv.Shutdown(sctx))
		c()
	}
	if sealer != nil { // after the worker: its last facts are sealed
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sealer.Flush(sctx); err != nil {
			log.WarnContext(ctx, "sealing the last messages", "err", err)
		}
		c()
		sealer.Stop()
	}
	if proj != nil { // after the worker: its last facts are projected
		pctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, proj.Stop(pctx))
		c()
	}
	log.InfoContext(ctx, "stopped")
	return errors.Join(errs...)
}

func errDataDirInUse(dir string) error {
	holder := ""
	if pid := flock.Holder(embedded.DataDirLock(dir)); pid != "" {
		holder = " (pid " + pid + ")"
	}
	return fmt.Errorf("data directory %s is in use by another qtasksd%s; stop it, or give this one its own --data-dir", dir, holder)
}

// checkPortFree fails at once when the embedded server's port is taken:
// the server itself would only fail to become ready, 30 s later, without
// saying why.
func checkPortFree(ctx context.Context, port int) error {
	if port <= 0 {
		return nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("port %d on 127.0.0.1 is not free (%w): is another qtasksd or NATS server running? Pick another with --port", port, err)
	}
	return ln.Close()
}

// openView opens the projection read-only for the console, or returns nil
// (the console then says that it has no projection) when qtasksd runs none
// or the file cannot be read.
func openView(ctx context.Context, f *runFlags, log *slog.Logger) *projections.DB {
	if f.noProj {
		return nil
	}
	view, err := projections.Open(ctx, f.db, &projections.Options{ReadOnly: true, Logger: log})
	if err != nil {
		log.WarnContext(ctx, "the console cannot read the projection", "db", f.db, "err", err)
		return nil
	}
	return view
}

// newConsole is the operator console over the projection view: its API
// under /api/v1/ and its pages under /. An operator's action names, in the
// log, the user auth authenticated (newHTTPHandler checks the password
// before the console sees the request); without auth nobody is
// authenticated, and the console names the client's address.
func newConsole(app *executor.App, proj *projections.Projector, view *projections.DB, auth *httpAuth, log *slog.Logger) http.Handler {
	cfg := console.Config{Bus: app.Bus(), Operator: app, Logger: log.With("component", "console")}
	if auth != nil {
		cfg.User = func(r *http.Request) string {
			u, _, _ := r.BasicAuth()
			return u
		}
	}
	if view != nil {
		cfg.Projection = view
		cfg.Applied = func() uint64 {
			if proj != nil {
				return proj.LastSeq()
			}
			seq, _ := view.LastSeq(context.Background())
			return seq
		}
	}
	return console.New(cfg)
}

// startProjector keeps the SQLite projection at path up to date with the
// event log. When another process already projects that file, qtasksd runs
// without a projector rather than failing.
func startProjector(ctx context.Context, b *bus.Bus, path string, log *slog.Logger, onBatch func(projections.ApplyStats)) (*projections.Projector, error) {
	p, err := projections.NewProjector(b, projections.ProjectorConfig{Path: path, Logger: log, OnBatch: onBatch})
	if err != nil {
		return nil, &usageError{Msg: err.Error(), Hint: "qtasksd run --db " + projections.DefaultPath}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute) // a rebuild of a stale file included
	defer cancel()
	if err := p.Start(sctx); err != nil {
		if errors.Is(err, projections.ErrLocked) {
			log.WarnContext(ctx, "another process projects this database; running without a projector", "db", path)
			return nil, nil //nolint:nilnil // no projector, as said: the caller runs without one
		}
		return nil, err
	}
	return p, nil
}
