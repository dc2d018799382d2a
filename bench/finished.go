package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/qtasks/qtasks-go/events"
)

// finishedCount follows how many tasks an in-process worker has finished,
// from the executor's own counter (qtasks_tasks_finished_total, counted
// once the task record says final) rather than from the task bucket's
// messages: the floors count their tasks in their worker, and a watch of
// the bucket cost ours a message and a decoding per record write (three a
// task), ≈ 3 % of a lifecycle run's CPU in its profile (issue #15, fourth
// round). It is the executor's Config.Metrics: a registry that keeps the
// counter when the executor registers it.
type finishedCount struct {
	*prometheus.Registry
	finished prometheus.Collector
	base     float64 // the count when expect was called
	want     int
}

func newFinishedCount() *finishedCount {
	return &finishedCount{Registry: prometheus.NewRegistry()}
}

// Register registers c and keeps it if it is the counter of finished tasks.
func (f *finishedCount) Register(c prometheus.Collector) error {
	if err := f.Registry.Register(c); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc, 4)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if strings.Contains(d.String(), `"qtasks_tasks_finished_total"`) {
			f.finished = c
		}
	}
	return nil
}

// MustRegister registers cs, panicking on an error as prometheus' does.
func (f *finishedCount) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := f.Register(c); err != nil {
			panic(err)
		}
	}
}

// counts returns the tasks finished in success and those finished
// otherwise (with one such status, for the error).
func (f *finishedCount) counts() (ok, bad float64, badStatus string) {
	if f.finished == nil {
		return 0, 0, ""
	}
	ch := make(chan prometheus.Metric, 16)
	go func() { f.finished.Collect(ch); close(ch) }()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		status := ""
		for _, l := range d.Label {
			if l.GetName() == "status" {
				status = l.GetValue()
			}
		}
		if status == events.StatusSuccess {
			ok += d.Counter.GetValue()
		} else {
			bad += d.Counter.GetValue()
			badStatus = status
		}
	}
	return ok, bad, badStatus
}

// expect resets the count to wait for want more tasks finished.
func (f *finishedCount) expect(want int) {
	ok, bad, _ := f.counts()
	f.base, f.want = ok+bad, want
}

// done is how many tasks finished since expect.
func (f *finishedCount) done() int64 {
	ok, bad, _ := f.counts()
	return int64(ok + bad - f.base)
}

// finishedPoll is how often wait reads the counter: at most this much is
// added to a run's time, against runs of a second or more.
const finishedPoll = 2 * time.Millisecond

// wait waits until the tasks expected have finished; any status but
// success is an error.
func (f *finishedCount) wait(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(finishedPoll)
	defer tick.Stop()
	for {
		ok, bad, status := f.counts()
		if bad > 0 {
			return fmt.Errorf("%.0f tasks ended in a status other than success (%s)", bad, status)
		}
		if n := int(ok - f.base); n >= f.want {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%.0f of %d tasks final after %v", ok-f.base, f.want, timeout)
		}
	}
}
