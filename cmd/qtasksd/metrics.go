package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/projections"
)

// newRegistry holds the metrics /metrics serves: Go's runtime and the
// process, the executor's (registered by executor.New), and the log's and
// the projection's below.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsHandler serves reg in the Prometheus text format. A metric that
// cannot be read (NATS away) is left out of the page rather than failing
// the whole scrape: qtasks_jetstream_up says why the rest is missing.
func metricsHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// projectionMetrics counts what the projector applies; its OnBatch feeds it.
type projectionMetrics struct {
	applied  prometheus.Counter
	rejected prometheus.Counter
}

func newProjectionMetrics(reg prometheus.Registerer) *projectionMetrics {
	m := &projectionMetrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtasks_projection_events_applied_total",
			Help: "Log events the projector applied to SQLite, rejected ones included.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtasks_projection_events_rejected_total",
			Help: "Log messages that are not valid events, recorded in rejected_events (qtasks-replay rejected lists them).",
		}),
	}
	reg.MustRegister(m.applied, m.rejected)
	return m
}

func (m *projectionMetrics) onBatch(st projections.ApplyStats) {
	m.applied.Add(float64(st.Applied))
	m.rejected.Add(float64(st.Rejected))
}

// logCollector reads the streams' state from JetStream at each scrape: the
// event log's size and last sequence, the tasks waiting or running, and
// how far the projector is behind the log.
type logCollector struct {
	b    *bus.Bus
	proj *projections.Projector // nil without a projector

	up, msgs, bytes, lastSeq, queued, applied, lag *prometheus.Desc
}

func newLogCollector(b *bus.Bus, proj *projections.Projector) *logCollector {
	return &logCollector{
		b: b, proj: proj,
		up:      prometheus.NewDesc("qtasks_jetstream_up", "1 when the last scrape read the streams' state from JetStream, 0 when it could not (the other qtasks_log_* and lag metrics are then absent).", nil, nil),
		msgs:    prometheus.NewDesc("qtasks_log_messages", "Messages in the event log stream.", nil, nil),
		bytes:   prometheus.NewDesc("qtasks_log_bytes", "Bytes the event log stream holds.", nil, nil),
		lastSeq: prometheus.NewDesc("qtasks_log_last_sequence", "The event log's last stream sequence.", nil, nil),
		queued:  prometheus.NewDesc("qtasks_tasks_queued", "Task messages in the task queue stream: waiting (for a worker, or delayed tasks for their due time), or held by a worker and not yet acknowledged.", nil, nil),
		applied: prometheus.NewDesc("qtasks_projection_applied_sequence", "The last log sequence the projector committed to SQLite.", nil, nil),
		lag:     prometheus.NewDesc("qtasks_projection_lag_events", "Log sequences the projector has not applied yet.", nil, nil),
	}
}

func (c *logCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.msgs, c.bytes, c.lastSeq, c.queued, c.applied, c.lag} {
		ch <- d
	}
}

func (c *logCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	var applied uint64
	if c.proj != nil {
		// Read before the log's state: the lag is then never negative.
		applied = c.proj.LastSeq()
		gauge(c.applied, float64(applied))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := c.b.EventStream().Info(ctx)
	if err != nil {
		gauge(c.up, 0)
		return
	}
	tq, err := c.b.TaskStream().Info(ctx)
	if err != nil {
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	gauge(c.msgs, float64(ev.State.Msgs))
	gauge(c.bytes, float64(ev.State.Bytes))
	gauge(c.lastSeq, float64(ev.State.LastSeq))
	gauge(c.queued, float64(tq.State.Msgs))
	if c.proj != nil {
		gauge(c.lag, float64(ev.State.LastSeq-min(applied, ev.State.LastSeq)))
	}
}

// registerConnMetrics exposes the bus's NATS connection: alert on
// qtasks_nats_connected == 0 for more than a few seconds, and on a rate of
// qtasks_nats_disconnects_total that is not zero.
func registerConnMetrics(reg prometheus.Registerer, b *bus.Bus) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qtasks_nats_connected",
			Help: "1 when qtasksd's NATS connection is up, 0 while it is down (reconnecting).",
		}, func() float64 {
			if b.ConnStats().Connected {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "qtasks_nats_disconnects_total",
			Help: "Times qtasksd's NATS connection was lost (a server restarted or unreachable).",
		}, func() float64 { return float64(b.ConnStats().Disconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "qtasks_nats_reconnects_total",
			Help: "Times qtasksd's NATS connection came back after a loss.",
		}, func() float64 { return float64(b.ConnStats().Reconnects) }),
	)
}
