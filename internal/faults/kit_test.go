package faults_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// The streams whose leaders the suite kills: the event log, the task
// queue, and the stream behind the task bucket.
var leaderStreams = []string{bus.StreamEvents, bus.StreamTasks, "KV_" + bus.BucketTasks}

// bins are the binaries TestMain builds: nats-server (from the module the
// project depends on, so the suite runs the server version go.mod names),
// qtasksd and the scale plugin.
var bins = map[string]*string{"nats-server": new(string), "qtasksd": new(string), "scaleplugin": new(string)}

var soak = flag.Bool("soak", false, "run TestSoak: 100k tasks against a cluster losing a leader every minute (not in CI)")

func TestMain(m *testing.M) {
	flag.Parse()
	testkit.Main(m,
		testkit.Bin{Path: bins["nats-server"], Pkg: "github.com/nats-io/nats-server/v2"},
		testkit.Bin{Path: bins["qtasksd"], Pkg: "../../cmd/qtasksd"},
		testkit.Bin{Path: bins["scaleplugin"], Pkg: "../../examples/scaleplugin"})
}

// procLimit bounds how long the suite waits for a process to exit.
const procLimit = 60 * time.Second

func bin(name string) string { return *bins[name] }

// freePort returns a loopback port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := (&net.ListenConfig{}).Listen(tb.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// node is one nats-server process; it keeps its name, ports and store
// across restarts.
type node struct {
	t        testing.TB
	name     string
	port     int
	profPort int // nats-server's prof_port (Go's profiles over HTTP); 0: none
	conf     string
	proc     *testkit.Proc
}

func (n *node) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *node) start() {
	n.t.Helper()
	cmd := exec.Command(bin("nats-server"), "-c", n.conf) //nolint:noctx,gosec // the kit's own nats-server build and config; testkit.StartProcCmd kills it at cleanup
	if *soakServerMem != "" {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+*soakServerMem)
	}
	n.proc = testkit.StartProcCmd(n.t, cmd)
}

// kill stops the server with SIGKILL: no goodbye to its peers, no flush.
func (n *node) kill() {
	n.t.Helper()
	n.proc.Signal(syscall.SIGKILL)
	n.proc.Wait(procLimit)
}

func (n *node) running() bool { return n.proc != nil && !n.proc.Exited() }

// cluster is a set of nats-server processes on loopback: three routed
// JetStream nodes, or a single one.
type cluster struct {
	t     testing.TB
	nodes []*node
	nc    *nats.Conn // the suite's own connection, for stream info
	js    jetstream.JetStream
}

// startCluster starts size nats-server processes (size 1: a single server
// with no routes) with JetStream file storage under the test's temporary
// directory, and waits until JetStream answers.
func startCluster(tb testing.TB, size int) *cluster {
	tb.Helper()
	c := &cluster{t: tb}
	dir := tb.TempDir()
	routePorts := make([]int, size)
	for i := range routePorts {
		routePorts[i] = freePort(tb)
	}
	for i := range size {
		n := &node{t: tb, name: fmt.Sprintf("n%d", i+1), port: freePort(tb)}
		var conf strings.Builder
		fmt.Fprintf(&conf, "server_name: %q\nlisten: \"127.0.0.1:%d\"\n", n.name, n.port)
		if *soakHeap != "" {
			n.profPort = freePort(tb)
			fmt.Fprintf(&conf, "prof_port: %d\n", n.profPort)
		}
		fmt.Fprintf(&conf, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}\n", filepath.Join(dir, n.name))
		if size > 1 {
			var routes []string
			for j, p := range routePorts {
				if j != i {
					routes = append(routes, fmt.Sprintf("\"nats-route://127.0.0.1:%d\"", p))
				}
			}
			fmt.Fprintf(&conf, "cluster {\n  name: \"qtasks-faults\"\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n", routePorts[i], strings.Join(routes, ", "))
		}
		n.conf = filepath.Join(dir, n.name+".conf")
		if err := os.WriteFile(n.conf, []byte(conf.String()), 0o600); err != nil {
			tb.Fatal(err)
		}
		n.start()
		c.nodes = append(c.nodes, n)
	}
	nc, err := nats.Connect(c.urls(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Name("faults-suite"))
	if err != nil {
		// The servers may not listen yet: retry within the deadline.
		waitFor(tb, time.Minute, "a nats-server to accept connections", func() bool {
			nc, err = nats.Connect(c.urls(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Name("faults-suite"))
			return err == nil
		})
	}
	tb.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		tb.Fatal(err)
	}
	waitFor(tb, 2*time.Minute, "JetStream to answer (a meta leader elected)", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.js.AccountInfo(ctx)
		return err == nil
	})
	return c
}

// urls is the comma-separated list of every node's URL, as --nats-url
// takes it: a client reconnects to another node when its own dies.
func (c *cluster) urls() string {
	var us []string
	for _, n := range c.nodes {
		us = append(us, n.url())
	}
	return strings.Join(us, ",")
}

func (c *cluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// streamInfo asks JetStream about stream; nil when it does not answer
// within a few seconds (during an election, say).
func (c *cluster) streamInfo(stream string) *jetstream.StreamInfo {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}

// leader is the node leading stream now, waiting for an election if
// there is none.
func (c *cluster) leader(stream string) *node {
	c.t.Helper()
	var n *node
	waitFor(c.t, time.Minute, "a leader of "+stream, func() bool {
		info := c.streamInfo(stream)
		if info == nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		n = c.node(info.Cluster.Leader)
		return n != nil && n.running()
	})
	return n
}

// waitHealthy waits until every stream the suite watches has a leader and
// every replica is current and online: the cluster is whole again.
func (c *cluster) waitHealthy(limit time.Duration) {
	c.t.Helper()
	waitFor(c.t, limit, "every stream led, with every replica current", func() bool {
		for _, s := range leaderStreams {
			info := c.streamInfo(s)
			if info == nil || info.Cluster == nil || info.Cluster.Leader == "" {
				return false
			}
			if len(c.nodes) > 1 && len(info.Cluster.Replicas) != len(c.nodes)-1 {
				return false
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Offline {
					return false
				}
			}
		}
		return true
	})
}

// orphanAge is the workers' --orphan-age: how soon their janitors end a
// record that a submission left new and never queued.
const orphanAge = 20 * time.Second

// worker is a qtasksd process run against the cluster.
type worker struct {
	proc *testkit.Proc
	http string // its HTTP address
	db   string // its projection, or "" for none
}

// startWorker starts qtasksd as a worker against url with a short ack
// wait, so that a crashed worker's tasks come back within seconds, and a
// short orphan age. With db
// set it also keeps that projection.
func startWorker(tb testing.TB, url string, replicas int, db string) *worker {
	tb.Helper()
	w := &worker{http: "127.0.0.1:" + strconv.Itoa(freePort(tb)), db: db}
	args := []string{
		"--nats-url", url, "--replicas", strconv.Itoa(replicas), "--http", w.http,
		"--ack-wait", "5s", "--grace", "5s", "--concurrency", "16", "--orphan-age", orphanAge.String(), "--log-level", "warn",
		"--demo", // the load submits the demo tasks
	}
	if db != "" {
		args = append(args, "--db", db)
	} else {
		args = append(args, "--no-projection")
	}
	w.proc = testkit.StartProc(tb, "", bin("qtasksd"), args...)
	waitFor(tb, 2*time.Minute, "qtasksd's /healthz", func() bool { return w.healthy() })
	return w
}

// healthy reports whether the worker's /healthz answers 200.
func (w *worker) healthy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.http+"/healthz", http.NoBody)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close() // a read-only answer: nothing to lose
	return resp.StatusCode == http.StatusOK
}

// startPlugin starts the scale plugin process (a mutator on
// task_executor_run_task multiplying numeric results by 10) with policy
// ignore: a call lost to an election leaves the result unscaled rather
// than failing the task, so that every task is expected to succeed.
func startPlugin(tb testing.TB, url string) *testkit.Proc {
	tb.Helper()
	p := testkit.StartProc(tb, "", bin("scaleplugin"), "--nats-url", url, "--factor", "10", "--policy", "ignore")
	p.WaitLine("ready", 2*time.Minute)
	return p
}

// openBus connects the suite's client to url, provisioning the streams
// with replicas replicas when they do not exist yet.
func openBus(tb testing.TB, url string, replicas int) *bus.Bus {
	tb.Helper()
	var b *bus.Bus
	var err error
	waitFor(tb, 2*time.Minute, "the bus to open", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b, err = bus.Open(ctx, bus.Config{URL: url, Replicas: replicas, Name: "faults-client", Logger: bustest.Logger(tb)})
		return err == nil
	})
	tb.Cleanup(b.Close)
	return b
}

// waitFor polls cond until it holds, failing tb after limit.
func waitFor(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
