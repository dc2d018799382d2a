package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config sizes one run of the suite.
type Config struct {
	Reps  int
	Smoke bool
	// Tasks is how many tasks one end-to-end run submits and waits for.
	Tasks int
	// Publish is how many messages one publish run sends, raw and ours each.
	Publish int
	// RoundTrips per side (raw, in-process plugin, plugin process) at the
	// headline payload; RoundTripsGrowth at each payload of the growth
	// series.
	RoundTrips, RoundTripsGrowth int
	// ApplyEvents is how many log events one apply run writes to SQLite
	// (and how many rows the raw insert writes).
	ApplyEvents int
	// RebuildSizes are the history lengths rebuilt; the largest is rebuilt
	// in only RebuildLargeReps repetitions.
	RebuildSizes     []int
	RebuildLargeReps int
	// ReplayTasks is how many recorded task runs (one mutator invocation
	// each) one replay run replays.
	ReplayTasks int
	// RSSPhases of RSSTasks tasks each are submitted to qtasksd while its
	// memory is sampled.
	RSSPhases, RSSTasks int
	// Concurrency is the worker concurrency of the tuned end-to-end runs
	// (ours, Asynq, River); Submitters is how many goroutines submit.
	Concurrency, Submitters int
	Only                    *regexp.Regexp
	SVGDir                  string
	JSONPath                string
	CPUProfile              string
	MemProfile              string
	// Count logs, for the end-to-end runs of ours and the floors, every
	// message the server routes per task, by kind (wiretap.go); CPU
	// figures of such a run include the tap's.
	Count bool
	// QtasksdHeap, when set, makes qtasksd/rss serve qtasksd's profiles
	// (--pprof) and save its heap profile to QtasksdHeap.phaseN at the end
	// of each phase, qtasksd's stderr to QtasksdHeap.log and the bytes of
	// each stream on disk to QtasksdHeap.streams.
	QtasksdHeap string
	From        string
	Verbose     bool
}

// Harness runs benchmarks and holds what they share: results, built
// binaries, the Redis server, the generated history.
type Harness struct {
	cfg    Config
	log    io.Writer
	tmp    string
	res    *Results
	quiet  *slog.Logger
	errs   []error
	closes []func()

	binOnce sync.Once
	bins    map[string]string
	binErr  error

	redisOnce sync.Once
	redis     *redisServer
	redisErr  error

	histOnce sync.Once
	hist     *history
	histErr  error

	replayOnce sync.Once
	replayH    *history
	replayErr  error
}

// Bench is one benchmark: Run makes one repetition and adds its samples to
// the results.
type Bench struct {
	Name string
	// Reps bounds the repetitions of this bench; 0 means Config.Reps.
	Reps int
	Run  func(ctx context.Context, h *Harness, rep int) error
}

// Main parses args, runs the suite and prints the table to stdout; progress
// goes to stderr. It returns the process exit code: 0 when every bench ran
// (targets missed are reported in the table, not in the exit code), 1 when
// a bench failed, 2 on bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	if err := checkModuleDir(); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	h, err := newHarness(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer h.close()
	start := time.Now()
	if cfg.From != "" {
		// Re-render the table and plots of a saved run.
		if err := h.res.readJSON(cfg.From); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	} else {
		h.run(ctx, benches())
	}
	rows := tableRows(cfg)
	h.logf("suite done in %s", time.Since(start).Round(time.Second))
	if cfg.From != "" {
		fmt.Fprintf(stdout, "qtasks bench — table re-rendered from %s (not a new run); each figure: median, min – max of n repetitions; ratio = median of the per-repetition ratios to the reference (same round of the same run)\n\n", cfg.From)
	} else {
		fmt.Fprintf(stdout, "qtasks bench — `go run . %s` — %s, %s, %d CPUs, %s\n%d repetition(s), %d tasks per end-to-end run%s; each figure: median, min – max of n repetitions; ratio = median of the per-repetition ratios to the reference (same round of the same run)\n\n",
			strings.Join(args, " "), time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.Version(), runtime.NumCPU(), hostLoad(),
			cfg.Reps, cfg.Tasks, map[bool]string{true: "; SMOKE sizes: the figures mean nothing", false: ""}[cfg.Smoke])
	}
	writeTable(stdout, rows, h.res)
	if cfg.JSONPath != "" {
		if err := h.res.writeJSON(cfg.JSONPath); err != nil {
			h.errs = append(h.errs, err)
		}
	}
	if cfg.SVGDir != "" {
		files, err := writePlots(cfg.SVGDir, h.res, cfg)
		if err != nil {
			h.errs = append(h.errs, err)
		}
		for _, f := range files {
			fmt.Fprintf(stdout, "\nplot: %s", f)
		}
		fmt.Fprintln(stdout)
	}
	if len(h.errs) > 0 {
		fmt.Fprintf(stdout, "\n%d error(s):\n", len(h.errs))
		for _, e := range h.errs {
			fmt.Fprintf(stdout, "  - %v\n", e)
		}
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c Config
	var only string
	fs.IntVar(&c.Reps, "reps", 5, "repetitions of every figure (the table shows median, min, max)")
	fs.BoolVar(&c.Smoke, "smoke", false, "tiny sizes and 1 repetition: checks the harness works, in seconds (CI)")
	fs.IntVar(&c.Tasks, "tasks", 0, "tasks per end-to-end run (default 5000; smoke 100)")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "worker concurrency of the tuned end-to-end runs (ours, Asynq, River)")
	fs.IntVar(&c.Submitters, "submitters", 32, "goroutines submitting tasks in end-to-end runs, one task at a time each")
	fs.StringVar(&only, "only", "", "run only the benches whose name matches this regexp (see -list)")
	list := fs.Bool("list", false, "list the benches and exit")
	fs.StringVar(&c.SVGDir, "svg", "", "directory for the plots (default ../docs/bench; smoke: none)")
	fs.StringVar(&c.JSONPath, "json", "", "also write every sample to this JSON file")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of this process (ours runs in-process) to this file")
	fs.StringVar(&c.MemProfile, "memprofile", "", "write heap profiles of this process to this file: at the end of each in-process end-to-end run, ours' or a floor's (before its server closes), and 90% into the largest rebuild (FILE.rebuild)")
	fs.StringVar(&c.QtasksdHeap, "qtasksd-heap", "", "qtasksd/rss: write qtasksd's heap profile to FILE.phaseN at the end of each phase (qtasksd then also serves HTTP with --pprof)")
	fs.StringVar(&c.From, "from", "", "run nothing: print the table and write the plots of a run saved with -json (give the same size flags)")
	fs.BoolVar(&c.Count, "count", false, "log the messages the server routes per task, by kind (stored per stream, requests, replies), for ours and the floors; CPU figures then include the counting")
	fs.BoolVar(&c.Verbose, "v", false, "log each repetition's figures")
	rebuildMax := fs.Int("rebuild-max", 0, "largest history to rebuild (default 1000000; smoke 10000)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *list {
		for _, b := range benches() {
			fmt.Fprintln(stderr, b.Name)
		}
		return c, flag.ErrHelp
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Smoke {
		if !set["reps"] {
			c.Reps = 1
		}
		c.Publish, c.RoundTrips, c.RoundTripsGrowth = 5000, 100, 40
		c.ApplyEvents, c.RebuildSizes, c.RebuildLargeReps = 5000, []int{10_000}, 1
		c.ReplayTasks, c.RSSPhases, c.RSSTasks = 100, 2, 100
		if c.Tasks == 0 {
			c.Tasks = 100
		}
	} else {
		c.Publish, c.RoundTrips, c.RoundTripsGrowth = 100_000, 2000, 500
		c.ApplyEvents, c.RebuildSizes, c.RebuildLargeReps = 100_000, []int{10_000, 100_000, 1_000_000}, 2
		c.ReplayTasks, c.RSSPhases, c.RSSTasks = 2000, 4, 5000
		if c.Tasks == 0 {
			c.Tasks = 5000
		}
		if !set["svg"] && only == "" {
			c.SVGDir = filepath.Join("..", "docs", "bench")
		}
	}
	if *rebuildMax > 0 {
		var sizes []int
		for _, s := range []int{10_000, 100_000, 1_000_000, 10_000_000} {
			if s <= *rebuildMax {
				sizes = append(sizes, s)
			}
		}
		if len(sizes) == 0 || sizes[len(sizes)-1] != *rebuildMax {
			sizes = append(sizes, *rebuildMax)
		}
		c.RebuildSizes = sizes
	}
	if c.Reps < 1 || c.Tasks < 1 || c.Concurrency < 1 || c.Submitters < 1 {
		return c, errors.New("-reps, -tasks, -concurrency and -submitters must be at least 1")
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return c, fmt.Errorf("-only: %w", err)
		}
		c.Only = re
	}
	return c, nil
}

// checkModuleDir makes sure we run in the bench module, whose go.mod the
// builds of qtasksd and the plugin process need.
func checkModuleDir() error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w (the harness needs the go command)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if filepath.Base(filepath.Dir(gomod)) != "bench" {
		return fmt.Errorf("run me from the bench module: cd bench && go run . (go.mod here is %q)", gomod)
	}
	return nil
}

func newHarness(cfg Config, log io.Writer) (*Harness, error) {
	tmp, err := os.MkdirTemp("", "qtasks-bench-")
	if err != nil {
		return nil, err
	}
	return &Harness{cfg: cfg, log: log, tmp: tmp, res: newResults(), quiet: slog.New(slog.DiscardHandler)}, nil
}

func (h *Harness) close() {
	for i := len(h.closes) - 1; i >= 0; i-- {
		h.closes[i]()
	}
	_ = os.RemoveAll(h.tmp)
}

func (h *Harness) onClose(f func()) { h.closes = append(h.closes, f) }

func (h *Harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// dir returns a new directory under the harness's temporary directory.
func (h *Harness) dir(prefix string) (string, error) {
	return os.MkdirTemp(h.tmp, prefix)
}

// run runs every repetition of every selected bench, interleaved: one
// repetition of each in turn, so that a figure and its limit or peer see
// the machine in the same state.
func (h *Harness) run(ctx context.Context, all []Bench) {
	var sel []Bench
	for _, b := range all {
		if h.cfg.Only == nil || h.cfg.Only.MatchString(b.Name) {
			sel = append(sel, b)
		}
	}
	failed := map[string]bool{}
	for rep := range h.cfg.Reps {
		for _, b := range sel {
			reps := h.cfg.Reps
			if b.Reps > 0 {
				reps = min(reps, b.Reps)
			}
			if rep >= reps || failed[b.Name] {
				continue
			}
			if ctx.Err() != nil {
				h.errs = append(h.errs, ctx.Err())
				return
			}
			t0 := time.Now()
			bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			err := b.Run(bctx, h, rep)
			cancel()
			if err != nil {
				failed[b.Name] = true
				h.errs = append(h.errs, fmt.Errorf("%s (repetition %d): %w", b.Name, rep+1, err))
				h.logf("rep %d/%d %-28s FAILED: %v", rep+1, reps, b.Name, err)
				continue
			}
			h.logf("rep %d/%d %-28s %6.1fs", rep+1, reps, b.Name, time.Since(t0).Seconds())
		}
	}
}

// Results holds every sample by metric key.
type Results struct {
	mu sync.Mutex
	m  map[string][]float64
}

func newResults() *Results { return &Results{m: map[string][]float64{}} }

func (r *Results) add(key string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[key] = append(r.m[key], v)
}

// stat returns the median, min and max of key's samples and how many there
// are.
func (r *Results) stat(key string) (med, lo, hi float64, n int) {
	r.mu.Lock()
	s := slices.Clone(r.m[key])
	r.mu.Unlock()
	if len(s) == 0 {
		return 0, 0, 0, 0
	}
	sort.Float64s(s)
	n = len(s)
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1], n
}

// ratio is the median of the per-repetition ratios key/ref when both have
// one sample per repetition (the repetitions are interleaved, so sample i
// of each comes from the same round), else the ratio of their medians.
func (r *Results) ratio(key, ref string) (float64, bool) {
	r.mu.Lock()
	a, b := slices.Clone(r.m[key]), slices.Clone(r.m[ref])
	r.mu.Unlock()
	if len(a) == 0 || len(b) == 0 {
		return 0, false
	}
	if len(a) == len(b) {
		q := make([]float64, 0, len(a))
		for i := range a {
			if b[i] != 0 {
				q = append(q, a[i]/b[i])
			}
		}
		if len(q) == len(a) {
			sort.Float64s(q)
			n := len(q)
			if n%2 == 1 {
				return q[n/2], true
			}
			return (q[n/2-1] + q[n/2]) / 2, true
		}
	}
	ma, _, _, _ := r.stat(key)
	mb, _, _, _ := r.stat(ref)
	if mb == 0 {
		return 0, false
	}
	return ma / mb, true
}

func (r *Results) has(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m[key]) > 0
}

func (r *Results) readJSON(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return json.Unmarshal(data, &r.m)
}

func (r *Results) writeJSON(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, err := json.MarshalIndent(r.m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// add records one sample of key, and logs it with -v.
func (h *Harness) add(key string, v float64) {
	h.res.add(key, v)
	if h.cfg.Verbose {
		h.logf("    %-36s %s", key, human(v))
	}
}

func hostLoad() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "load unknown"
	}
	return "load " + strings.Join(f[:3], " ") + " at the end"
}
