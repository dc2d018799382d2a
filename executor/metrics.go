package executor

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// unregisteredTask is the task label of tasks this app does not register:
// names come from clients (an HTTP submission, a task message), and a label
// per name they invent would grow the metrics without bound.
const unregisteredTask = "(unregistered)"

// metrics are the executor's Prometheus metrics. A nil *metrics records
// nothing, so that an app without a registerer pays one nil check.
type metrics struct {
	submitted   *prometheus.CounterVec   // queue, task
	finished    *prometheus.CounterVec   // queue, task, status
	duration    *prometheus.HistogramVec // queue, task
	running     prometheus.Gauge
	resumptions prometheus.Counter
	calls       *prometheus.CounterVec   // plugin, trigger, outcome
	callLatency *prometheus.HistogramVec // plugin, trigger
	deadLetters prometheus.Counter
	forgeries   prometheus.CounterFunc
	exhausted   prometheus.Counter
}

func newMetrics(r prometheus.Registerer, b *bus.Bus) (*metrics, error) {
	if r == nil {
		return nil, nil //nolint:nilnil // no registerer, no metrics: the nil *metrics, whose methods do nothing
	}
	m := &metrics{
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtasks_tasks_submitted_total",
			Help: "Tasks submitted and queued by this process.",
		}, []string{"queue", "task"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtasks_tasks_finished_total",
			Help: "Task attempts this worker decided (its final fact was the one stored), by status (success, error, cancel, retry): each attempt is counted by one process, once.",
		}, []string{"queue", "task", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "qtasks_task_run_seconds",
			Help:    "Time a task function ran, from its call to its return (one abandoned at its time limit is counted when it returns, if ever).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5 ms to ~131 s
		}, []string{"queue", "task"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qtasks_tasks_running",
			Help: "Task attempts this worker holds now, from intake to the final record.",
		}),
		resumptions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtasks_task_resumptions_total",
			Help: "Task attempts taken up again after a run that started and did not finish (crash, shutdown, lost ack): each fires broker_running_older_tasks.",
		}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtasks_plugin_calls_total",
			Help: "Plugin invocations by outcome: applied, nochange, rejected, timeout, error, shadow.",
		}, []string{"plugin", "trigger", "outcome"}),
		callLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "qtasks_plugin_call_seconds",
			Help:    "Time from publishing an invocation to having the plugin's patch (or giving up).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 100 µs to ~6.5 s
		}, []string{"plugin", "trigger"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtasks_task_dead_letters_total",
			Help: "Malformed task messages this worker recorded as dead letters and dropped.",
		}),
		// The bus detects them (bus.PublishOwn, the patch consumer): one
		// count per bus, which every app on it reports.
		forgeries: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "qtasks_forgeries_detected_total",
			Help: "Forged messages detected: an id of the executor's own events taken by another message (a final fact, a dead letter), or a patch on one plugin's subject naming another plugin's invocation. Each is logged at error level; the first kind is also recorded as an io.qtasks.alert event.",
		}, func() float64 { return float64(b.Forgeries()) }),
		exhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtasks_task_deliveries_exhausted_total",
			Help: "Task attempts ended in error by this worker because their task message was delivered more than Config.MaxDeliveries times.",
		}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.submitted, m.finished, m.duration, m.running, m.resumptions, m.calls, m.callLatency, m.deadLetters, m.forgeries, m.exhausted} {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// taskLabel is name when the app registers it, unregisteredTask otherwise.
func (a *App) taskLabel(name string) string {
	if _, ok := a.task(name); ok {
		return name
	}
	return unregisteredTask
}

func (a *App) countSubmitted(t *events.Task) {
	if a.m == nil {
		return
	}
	a.m.submitted.WithLabelValues(t.Queue, a.taskLabel(t.Name)).Inc()
}

func (a *App) countFinished(t *events.Task) {
	if a.m == nil {
		return
	}
	a.m.finished.WithLabelValues(t.Queue, a.taskLabel(t.Name), t.Status).Inc()
}

func (a *App) observeRun(t *events.Task, d time.Duration) {
	if a.m == nil {
		return
	}
	a.m.duration.WithLabelValues(t.Queue, a.taskLabel(t.Name)).Observe(d.Seconds())
}

func (a *App) observeCall(trigger string, c *events.PluginCall) {
	if a.m == nil {
		return
	}
	a.m.calls.WithLabelValues(c.Plugin, trigger, string(c.Outcome)).Inc()
	a.m.callLatency.WithLabelValues(c.Plugin, trigger).Observe(float64(c.LatencyUS) / 1e6)
}

func (m *metrics) runningAdd(d float64) {
	if m != nil {
		m.running.Add(d)
	}
}

func (m *metrics) resumed() {
	if m != nil {
		m.resumptions.Inc()
	}
}

func (m *metrics) deadLettered() {
	if m != nil {
		m.deadLetters.Inc()
	}
}

func (m *metrics) exhaustedInc() {
	if m != nil {
		m.exhausted.Inc()
	}
}
