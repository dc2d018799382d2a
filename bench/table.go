package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Row is one line of the table: a figure, and optionally the limit or peer
// it is compared with and the target the ratio must meet.
type Row struct {
	Section string
	Label   string
	Key     string
	Unit    string
	// Ref is the key of the limit or peer; RefLabel names it in the table.
	Ref, RefLabel string
	// Target, when set, is checked against the ratio Key/Ref (or against
	// the value itself when Ref is empty).
	Target *Target
	// NA, when set, is printed instead of a figure that this build cannot
	// measure (a part not built yet).
	NA string
}

// Target is a pass/fail bound: value (or ratio) Op X.
type Target struct {
	Op string // ">=" or "<=" or "<"
	X  float64
}

func (t *Target) String() string {
	op := map[string]string{">=": "≥", "<=": "≤", "<": "<"}[t.Op]
	return op + " " + trimFloat(t.X)
}

func (t *Target) ok(v float64) bool {
	switch t.Op {
	case ">=":
		return v >= t.X
	case "<=":
		return v <= t.X
	case "<":
		return v < t.X
	}
	return false
}

func ge(x float64) *Target { return &Target{">=", x} }
func le(x float64) *Target { return &Target{"<=", x} }
func lt(x float64) *Target { return &Target{"<", x} }

// payloads of the round-trip growth series, and the headline payload (the
// size of a typical trigger fact).
var (
	factSize       = 634
	growthPayloads = []int{100, 10 * 1024, 100 * 1024}
	growthMutators = []int{0, 1, 3, 10}
)

func sizeLabel(n int) string {
	switch {
	case n >= 1024 && n%1024 == 0:
		return strconv.Itoa(n/1024) + " KB"
	default:
		return strconv.Itoa(n) + " B"
	}
}

func countLabel(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

func tableRows(cfg Config) []Row {
	const (
		lim   = "limits"
		ours  = "ours"
		peers = "peers"
		grow  = "how cost grows"
	)
	conc := strconv.Itoa(cfg.Concurrency)
	rows := []Row{
		{Section: lim, Label: "raw JetStream async publish (634 B, file storage)", Key: "limit.publish", Unit: "msgs/s"},
		{Section: lim, Label: "raw publish → durable consume → reply, p50", Key: "rt.raw.634.p50", Unit: "µs"},
		{Section: lim, Label: "raw publish → durable consume → reply, p99", Key: "rt.raw.634.p99", Unit: "µs"},
		{Section: lim, Label: "raw SQLite insert (mattn, WAL, 500 rows/tx)", Key: "limit.sqlite", Unit: "rows/s"},
		{Section: lim, Label: fmt.Sprintf("raw JetStream task floor: a task's JetStream operations, bare, %d facts (lifecycle)", floorLifecycle.facts()), Key: "limit.floor.life", Unit: "tasks/s", Ref: "asynq.tuned", RefLabel: "Asynq tuned"},
		{Section: lim, Label: fmt.Sprintf("raw JetStream task floor, %d facts (all recorded)", floorAll.facts()), Key: "limit.floor.all", Unit: "tasks/s", Ref: "asynq.tuned", RefLabel: "Asynq tuned"},
		{Section: lim, Label: "  the same, every fact with qtasks' CloudEvents headers", Key: "limit.floor.all.ce", Unit: "tasks/s", Ref: "limit.floor.all", RefLabel: "floor, all"},
		{Section: lim, Label: "  CPU per task, floor, lifecycle", Key: "limit.floor.life.cpu", Unit: "µs", Ref: "asynq.tuned.cpu", RefLabel: "Asynq tuned"},
		{Section: lim, Label: "  CPU per task, floor, all recorded", Key: "limit.floor.all.cpu", Unit: "µs", Ref: "asynq.tuned.cpu", RefLabel: "Asynq tuned"},
	}
	rows = append(rows, floorRows()...)
	rows = append(rows, []Row{

		{Section: ours, Label: "trigger fact publish (bus.PublishAsync)", Key: "ours.factpub", Unit: "msgs/s", Ref: "limit.publish", RefLabel: "raw publish", Target: ge(0.70)},
		{Section: ours, Label: "mutator round trip p50, in-process (plugins.Local)", Key: "rt.local.634.p50", Unit: "µs", Ref: "rt.raw.634.p50", RefLabel: "raw RT p50", Target: le(2)},
		{Section: ours, Label: "mutator round trip p99, in-process (plugins.Local)", Key: "rt.local.634.p99", Unit: "µs", Ref: "rt.raw.634.p99", RefLabel: "raw RT p99", Target: le(3)},
		{Section: ours, Label: "mutator round trip p50, plugin process", Key: "rt.proc.634.p50", Unit: "µs", Ref: "rt.raw.634.p50", RefLabel: "raw RT p50", Target: le(2)},
		{Section: ours, Label: "mutator round trip p99, plugin process", Key: "rt.proc.634.p99", Unit: "µs", Ref: "rt.raw.634.p99", RefLabel: "raw RT p99", Target: le(3)},
		{Section: ours, Label: "Watermill: mutator round trip p50, plugin process on Watermill's router (wmplugin)", Key: "wm.rt.wm.p50", Unit: "µs", Ref: "wm.rt.raw.p50", RefLabel: "raw RT p50", Target: le(2)},
		{Section: ours, Label: "  the same plugin on today's runner (echoplugin), same run", Key: "wm.rt.runner.p50", Unit: "µs", Ref: "wm.rt.raw.p50", RefLabel: "raw RT p50", Target: le(2)},
		{Section: ours, Label: "  Watermill ÷ runner, p50", Key: "wm.rt.wm.p50", Unit: "µs", Ref: "wm.rt.runner.p50", RefLabel: "runner p50"},
		{Section: ours, Label: "Watermill: mutator round trip p99, plugin process on Watermill's router", Key: "wm.rt.wm.p99", Unit: "µs", Ref: "wm.rt.raw.p99", RefLabel: "raw RT p99", Target: le(3)},
		{Section: ours, Label: "  the same plugin on today's runner, same run", Key: "wm.rt.runner.p99", Unit: "µs", Ref: "wm.rt.raw.p99", RefLabel: "raw RT p99", Target: le(3)},
		{Section: ours, Label: "  Watermill ÷ runner, p99", Key: "wm.rt.wm.p99", Unit: "µs", Ref: "wm.rt.runner.p99", RefLabel: "runner p99"},
		{Section: ours, Label: "  raw round trip p50 in that bench", Key: "wm.rt.raw.p50", Unit: "µs"},
		{Section: ours, Label: "  raw round trip p99 in that bench", Key: "wm.rt.raw.p99", Unit: "µs"},
		{Section: ours, Label: "Watermill: calls/s, 16 in flight, plugin process on Watermill", Key: "wm.rate.wm", Unit: "calls/s", Ref: "wm.rate.runner", RefLabel: "runner"},
		{Section: ours, Label: "  the same on today's runner", Key: "wm.rate.runner", Unit: "calls/s"},
		{Section: ours, Label: "tasks/s, all triggers recorded, 0 mutators", Key: "tasks.all.m0", Unit: "tasks/s", Ref: "asynq.tuned", RefLabel: "Asynq tuned", Target: ge(0.75)},
		{Section: ours, Label: "  (same figure)", Key: "tasks.all.m0", Unit: "tasks/s", Ref: "river.tuned", RefLabel: "River tuned", Target: ge(1.5)},
		{Section: ours, Label: "  (same figure)", Key: "tasks.all.m0", Unit: "tasks/s", Ref: "limit.floor.all", RefLabel: "task floor"},
		{Section: ours, Label: "tasks/s, all triggers recorded, 1 mutator", Key: "tasks.all.m1", Unit: "tasks/s", Ref: "asynq.tuned", RefLabel: "Asynq tuned"},
		{Section: ours, Label: "tasks/s, all triggers recorded, 3 mutators", Key: "tasks.all.m3", Unit: "tasks/s", Ref: "asynq.tuned", RefLabel: "Asynq tuned"},
		{Section: ours, Label: "tasks/s, lifecycle facts only, 0 mutators", Key: "tasks.life.m0", Unit: "tasks/s", Ref: "asynq.tuned", RefLabel: "Asynq tuned", Target: ge(1.5)},
		{Section: ours, Label: "  (same figure)", Key: "tasks.life.m0", Unit: "tasks/s", Ref: "limit.floor.life", RefLabel: "task floor"},
		{Section: ours, Label: "tasks/s, all recorded, 0 mutators, default concurrency 10", Key: "tasks.all.m0.c10", Unit: "tasks/s", Ref: "asynq.default", RefLabel: "Asynq defaults"},
		{Section: ours, Label: "CPU per task (all processes), all recorded, 0 mutators", Key: "tasks.all.m0.cpu", Unit: "µs", Ref: "asynq.tuned.cpu", RefLabel: "Asynq tuned"},
		{Section: ours, Label: "CPU per task (all processes), lifecycle only, 0 mutators", Key: "tasks.life.m0.cpu", Unit: "µs", Ref: "asynq.tuned.cpu", RefLabel: "Asynq tuned"},
		{Section: ours, Label: "Submit latency p50 under load, all recorded, 0 mutators", Key: "tasks.all.m0.submit.p50", Unit: "µs", Ref: "asynq.tuned.submit.p50", RefLabel: "Asynq Enqueue"},
		{Section: ours, Label: "Submit latency p99 under load, all recorded, 0 mutators", Key: "tasks.all.m0.submit.p99", Unit: "µs", Ref: "asynq.tuned.submit.p99", RefLabel: "Asynq Enqueue"},
		{Section: ours, Label: "SubmitMany, " + countLabel(2*cfg.Tasks) + " tasks in one call (submission only, all recorded)", Key: "submit.many", Unit: "tasks/s", Ref: "submit.one", RefLabel: "Submit one by one", Target: ge(3)},
		{Section: ours, Label: "  (same figure)", Key: "submit.many", Unit: "tasks/s", Ref: "submit.conc", RefLabel: "Submit, " + strconv.Itoa(cfg.Submitters) + " goroutines"},
		{Section: ours, Label: "  (same figure)", Key: "submit.many", Unit: "tasks/s", Ref: "submit.asynq", RefLabel: "Asynq EnqueueContext, " + strconv.Itoa(cfg.Submitters) + " goroutines"},
		{Section: ours, Label: "  SubmitMany, messages stored per second (run with the publish bench)", Key: "submit.many.msgs", Unit: "msgs/s", Ref: "limit.publish", RefLabel: "raw publish"},
		{Section: ours, Label: "  Submit one by one, messages stored per second", Key: "submit.one.msgs", Unit: "msgs/s", Ref: "limit.publish", RefLabel: "raw publish"},
		{Section: ours, Label: "  messages stored per submission (facts, record, task message)", Key: "submit.many.msgspertask", Unit: "msgs"},
		{Section: ours, Label: "  CPU per task, SubmitMany (this process, with the embedded server)", Key: "submit.many.cpu", Unit: "µs", Ref: "submit.one.cpu", RefLabel: "Submit one by one"},
		{Section: ours, Label: "  (same figure)", Key: "submit.many.cpu", Unit: "µs", Ref: "submit.asynq.cpu", RefLabel: "Asynq enqueue"},
		{Section: ours, Label: "Submit one by one, one goroutine (submission only)", Key: "submit.one", Unit: "tasks/s", Ref: "submit.asynq.one", RefLabel: "Asynq one by one"},
		{Section: ours, Label: "  CPU per task, Submit one by one", Key: "submit.one.cpu", Unit: "µs", Ref: "submit.asynq.cpu", RefLabel: "Asynq enqueue"},
		{Section: ours, Label: "Submit from " + strconv.Itoa(cfg.Submitters) + " goroutines (submission only)", Key: "submit.conc", Unit: "tasks/s", Ref: "submit.asynq", RefLabel: "Asynq, same goroutines"},
		{Section: ours, Label: "  CPU per task, Submit from " + strconv.Itoa(cfg.Submitters) + " goroutines", Key: "submit.conc.cpu", Unit: "µs", Ref: "submit.asynq.cpu", RefLabel: "Asynq enqueue"},
		{Section: ours, Label: "events in the log per task, all recorded", Key: "tasks.all.m0.events", Unit: "events"},
		{Section: ours, Label: "events in the log per task, lifecycle only", Key: "tasks.life.m0.events", Unit: "events"},
		{Section: ours, Label: "projection apply (DB.Apply, 500 events/tx, prepare beside write)", Key: "ours.apply", Unit: "events/s", Ref: "limit.sqlite", RefLabel: "raw SQLite", Target: ge(0.5)},
		{Section: ours, Label: "projection rebuild (Build from seq 1), " + countLabel(cfg.RebuildSizes[0]) + " events", Key: "rebuild." + strconv.Itoa(cfg.RebuildSizes[0]), Unit: "s"},
		{Section: ours, Label: "projection rebuild rate, " + countLabel(cfg.RebuildSizes[0]) + " events", Key: "rebuild." + strconv.Itoa(cfg.RebuildSizes[0]) + ".rate", Unit: "events/s", Ref: "limit.sqlite", RefLabel: "raw SQLite"},
		{Section: ours, Label: "replay rate, in-process candidate (replay.Run, Spec)", Key: "replay.inproc", Unit: "inv/s"},
		{Section: ours, Label: "replay rate, candidate process (replay.Run, Command)", Key: "replay.proc", Unit: "inv/s"},
		{Section: ours, Label: "qtasksd peak RSS (VmHWM) under end-to-end load", Key: "qtasksd.rss", Unit: "MB", Target: lt(150)},
		{Section: ours, Label: "qtasksd RSS, last phase peak ÷ second phase peak", Key: "qtasksd.rss.growth", Unit: "×", Target: le(1.2)},
		{Section: ours, Label: "qtasksd tasks/s during the RSS run (concurrency " + conc + ")", Key: "qtasksd.tasks", Unit: "tasks/s"},
		{Section: ours, Label: "  CPU per task (qtasksd + client)", Key: "qtasksd.cpu", Unit: "µs"},
	}...)
	for i := range cfg.RSSPhases {
		rows = append(rows, Row{Section: ours, Label: fmt.Sprintf("  qtasksd RSS peak in phase %d (history %s tasks)", i+1, countLabel((i+1)*cfg.RSSTasks)),
			Key: fmt.Sprintf("qtasksd.rss.phase%d", i+1), Unit: "MB"})
	}
	for i := range cfg.RSSPhases {
		r := Row{Section: ours, Label: fmt.Sprintf("  qtasksd tasks/s in phase %d (history %s tasks)", i+1, countLabel((i+1)*cfg.RSSTasks)),
			Key: fmt.Sprintf("qtasksd.tasks.phase%d", i+1), Unit: "tasks/s"}
		if i > 0 {
			r.Ref, r.RefLabel = "qtasksd.tasks.phase1", "phase 1"
		}
		rows = append(rows, r)
	}
	rows = append(rows, []Row{

		{Section: peers, Label: "Asynq/Redis, defaults (Concurrency = CPUs, TaskCheckInterval 1 s)", Key: "asynq.default", Unit: "tasks/s"},
		{Section: peers, Label: "Asynq/Redis, tuned (Concurrency " + conc + ", TaskCheckInterval 5 ms)", Key: "asynq.tuned", Unit: "tasks/s"},
		{Section: peers, Label: "  CPU per task (harness + redis-server), Asynq tuned", Key: "asynq.tuned.cpu", Unit: "µs"},
		{Section: peers, Label: "River/riversqlite, defaults (MaxWorkers 100, FetchCooldown 100 ms, poll 1 s)", Key: "river.default", Unit: "tasks/s"},
		{Section: peers, Label: "River/riversqlite, tuned (FetchCooldown 1 ms, poll 5 ms, MaxWorkers " + conc + ")", Key: "river.tuned", Unit: "tasks/s"},
		{Section: peers, Label: "  CPU per task, River tuned", Key: "river.tuned.cpu", Unit: "µs"},
		{Section: peers, Label: "Asynq EnqueueContext from " + strconv.Itoa(cfg.Submitters) + " goroutines, " + countLabel(2*cfg.Tasks) + " tasks (submission only; Asynq has no batch API)", Key: "submit.asynq", Unit: "tasks/s"},
		{Section: peers, Label: "  CPU per task (harness + redis-server)", Key: "submit.asynq.cpu", Unit: "µs"},
		{Section: peers, Label: "Asynq EnqueueContext one by one, one goroutine", Key: "submit.asynq.one", Unit: "tasks/s"},
		{Section: peers, Label: "  Enqueue latency p50 under load, Asynq tuned", Key: "asynq.tuned.submit.p50", Unit: "µs"},
		{Section: peers, Label: "  Enqueue latency p99 under load, Asynq tuned", Key: "asynq.tuned.submit.p99", Unit: "µs"},
		{Section: peers, Label: "  Insert latency p50 under load, River tuned", Key: "river.tuned.submit.p50", Unit: "µs"},
	}...)
	for _, m := range growthMutators {
		r := Row{Section: grow, Label: fmt.Sprintf("tasks/s, %d mutator(s) in process, all recorded", m), Key: fmt.Sprintf("tasks.all.m%d", m), Unit: "tasks/s"}
		if m > 0 {
			r.Ref, r.RefLabel = "tasks.all.m0", "0 mutators"
		}
		rows = append(rows, r)
	}
	for _, p := range growthPayloads {
		for _, q := range []string{"p50", "p99"} {
			rows = append(rows,
				Row{Section: grow, Label: fmt.Sprintf("raw round trip %s, %s payload", q, sizeLabel(p)), Key: fmt.Sprintf("rt.raw.%d.%s", p, q), Unit: "µs"},
				Row{Section: grow, Label: fmt.Sprintf("mutator round trip %s, plugin process, %s", q, sizeLabel(p)), Key: fmt.Sprintf("rt.proc.%d.%s", p, q), Unit: "µs", Ref: fmt.Sprintf("rt.raw.%d.%s", p, q), RefLabel: "raw RT " + q},
				Row{Section: grow, Label: fmt.Sprintf("mutator round trip %s, in-process, %s", q, sizeLabel(p)), Key: fmt.Sprintf("rt.local.%d.%s", p, q), Unit: "µs", Ref: fmt.Sprintf("rt.raw.%d.%s", p, q), RefLabel: "raw RT " + q},
			)
		}
	}
	first := strconv.Itoa(cfg.RebuildSizes[0])
	for _, s := range cfg.RebuildSizes {
		r := Row{Section: grow, Label: "projection rebuild, " + countLabel(s) + " events", Key: "rebuild." + strconv.Itoa(s), Unit: "s"}
		rows = append(rows, r)
		r2 := Row{Section: grow, Label: "  rebuild rate, " + countLabel(s) + " events", Key: "rebuild." + strconv.Itoa(s) + ".rate", Unit: "events/s"}
		if strconv.Itoa(s) != first {
			r2.Ref, r2.RefLabel = "rebuild."+first+".rate", "rate at "+countLabel(cfg.RebuildSizes[0])
		}
		rows = append(rows, r2)
		if s >= 100_000 {
			rows = append(rows, Row{Section: grow, Label: "  rebuild: peak live Go heap above baseline, " + countLabel(s) + " events", Key: "rebuild." + strconv.Itoa(s) + ".heap", Unit: "MB"})
		}
	}
	return rows
}

// writeTable prints rows as one Markdown table, aligned for a terminal.
func writeTable(w io.Writer, rows []Row, res *Results) {
	header := []string{"figure", "median", "min – max", "n", "vs", "ratio", "target", ""}
	var lines [][]string
	section := ""
	for _, r := range rows {
		if r.Section != section {
			section = r.Section
			lines = append(lines, []string{"**" + section + "**", "", "", "", "", "", "", ""})
		}
		cells := []string{r.Label, "", "", "", r.RefLabel, "", "", ""}
		if r.Target != nil {
			if r.Ref != "" {
				cells[6] = r.Target.String() + "×"
			} else {
				cells[6] = r.Target.String() + " " + r.Unit
			}
		}
		med, lo, hi, n := res.stat(r.Key)
		switch {
		case r.NA != "":
			cells[1] = "n/a (" + r.NA + ")"
		case n == 0:
			cells[1] = "not run"
		default:
			cells[1] = human(med) + " " + r.Unit
			cells[2] = human(lo) + " – " + human(hi)
			cells[3] = strconv.Itoa(n)
			v := med
			if r.Ref != "" {
				if q, ok := res.ratio(r.Key, r.Ref); ok {
					v = q
					cells[5] = fmt.Sprintf("%.2f×", v)
				} else {
					cells[5] = "—"
					v = math.NaN()
				}
			}
			if r.Target != nil && !math.IsNaN(v) {
				if r.Target.ok(v) {
					cells[7] = "PASS"
				} else {
					cells[7] = "FAIL"
				}
			}
		}
		lines = append(lines, cells)
	}
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = max(3, utf8.RuneCountInString(h))
	}
	for _, l := range lines {
		for i, c := range l {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	pad := func(s string, n int, right bool) string {
		p := strings.Repeat(" ", n-utf8.RuneCountInString(s))
		if right {
			return p + s
		}
		return s + p
	}
	right := []bool{false, true, true, true, false, true, false, false}
	printRow := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + pad(c, width[i], right[i]) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	printRow(header)
	sep := make([]string, len(header))
	for i := range sep {
		d := strings.Repeat("-", width[i])
		if right[i] {
			d = d[:len(d)-1] + ":"
		}
		sep[i] = d
	}
	printRow(sep)
	for _, l := range lines {
		printRow(l)
	}
}

// human formats v with three significant digits and a k/M suffix.
func human(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 10e6:
		return fmt.Sprintf("%.0fM", v/1e6)
	case a >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case a >= 100e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	case a >= 10e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case a >= 1e3:
		return fmt.Sprintf("%.2fk", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func trimFloat(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

// floorLabels name the candidate exchanges of issue #15 in the table.
var floorLabels = map[string]string{
	"life.ce":      "(a) today, lifecycle, CE headers",
	"all.ce":       "(a) today, all recorded, CE headers",
	"b.all":        "(b) each phase's facts in one batch message, all recorded",
	"c.all":        "(c) lifecycle facts alone, the rest per phase, all recorded",
	"d.life":       "(d) record at submission and end only, lifecycle",
	"d.all":        "(d) record at submission and end only, all recorded",
	"e.life":       "(e) pipelined submission (one wait), lifecycle",
	"e.all":        "(e) pipelined submission (one wait), all recorded",
	"f.life":       "(f) = (c)+(d)+(e), lifecycle",
	"f.all":        "(f) = (c)+(d)+(e), all recorded",
	"f.all.conn":   "(f), the submissions on a connection of their own (a client process's)",
	"f.life.srv":   "(f), lifecycle, the server in a process of its own (qtasksd)",
	"f.all.srv":    "(f), all recorded, the server in a process of its own (qtasksd)",
	"bde.all":      "(b)+(d)+(e), all recorded (most packing)",
	"f.claim.life": "(f) + the run's claim (as built), lifecycle",
	"f.claim.all":  "(f) + the run's claim (as built), all recorded",
}

// floorRows are the candidate exchanges' floors: tasks/s, CPU per task and
// submission latency against Asynq tuned (and River tuned for tasks/s), and
// the event log's messages per task.
func floorRows() []Row {
	const sec = "exchange candidates (issue #15): bare nats.go floors"
	var rows []Row
	for _, o := range append([]floorOps{floorLifeCE, floorAllCE}, floorCandidates[1:]...) {
		k := "limit.floor." + o.name
		l := floorLabels[o.name]
		rows = append(rows,
			Row{Section: sec, Label: l + fmt.Sprintf(" (%d facts)", o.facts()), Key: k, Unit: "tasks/s", Ref: "asynq.tuned", RefLabel: "Asynq tuned"},
			Row{Section: sec, Label: "  (same figure)", Key: k, Unit: "tasks/s", Ref: "river.tuned", RefLabel: "River tuned"},
			Row{Section: sec, Label: "  CPU per task", Key: k + ".cpu", Unit: "µs", Ref: "asynq.tuned.cpu", RefLabel: "Asynq tuned"},
			Row{Section: sec, Label: "  submit latency p50", Key: k + ".submit.p50", Unit: "µs", Ref: "asynq.tuned.submit.p50", RefLabel: "Asynq Enqueue"},
			Row{Section: sec, Label: "  submit latency p99", Key: k + ".submit.p99", Unit: "µs", Ref: "asynq.tuned.submit.p99", RefLabel: "Asynq Enqueue"},
			Row{Section: sec, Label: "  event log messages per task", Key: k + ".msgs", Unit: "msgs"},
		)
		if o.pipelined {
			rows = append(rows, Row{Section: sec, Label: "  tasks that reached the worker before their record", Key: k + ".races", Unit: "tasks"})
		}
	}
	return rows
}
