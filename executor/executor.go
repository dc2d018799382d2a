package executor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/spans"
)

// Defaults of Config.
const (
	DefaultQueue       = "default"
	DefaultConcurrency = 10 // QTasks' max_tasks_process
	DefaultAckWait     = 30 * time.Second
	DefaultGracePeriod = 30 * time.Second
	// DefaultMaxDeliveries bounds the deliveries of one task message
	// (Config.MaxDeliveries). Every worker crash, expired ack wait,
	// shutdown hand-back and early pull of a delayed retry is one.
	DefaultMaxDeliveries = 10
)

// Config configures an App. Every field has a default.
type Config struct {
	// Queue is the queue tasks are submitted to and workers pull from.
	// Defaults to DefaultQueue.
	Queue string
	// Concurrency bounds the tasks a worker runs at once. Defaults to
	// DefaultConcurrency.
	Concurrency int
	// Prefetch is how many tasks a worker pulls beyond those it runs, to
	// start them lowest priority first as slots free up: a worker holds at
	// most Concurrency+Prefetch tasks it pulled, running or waiting.
	// Priority orders only the tasks a worker holds: the queue itself is
	// FIFO. A task held waits behind the worker's running ones even when
	// another worker is idle: with long tasks, a negative Prefetch pulls
	// none ahead, and a worker pulls a task only when it can start it.
	// Defaults to Concurrency.
	Prefetch int
	// AckWait is how long a task stays with a worker that stopped
	// reporting progress before it is redelivered to another. Running tasks
	// report progress every AckWait/3. Defaults to DefaultAckWait.
	AckWait time.Duration
	// GracePeriod is how long Stop lets in-flight tasks finish before
	// cancelling them. Defaults to DefaultGracePeriod.
	GracePeriod time.Duration
	// MaxDeliveries bounds how often one task message is delivered to
	// workers: a delivery past it ends the attempt in status error, with
	// a reason, without running it (no plugin is invoked either), so that
	// a failure that repeats on every run (poison) is not redelivered
	// forever. Failures known to be permanent (a fact too large for the
	// log) end the attempt at once. Defaults to DefaultMaxDeliveries; it
	// must be at least 2, so that a worker crash is still recovered.
	MaxDeliveries int
	// OrphanAge is how old a task record still new, with no task message
	// for it, must be before the worker's janitor ends it (status error,
	// reason OrphanReason): a submission that did not finish can leave
	// one, which no worker would ever run. Defaults to DefaultOrphanAge;
	// negative runs no janitor. At least 2s.
	OrphanAge time.Duration
	// NodeID names this process in facts and task records. Defaults to
	// hostname-pid-random.
	NodeID string
	// Logger defaults to the bus's logger.
	Logger *slog.Logger
	// Metrics, when set, is where the app registers its Prometheus metrics
	// (qtasks_tasks_*, qtasks_task_*, qtasks_plugin_*); New fails if they
	// are registered there already. Nil records none.
	Metrics prometheus.Registerer
	// TracerProvider makes the app's spans: one per run of a task attempt,
	// a child per trigger firing that invokes plugins, and a child of that
	// per plugin call (docs/ARCHITECTURE.md, "Tracing"). Defaults to
	// otel.GetTracerProvider(), a no-op until the program sets one.
	TracerProvider trace.TracerProvider
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// RetryBackoff is the delay before the next attempt of a task that
	// failed and is retried, when no plugin sets another (it is
	// worker_task_error_retry's model.delay_ms before the plugins are
	// called). The attempt waits in JetStream, held by no worker.
	// Defaults to events.DefaultRetryBackoff; &events.Backoff{} retries at
	// once.
	RetryBackoff *events.Backoff
}

func (c *Config) withDefaults(b *bus.Bus) error {
	if c.Queue == "" {
		c.Queue = DefaultQueue
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Prefetch == 0 {
		c.Prefetch = c.Concurrency
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = DefaultMaxDeliveries
	}
	if c.OrphanAge == 0 {
		c.OrphanAge = DefaultOrphanAge
	}
	if c.NodeID == "" {
		host, _ := os.Hostname()
		host = strings.NewReplacer(".", "-", " ", "-", "*", "-", ">", "-").Replace(host)
		if host == "" {
			host = "node"
		}
		c.NodeID = host + "-" + strconv.Itoa(os.Getpid()) + "-" + uuid.NewString()[:8]
	}
	if c.Logger == nil {
		c.Logger = b.Logger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.RetryBackoff == nil {
		c.RetryBackoff = &events.DefaultRetryBackoff
	}
	var errs []error
	if err := c.RetryBackoff.Check(); err != nil {
		errs = append(errs, err)
	}
	if !events.ValidToken(c.Queue) {
		errs = append(errs, fmt.Errorf("queue %q: must be a valid NATS subject token", c.Queue))
	}
	if !events.ValidToken(c.NodeID) {
		errs = append(errs, fmt.Errorf("node id %q: must be a valid NATS subject token", c.NodeID))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency %d: must be positive", c.Concurrency))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("ack wait %v: must be at least 1s", c.AckWait))
	}
	if c.MaxDeliveries < 2 {
		errs = append(errs, fmt.Errorf("max deliveries %d: must be at least 2, or a crashed worker's task is never run again", c.MaxDeliveries))
	}
	if c.OrphanAge >= 0 && c.OrphanAge < 2*time.Second {
		errs = append(errs, fmt.Errorf("orphan age %v: must be at least 2s (or negative: no janitor)", c.OrphanAge))
	}
	if c.GracePeriod < 0 {
		// A negative grace would cancel in-flight tasks at once on Stop,
		// which is what a caller asking for "no grace" least expects.
		errs = append(errs, fmt.Errorf("grace period %v: must not be negative", c.GracePeriod))
	}
	return errors.Join(errs...)
}

// App is the Go face of a QTasks app: it holds the registered tasks,
// submits tasks, and runs a worker when started. It is safe for concurrent
// use.
type App struct {
	b      *bus.Bus
	cfg    Config
	log    *slog.Logger
	source string

	mu    sync.RWMutex
	tasks map[string]*taskDef

	worker     *worker
	startToken string // distinguishes this process's start from a previous one with the same node id

	m      *metrics
	tracer trace.Tracer

	submitMu   sync.Mutex
	submitting map[string]*idLock // task id → submission lock, for idempotency keys

	flow   chains // advancing chains (executor/chain.go)
	limits limits // cluster-wide limits (executor/limit.go)
}

// New returns an App on bus b. cfg may be nil.
func New(b *bus.Bus, cfg *Config) (*App, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if err := c.withDefaults(b); err != nil {
		return nil, fmt.Errorf("executor config: %w", err)
	}
	m, err := newMetrics(c.Metrics, b)
	if err != nil {
		return nil, fmt.Errorf("executor metrics: %w", err)
	}
	return &App{
		m:      m,
		tracer: c.TracerProvider.Tracer(spans.Scope),
		b:      b,
		cfg:    c,
		log:    c.Logger.With("component", "executor", "node", c.NodeID),
		source: "qtasks/" + c.NodeID,
		tasks:  make(map[string]*taskDef),

		startToken: uuid.NewString()[:8],

		submitting: make(map[string]*idLock),
	}, nil
}

// Bus is the app's bus.
func (a *App) Bus() *bus.Bus { return a.b }

// NodeID names this process in facts.
func (a *App) NodeID() string { return a.cfg.NodeID }

func (a *App) addTask(name string, opts *TaskOptions, seq bool, run taskFunc) error {
	if !events.ValidToken(name) {
		return fmt.Errorf("registering task %q: the name must be a valid NATS subject token", name)
	}
	var o TaskOptions
	if opts != nil {
		o = *opts
	}
	if o.Queue != "" && !events.ValidToken(o.Queue) {
		return fmt.Errorf("registering task %q: queue %q must be a valid NATS subject token", name, o.Queue)
	}
	if o.Retry < 0 {
		return fmt.Errorf("registering task %q: retry %d must not be negative", name, o.Retry)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.tasks[name]; ok {
		return fmt.Errorf("registering task %q: %w", name, ErrDuplicateTask)
	}
	a.tasks[name] = &taskDef{name: name, opts: o, seq: seq, run: a.limited(run)} // limits: executor/limit.go
	return nil
}

// ErrDuplicateTask is returned when a task name is registered twice.
var ErrDuplicateTask = errors.New("task name already registered")

func (a *App) task(name string) (*taskDef, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	d, ok := a.tasks[name]
	return d, ok
}

// TaskNames lists the registered tasks.
func (a *App) TaskNames() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]string, 0, len(a.tasks))
	for n := range a.tasks {
		out = append(out, n)
	}
	return out
}
