package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// sealMetrics count the sealer's seals and anomalies, and show how far the
// seal chain covers the log (alert on qtasks_log_last_sequence minus
// qtasks_seal_covered_sequence growing, or on any anomaly).
type sealMetrics struct {
	written   prometheus.Counter
	anomalies *prometheus.CounterVec
}

func newSealMetrics(reg prometheus.Registerer) *sealMetrics {
	m := &sealMetrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtasks_seals_written_total",
			Help: "Seals of the event log this process wrote (qtasks-replay verify checks them).",
		}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtasks_seal_anomalies_total",
			Help: "Seal chains this process's sealer did not expect: seal_gone, invalid_seal, fork, mismatch. Run qtasks-replay verify.",
		}, []string{"kind"}),
	}
	for _, k := range []string{bus.AnomalySealGone, bus.AnomalyInvalidSeal, bus.AnomalyFork, bus.AnomalyMismatch} {
		m.anomalies.WithLabelValues(k)
	}
	reg.MustRegister(m.written, m.anomalies)
	return m
}

func (m *sealMetrics) sealed(uint64, events.Seal) { m.written.Inc() }

func (m *sealMetrics) anomaly(kind string) { m.anomalies.WithLabelValues(kind).Inc() }

// watch exports how far s's chain covers the log.
func (m *sealMetrics) watch(reg prometheus.Registerer, s *bus.Sealer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "qtasks_seal_covered_sequence",
		Help: "The last event log sequence the seal chain covers, as this process's sealer knows it.",
	}, func() float64 { return float64(s.Covered()) }))
}
