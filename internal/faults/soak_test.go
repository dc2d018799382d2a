package faults_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
)

var (
	soakTasks     = flag.Int("soak-tasks", 100_000, "TestSoak: tasks to submit")
	soakRate      = flag.Float64("soak-rate", 200, "TestSoak: submissions a second to aim at, in all")
	soakKill      = flag.Duration("soak-kill-every", time.Minute, "TestSoak: how often a stream leader is killed")
	soakFor       = flag.Duration("soak-for", 0, "TestSoak: stop submitting after this long even if fewer tasks were submitted (0: no limit)")
	soakOut       = flag.String("soak-out", "../../docs", "TestSoak: where FAULTS-soak.md and soak.svg are written")
	soakServerMem = flag.String("soak-server-memlimit", "", "TestSoak: GOMEMLIMIT of the nats-server processes, e.g. 512MiB (default: none, as the server runs by default)")
	soakHeap      = flag.String("soak-heap", "", "TestSoak: save each nats-server's heap profile to DIR/<node>.heap whenever its RSS reaches a new peak (the nodes serve prof_port)")
)

// soakSample is the state of a soak run at one moment.
type soakSample struct {
	At       time.Time
	Acked    int64            // submissions acknowledged so far
	Finished int64            // final facts read so far
	RSS      map[string]int64 // process → resident set, bytes
}

// TestSoak: 100k tasks (half keyed, half not; 1 in 50 sleeps 1 s) through
// a 3-node cluster with two qtasksd workers and three mutators — the
// scale plugin's process and two in this one — while a stream leader is
// killed every minute (QTASKS_EVENTS, QTASKS_TASKS, KV_qtasks_tasks in
// turn; the node is restarted once a new leader is elected). Then the
// same audit as the CI scenarios, and docs/FAULTS-soak.md and
// docs/soak.svg: counts, tasks/s and RSS over time.
//
//	go test ./internal/faults -run Soak -soak -timeout 90m -v
func TestSoak(t *testing.T) {
	if !*soak {
		t.Skip("not in CI: go test ./internal/faults -run Soak -soak -timeout 90m -v")
	}
	begin := time.Now()
	c := startCluster(t, 3)
	url := c.urls()
	b := openBus(t, url, 3)
	c.waitHealthy(2 * time.Minute)
	wa := startWorker(t, url, 3, filepath.Join(t.TempDir(), "live.db"))
	wb := startWorker(t, url, 3, "")
	plugin := startPlugin(t, url)
	ctx := t.Context()
	for _, name := range []string{"tag", "stamp"} {
		startTagger(ctx, t, url, name)
	}
	waitPlugin(t, b)
	health := watchHealth(wa)
	defer health.stop()

	// pids of the processes to sample, by label; nodes change on restart.
	var pids sync.Map
	peakHeap := map[string]int64{} // node → RSS at its last saved heap profile
	setNodePids := func() {
		for _, n := range c.nodes {
			if n.running() {
				pids.Store("nats-server "+n.name, n.proc.Pid())
			}
		}
	}
	setNodePids()
	pids.Store("qtasksd (worker, projector)", wa.proc.Pid())
	pids.Store("qtasksd (worker)", wb.proc.Pid())
	pids.Store("scale plugin", plugin.Pid())
	pids.Store("suite (client, 2 mutators)", os.Getpid())

	var finished atomic.Int64
	countFinals(ctx, t, b, &finished)

	app := newClient(t, b)
	var next atomic.Int64
	const submitters = 6
	plain := startLoadUpTo(app, &next, submitters, *soakRate/2, false, 50, *soakTasks)
	keyed := startLoadUpTo(app, &next, submitters, *soakRate/2, true, 50, *soakTasks)

	var (
		mu      sync.Mutex
		samples []soakSample
	)
	sampleDone := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			s := soakSample{At: time.Now(), Acked: plain.acked.Load() + keyed.acked.Load(), Finished: finished.Load(), RSS: map[string]int64{}}
			pids.Range(func(k, v any) bool {
				if rss := readRSS(v.(int)); rss > 0 {
					s.RSS[k.(string)] = rss
				}
				return true
			})
			if *soakHeap != "" {
				for _, n := range c.nodes {
					if rss := s.RSS["nats-server "+n.name]; rss > peakHeap[n.name] && n.profPort != 0 {
						if saveHeap(n.profPort, filepath.Join(*soakHeap, n.name+".heap")) == nil {
							peakHeap[n.name] = rss
							t.Logf("heap profile of %s at RSS %d MiB", n.name, rss>>20)
						}
					}
				}
			}
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
			select {
			case <-sampleDone:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	faults := []fault{{What: "none (start)", At: start}}
	for i := 0; !plain.done() || !keyed.done(); {
		if *soakFor > 0 && time.Since(start) > *soakFor {
			t.Logf("-soak-for %v reached: %d submitted of %d", *soakFor, next.Load(), *soakTasks)
			break
		}
		if time.Since(faults[len(faults)-1].At) < *soakKill {
			time.Sleep(time.Second)
			continue
		}
		stream := leaderStreams[i%len(leaderStreams)]
		i++
		n := c.leader(stream)
		f := fault{What: fmt.Sprintf("kill -9 leader of %s (%s)", stream, n.name), At: time.Now()}
		n.kill()
		c.leader(stream)
		n.start()
		f.Back = time.Now()
		setNodePids()
		faults = append(faults, f)
		t.Logf("%s: %d acknowledged, %d finished", f.What, plain.acked.Load()+keyed.acked.Load(), finished.Load())
	}
	plain.halt()
	keyed.halt()
	submitted := time.Since(start)
	c.waitHealthy(5 * time.Minute)
	subs := append(plain.results(), keyed.results()...)
	rep := audit(t, b, subs, wa.db)
	drained := time.Since(start)
	close(sampleDone)
	<-sampled
	seenList := observe(faults, subs, health.samples())
	logSeen(t, seenList)

	mu.Lock()
	defer mu.Unlock()
	writeSoakReport(t, soakReport{
		begin: begin, start: start, submitted: submitted, drained: drained, rep: rep, subs: len(subs),
		faults: faults, seen: seenList, samples: samples, failed: t.Failed(),
	})
}

// startTagger runs a mutator in this process on its own least-rights
// connection: on task_executor_args_replace it adds kw.<name> = 1.
func startTagger(ctx context.Context, t *testing.T, url, name string) {
	t.Helper()
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pb, err := bus.Open(octx, bus.Config{URL: url, Plugin: name, Name: "plugin-" + name, Logger: bustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.Close)
	r, err := plugins.Start(ctx, pb, plugins.Spec{
		Name: name, Version: "1", Triggers: []string{events.TaskExecutorArgsReplace},
		Policy: events.PolicyIgnore, Timeout: 5 * time.Second,
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"kw": map[string]any{name: 1}})
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = r.Stop(sctx)
	})
}

// countFinals counts the final facts written from now on, through an
// ordered consumer (it recreates itself when its server dies).
func countFinals(ctx context.Context, t *testing.T, b *bus.Bus, n *atomic.Int64) {
	t.Helper()
	cons, err := b.JetStream().OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectTrigger + "." + events.StorageRemoveFinishedTask + ".>"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(jetstream.Msg) { n.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// saveHeap writes the heap profile a nats-server serves on its prof_port
// to path.
func saveHeap(port int, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/debug/pprof/heap", http.NoBody)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heap profile: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// readRSS is the resident set of pid in bytes (0 when it cannot be read).
func readRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

type soakReport struct {
	begin, start       time.Time
	submitted, drained time.Duration
	rep                report
	subs               int
	faults             []fault
	seen               []seen
	samples            []soakSample
	failed             bool
}

// writeSoakReport writes soak.svg and FAULTS-soak.md into *soakOut.
func writeSoakReport(t *testing.T, r soakReport) {
	t.Helper()
	mins := func(at time.Time) float64 { return at.Sub(r.start).Minutes() }
	var marks []marker
	for _, f := range r.faults[1:] {
		label := strings.TrimPrefix(f.What, "kill -9 leader of ")
		marks = append(marks, marker{mins(f.At), label})
	}
	sub, fin := line{name: "submitted (acked)"}, line{name: "finished"}
	rss := map[string]*line{}
	var names []string
	for i, s := range r.samples {
		for k, v := range s.RSS {
			l := rss[k]
			if l == nil {
				l = &line{name: k}
				rss[k] = l
				names = append(names, k)
			}
			l.xs, l.ys = append(l.xs, mins(s.At)), append(l.ys, float64(v)/(1<<20))
		}
		if i == 0 {
			continue
		}
		p := r.samples[i-1]
		dt := s.At.Sub(p.At).Seconds()
		x := mins(s.At)
		sub.xs, sub.ys = append(sub.xs, x), append(sub.ys, float64(s.Acked-p.Acked)/dt)
		fin.xs, fin.ys = append(fin.xs, x), append(fin.ys, float64(s.Finished-p.Finished)/dt)
	}
	slices.Sort(names)
	var rssLines []line
	var peaks []string
	for _, k := range names {
		l := rss[k]
		rssLines = append(rssLines, *l)
		peaks = append(peaks, fmt.Sprintf("| %s | %.0f | %.0f |", k, l.ys[len(l.ys)-1], slices.Max(l.ys)))
	}
	caption := fmt.Sprintf("qtasks fault soak, %s: %d tasks, 3-node JetStream cluster on loopback (R3), 2 qtasksd workers, 3 mutators; red: a stream leader killed (kill -9). %d CPUs.",
		r.begin.UTC().Format("2006-01-02 15:04 UTC"), r.subs, runtime.NumCPU())
	plot := svg(caption,
		func(s *strings.Builder, x, y float64) {
			panel(s, x, y, "tasks/s (5 s windows)", "minutes", "tasks/s", []line{sub, fin}, marks)
		},
		func(s *strings.Builder, x, y float64) {
			panel(s, x, y, "resident set size", "minutes", "MiB", rssLines, marks)
		})
	if err := os.WriteFile(filepath.Join(*soakOut, "soak.svg"), []byte(plot), 0o600); err != nil {
		t.Errorf("writing the plot: %v", err)
	}

	var md strings.Builder
	verdict := "passed: nothing lost, nothing stuck, nothing duplicated, projection equal to a rebuild"
	if r.failed {
		verdict = "FAILED: see the test log for which checks"
	}
	fmt.Fprintf(&md, "<!-- written by TestSoak (internal/faults/soak_test.go); do not edit by hand -->\n")
	fmt.Fprintf(&md, "# Fault soak: figures of the last run\n\n")
	fmt.Fprintf(&md, "Run %s on %d CPUs (load average at the end: %s). Command: `go test ./internal/faults -run Soak -soak -soak-tasks %d -soak-rate %g -soak-for %v -timeout 90m -v`.\n\n",
		r.begin.UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), loadAvg(), *soakTasks, *soakRate, *soakFor)
	fmt.Fprintf(&md, "**Audit: %s.**\n\n", verdict)
	if r.subs < *soakTasks {
		fmt.Fprintf(&md, "**Smaller than asked:** %d of %d tasks were submitted before `-soak-for` %v ran out.\n\n", r.subs, *soakTasks, *soakFor)
	}
	fmt.Fprintf(&md, "| | |\n|---|---|\n")
	fmt.Fprintf(&md, "| submissions | %d (half with an idempotency key, retried until acknowledged; half without, given up on an error unless it said \"outcome unknown\") |\n", r.subs)
	fmt.Fprintf(&md, "| acknowledged | %d |\n| ended in an error that says \"not queued\" (clients without a key) | %d |\n| told \"outcome unknown\" at least once, then settled with the key | %d |\n", r.rep.Acked, r.rep.Errored, r.rep.Unknown)
	fmt.Fprintf(&md, "| attempts with exactly one final fact | %d |\n| events in the log | %d |\n", r.rep.Finals, r.rep.Events)
	fmt.Fprintf(&md, "| runs resumed after an interruption (`broker_running_older_tasks`) | %d |\n", len(r.rep.Resumptions))
	fmt.Fprintf(&md, "| leaders killed | %d (one every %v) |\n", len(r.faults)-1, *soakKill)
	fmt.Fprintf(&md, "| submitting took | %v (%.0f tasks/s acknowledged on average) |\n", r.submitted.Round(time.Second), float64(r.rep.Acked)/r.submitted.Seconds())
	fmt.Fprintf(&md, "| all final, audited | %v after the start |\n\n", r.drained.Round(time.Second))
	fmt.Fprintf(&md, "![tasks/s and RSS over time](soak.svg)\n\n")
	fmt.Fprintf(&md, "RSS (MiB) at the end and at its peak:\n\n| process | end | peak |\n|---|---:|---:|\n%s\n\n", strings.Join(peaks, "\n"))
	fmt.Fprintf(&md, "What clients saw after each fault (submissions ending before the next fault):\n\n")
	fmt.Fprintf(&md, "| fault | submissions | failed | errors for | slowest submit | p50 | `/healthz` not 200 |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.seen {
		fmt.Fprintf(&md, "| %s | %d | %d | %v | %v | %v | %v |\n", s.Fault.What, s.Submissions, s.Failed,
			s.ErrorsFor.Round(100*time.Millisecond), s.Slowest.Round(10*time.Millisecond), s.P50.Round(time.Millisecond), s.HealthDown.Round(100*time.Millisecond))
	}
	if err := os.WriteFile(filepath.Join(*soakOut, "FAULTS-soak.md"), []byte(md.String()), 0o600); err != nil {
		t.Errorf("writing the report: %v", err)
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
