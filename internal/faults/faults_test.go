package faults_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/executor"
)

// The load of the CI scenarios: small enough for a loaded 2-core machine
// with the suite's client under -race, large enough that every fault
// strikes tasks in every phase.
const (
	ciRate       = 40 // submissions a second, per load
	ciSubmitters = 2  // goroutines per load
	ciSleepEvery = 20 // every 20th task sleeps 1 s, so a killed worker holds some
	ciAfterFault = 40 // acknowledged submissions the load must make after a fault
)

// newClient is the application's side: an executor that submits and does
// not work.
func newClient(t *testing.T, b *bus.Bus) *executor.App {
	t.Helper()
	app, err := executor.New(b, &executor.Config{Logger: bustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func waitPlugin(t *testing.T, b *bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.Registry().WaitFor(ctx, "scale", "1"); err != nil {
		t.Fatalf("the scale plugin did not register: %v", err)
	}
}

// A 3-node cluster under load loses the leader of the event log, of the
// task queue and of the task bucket's stream in turn (each killed with
// SIGKILL, then restarted on its store), then one of two workers is
// killed and the other takes over. Batches of submissions (SubmitMany)
// are on their way through each killed node, and submitted during each
// election. Every acknowledged task is accounted for (see audit).
func TestClusterFaults(t *testing.T) {
	c := startCluster(t, 3)
	url := c.urls()
	b := openBus(t, url, 3)
	c.waitHealthy(2 * time.Minute)
	wa := startWorker(t, url, 3, filepath.Join(t.TempDir(), "live.db"))
	wb := startWorker(t, url, 3, "")
	startPlugin(t, url)
	waitPlugin(t, b)
	health := watchHealth(wa)
	defer health.stop()

	app := newClient(t, b)
	var next atomic.Int64
	plain := startLoad(app, &next, false)
	keyed := startLoad(app, &next, true)
	web := startHTTPLoad(wa.http, &next, ciRate/4, ciSleepEvery)
	// The batch clients are applications of their own, on connections of
	// their own, so that their bursts do not hold up the others' acks: per
	// fault, one on the node about to be killed, and one on every node for
	// the election (fresh each time: a batch still riding out the last
	// election would leave this one without a batch of its own).
	var batches, electing []*load
	faults := []fault{{What: "none (baseline)", At: time.Now()}}
	keyed.waitAcked(t, 2*ciAfterFault, 2*time.Minute, "baseline")

	for _, stream := range leaderStreams {
		n := c.leader(stream)
		// A batch on its way through the node when it dies (its acks
		// lost), and another submitted while the stream has no leader.
		// The task queue's leader dies once the batch's task messages
		// are on their way (their acks lost: outcomes unknown).
		doomed := startBatchLoad(newClient(t, openBus(t, n.url(), 3)), &next, ciDoomedBatchSizes)
		batches = append(batches, doomed)
		if stream == bus.StreamTasks {
			doomed.batchQueueing(t, c.nc)
		} else {
			doomed.batchNow(t)
		}
		f := fault{What: "kill -9 leader of " + stream, At: time.Now()}
		t.Logf("%s: killing %s", f.What, n.name)
		elect := startBatchLoad(newClient(t, openBus(t, url, 3)), &next, ciBatchSizes)
		batches, electing = append(batches, elect), append(electing, elect)
		n.kill()
		elect.batchNow(t)
		c.leader(stream) // a new one
		f.Elected = time.Now()
		keyed.waitAcked(t, ciAfterFault, 3*time.Minute, "after killing the leader of "+stream)
		n.start()
		f.Back = time.Now()
		c.waitHealthy(3 * time.Minute)
		faults = append(faults, f)
	}

	// A worker dies with tasks in hand; the other one gets them after the
	// ack wait.
	f := fault{What: "kill -9 one of two workers", At: time.Now()}
	wb.proc.Signal(syscall.SIGKILL)
	wb.proc.Wait(procLimit)
	keyed.waitAcked(t, ciAfterFault, 3*time.Minute, "after killing a worker")
	faults = append(faults, f)
	// Let the worker's tasks come back before the load stops: the ack wait.
	keyed.waitAcked(t, ciAfterFault, 3*time.Minute, "after the ack wait")

	plain.halt()
	keyed.halt()
	web.halt()
	subs := slices.Concat(plain.results(), keyed.results(), web.results())
	for _, l := range batches {
		l.halt()
		subs = append(subs, l.results()...)
	}
	checkBatches(t, batches)
	checkElectionBatches(t, electing, faults, slices.Concat(plain.results(), keyed.results()))
	rep := audit(t, b, subs, wa.db)
	logSeen(t, observe(faults, subs, health.samples()))
	logRedelivery(t, f.At, rep.Resumptions)
}

// A single nats-server (no cluster) killed with SIGKILL under load and
// restarted on the same store after a few seconds, three times, a batch
// of submissions (SubmitMany) on its way each time: a NATS outage.
// The worker, the plugin and the client reconnect on their own.
func TestServerRestart(t *testing.T) {
	c := startCluster(t, 1)
	url := c.urls()
	b := openBus(t, url, 1)
	wa := startWorker(t, url, 1, filepath.Join(t.TempDir(), "live.db"))
	startPlugin(t, url)
	waitPlugin(t, b)
	health := watchHealth(wa)
	defer health.stop()

	app := newClient(t, b)
	var next atomic.Int64
	plain := startLoad(app, &next, false)
	keyed := startLoad(app, &next, true)
	// A batch client on a connection of its own, a batch on its way as
	// the server dies: its acks lost, whatever stage each chunk is in.
	batch := startBatchLoad(newClient(t, openBus(t, url, 1)), &next, ciRestartBatchSizes)
	faults := []fault{{What: "none (baseline)", At: time.Now()}}
	keyed.waitAcked(t, 2*ciAfterFault, 2*time.Minute, "baseline")

	const outage = 3 * time.Second
	for i := range 3 {
		n := c.nodes[0]
		if i == 0 {
			batch.batchNow(t)
		} else {
			batch.batchQueueing(t, c.nc) // its task messages' acks lost
		}
		f := fault{What: "kill -9 the server, restart after 3 s", At: time.Now()}
		n.kill()
		// The outage itself: how long the server stays down, as a
		// restart by hand or by a supervisor would take.
		time.Sleep(outage)
		n.start()
		f.Back = time.Now()
		keyed.waitAcked(t, ciAfterFault, 3*time.Minute, "after the restart")
		faults = append(faults, f)
	}
	plain.halt()
	keyed.halt()
	batch.halt()
	checkBatches(t, []*load{batch})
	subs := slices.Concat(plain.results(), keyed.results(), batch.results())
	audit(t, b, subs, wa.db)
	logSeen(t, observe(faults, subs, health.samples()))
}

// startHTTPLoad submits through a qtasksd's HTTP API, one client, with an
// Idempotency-Key it retries with.
func startHTTPLoad(addr string, next *atomic.Int64, rate float64, sleepEvery int) *load {
	l := newLoad(nil, next, 1, rate, true, sleepEvery, 0)
	l.http = addr
	l.start(1)
	return l
}

// logRedelivery logs how long after a worker was killed its tasks were
// taken up again (the broker_running_older_tasks facts after the kill).
func logRedelivery(t *testing.T, killed time.Time, resumptions []time.Time) {
	t.Helper()
	var ds []time.Duration
	for _, r := range resumptions {
		if !r.Before(killed) {
			ds = append(ds, r.Sub(killed))
		}
	}
	if len(ds) == 0 {
		t.Logf("worker crash: no task was in its hands")
		return
	}
	slices.Sort(ds)
	t.Logf("worker crash: %d tasks taken up again by the other worker %v to %v after the kill (ack wait 5s)",
		len(ds), ds[0].Round(100*time.Millisecond), ds[len(ds)-1].Round(100*time.Millisecond))
}
