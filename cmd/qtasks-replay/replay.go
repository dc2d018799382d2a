package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/projections"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// filterFlags select recorded invocations.
type filterFlags struct {
	since, until         string
	names, triggers, ids listFlag
	last                 int
	includeTesting       bool
}

func registerFilter(fs *flag.FlagSet, f *filterFlags) {
	fs.StringVar(&f.since, "since", "", "only invocations since (RFC 3339, or a duration ago such as 24h)")
	fs.StringVar(&f.until, "until", "", "only invocations until (RFC 3339, or a duration ago)")
	fs.Var(&f.names, "task-name", "only these task names (repeatable)")
	fs.Var(&f.triggers, "trigger", "only these triggers (repeatable)")
	fs.Var(&f.ids, "task-id", "only these task ids (repeatable)")
	fs.IntVar(&f.last, "last", 0, "only the last N invocations")
	fs.BoolVar(&f.includeTesting, "include-testing", false, "include tasks run under test (left out by default)")
}

func (f *filterFlags) filter(now time.Time) (replay.Filter, error) {
	var out replay.Filter
	var err error
	if out.Since, out.Until, err = timeRange(f.since, f.until, now, "--since 24h --until 1h"); err != nil {
		return out, err
	}
	if f.last < 0 {
		return out, &usageError{Msg: fmt.Sprintf("--last %d: must not be negative", f.last), Hint: "--last 1000"}
	}
	out.TaskNames, out.Triggers, out.TaskIDs = f.names, f.triggers, f.ids
	out.Last, out.IncludeTesting = f.last, f.includeTesting
	return out, nil
}

// openLive connects to the live bus read-only: a replay must not change the
// live log, its registry or its streams.
func (c *connFlags) openLive(ctx context.Context, m *Main, logLevel string) (*bus.Bus, error) {
	log, err := (&common{logLevel: logLevel}).logger(m.Stderr)
	if err != nil {
		return nil, err
	}
	return c.open(ctx, log)
}

// replayPlugin feeds a candidate version of plugin NAME the recorded
// invocations of NAME and compares its patches with the recorded ones.
func (m *Main) replayPlugin(ctx context.Context, args []string) error {
	const hint = "qtasks-replay plugin NAME --candidate-cmd 'my-plugin --nats-url {nats_url}'"
	var conn connFlags
	var ff filterFlags
	var masks listFlag
	fs := newFlagSet("qtasks-replay plugin", m.Stderr, "qtasks-replay plugin NAME --candidate-cmd CMD [flags]")
	conn.register(fs)
	candidate := fs.String("candidate-cmd", "", "the candidate plugin program; {nats_url} (required: the replay server), {replay_id}, {plugin} are replaced")
	candLog := fs.String("candidate-log", "", "write what the candidate (and baseline) print to this file; default: shown only when the replay fails")
	baseline := fs.String("baseline-cmd", "", "the recorded version's program, replayed beside the candidate to mask noise")
	file := fs.String("file", "", "replay an export file instead of the live log")
	registerFilter(fs, &ff)
	fs.Var(&masks, "mask", "JSON Pointer masked from every diff (repeatable; * matches one token)")
	pace := fs.Bool("pace", false, "replay at the original pace (divided by --speed)")
	speed := fs.Float64("speed", 1, "with --pace: how many times faster than recorded")
	concurrency := fs.Int("concurrency", replay.DefaultConcurrency, "invocations in flight")
	timeout := fs.Duration("timeout", 0, "per-invocation timeout; default: what the candidate registers")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	jsonl := fs.Bool("jsonl", false, "stream one JSON line per invocation to stdout, then the summary to stderr")
	keep := fs.Bool("keep-identical", false, "keep identical invocations in the report")
	noProgress := fs.Bool("no-progress", false, "no progress bar")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "warn"), "debug, info, warn or error")
	pos, err := parse(fs, args, hint)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{Msg: "plugin needs exactly one plugin name", Hint: hint}
	}
	if *candidate == "" {
		return &usageError{Msg: "--candidate-cmd is required", Hint: hint}
	}
	switch {
	case *pace && *speed <= 0:
		return &usageError{Msg: fmt.Sprintf("--speed %v: must be positive", *speed), Hint: hint + " --pace --speed 10"}
	case *concurrency <= 0:
		return &usageError{Msg: fmt.Sprintf("--concurrency %d: must be positive", *concurrency), Hint: hint}
	case *timeout < 0:
		return &usageError{Msg: fmt.Sprintf("--timeout %v: must not be negative (0: what the candidate registers)", *timeout), Hint: hint}
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	out := &candidateOutput{}
	cmd, err := candidateCmd("--candidate-cmd", *candidate, hint, out)
	if err != nil {
		return err
	}
	opts := replay.Options{
		Candidate: replay.Candidate{Command: cmd, Timeout: *timeout},
		Mask:      masks, Pace: *pace, Speed: *speed, Concurrency: *concurrency, KeepIdentical: *keep,
	}
	if *baseline != "" {
		bc, err := candidateCmd("--baseline-cmd", *baseline, hint, out)
		if err != nil {
			return err
		}
		opts.Baseline = &replay.Candidate{Command: bc, Timeout: *timeout}
	}
	if err := out.openLog(*candLog); err != nil {
		return err
	}
	// The first result --jsonl could not write (stdout closed): the
	// replay's error when it has none of its own.
	var writeErr error
	if *jsonl {
		enc := json.NewEncoder(m.Stdout)
		opts.OnResult = func(r replay.Result) {
			if err := enc.Encode(r); err != nil && writeErr == nil {
				writeErr = fmt.Errorf("writing --jsonl: %w", err)
			}
		}
	}
	bar := newProgress(m.Stderr, !*noProgress && !*jsonl && !*jsonOut, "replaying", "inv")
	opts.Progress = func(p replay.Progress) { bar.set(int64(p.Invocations), int64(p.Total)) }
	end := func(rep *replay.Report) {
		if rep != nil {
			bar.finish(int64(rep.Totals.Invocations))
		} else {
			bar.abort()
		}
	}

	var rep *replay.Report
	if *file != "" {
		fh, err := os.Open(*file)
		if err != nil {
			return out.close(err)
		}
		defer fh.Close()
		rep, err = replay.RunFile(ctx, fh, f, opts)
		end(rep)
		return m.finishReplay(rep, out.close(cmp.Or(err, writeErr)), *jsonOut, *jsonl)
	}
	live, err := conn.openLive(ctx, m, *logLevel)
	if err != nil {
		return out.close(err)
	}
	defer live.Close()
	rep, err = replay.Run(ctx, live, pos[0], f, opts)
	end(rep)
	return m.finishReplay(rep, out.close(cmp.Or(err, writeErr)), *jsonOut, *jsonl)
}

func (m *Main) finishReplay(rep *replay.Report, err error, jsonOut, jsonl bool) error {
	if rep != nil {
		out := m.Stdout
		if jsonl {
			out = m.Stderr
		}
		if jsonOut {
			_ = rep.WriteJSON(out)
		} else {
			_ = rep.WriteSummary(out)
		}
	}
	return replayExit(rep != nil && rep.Divergent(), err, "the candidate diverged from the recorded answers")
}

func replayExit(divergent bool, err error, what string) error {
	switch {
	case err != nil:
		return err
	case divergent:
		return &exitError{Code: ExitDivergent, Err: errors.New(what)}
	}
	return nil
}

// export writes a plugin's recorded history as newline-delimited
// CloudEvents JSON, for replay inside go test (replay.RunFile).
func (m *Main) export(ctx context.Context, args []string) error {
	const hint = "qtasks-replay export NAME -o history.ndjson"
	var conn connFlags
	var ff filterFlags
	fs := newFlagSet("qtasks-replay export", m.Stderr, "qtasks-replay export NAME [-o FILE] [filters]")
	conn.register(fs)
	registerFilter(fs, &ff)
	outPath := fs.String("o", "-", "output file; - for stdout")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "warn"), "debug, info, warn or error")
	pos, err := parse(fs, args, hint)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{Msg: "export needs exactly one plugin name", Hint: hint}
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	w := m.Stdout
	if *outPath != "-" {
		fh, err := os.Create(*outPath)
		if err != nil {
			return err
		}
		defer fh.Close()
		w = fh
	}
	live, err := conn.openLive(ctx, m, *logLevel)
	if err != nil {
		return err
	}
	defer live.Close()
	n, err := replay.Export(ctx, live, w, pos[0], f)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stderr, "exported %d invocations of %s\n", n, pos[0])
	return nil
}

// redrive pushes recorded task runs through today's plugin chain (or the
// given candidates), using the recorded results: no task function runs.
func (m *Main) redrive(ctx context.Context, args []string) error {
	const hint = "qtasks-replay redrive TASK_ID... | --db PATH --status error --name add [--candidate NAME='prog --nats-url {nats_url}']"
	var conn connFlags
	var cands, masks listFlag
	var sel taskSelect
	fs := newFlagSet("qtasks-replay redrive", m.Stderr, "qtasks-replay redrive [TASK_ID...] [--db PATH filters] [flags]")
	conn.register(fs)
	sel.register(fs)
	fs.Var(&cands, "candidate", "NAME=COMMAND: run COMMAND in place of plugin NAME (repeatable)")
	only := fs.Bool("only", false, "the chain is the candidates alone, not today's registry")
	fs.Var(&masks, "mask", "JSON Pointer masked from the diffs (repeatable)")
	candLog := fs.String("candidate-log", "", "write what the candidates print to this file; default: shown only when the re-drive fails")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "warn"), "debug, info, warn or error")
	pos, err := parse(fs, args, hint)
	if err != nil {
		return err
	}
	ids := pos
	// One open serves both the filters and the creation times below.
	var db *projections.DB
	if sel.any() {
		f, err := sel.filter(time.Now())
		if err != nil {
			return err
		}
		if db, err = (&common{db: sel.db}).openRead(ctx); err != nil {
			return err
		}
		defer db.Close()
		picked, err := sel.ids(ctx, db, f)
		if err != nil {
			return err
		}
		ids = appendNew(ids, picked)
		if len(ids) == 0 {
			fmt.Fprintln(m.Stderr, "no recorded task matches the filters")
			if *jsonOut {
				now := time.Now().UTC()
				return (&replay.RedriveReport{Started: now, Finished: now, Runs: []replay.RunReport{}}).WriteJSON(m.Stdout)
			}
			return nil
		}
	}
	if len(ids) == 0 {
		return &usageError{Msg: "redrive needs task ids or filters (--status, --name, --tag, --since, --until)", Hint: hint}
	}
	// Without filters the projection is optional: ids given by hand need
	// none, so a missing or unreadable one is not an error.
	if db == nil {
		if d, err := (&common{db: sel.db}).openRead(ctx); err == nil {
			db = d
			defer db.Close()
		}
	}
	opts := replay.RedriveOptions{TaskIDs: ids, Only: *only, Mask: masks}
	// A task whose record has expired is found in the log from its
	// creation time as the projection has it, when there is one.
	if db != nil {
		opts.CreatedAt = func(ctx context.Context, id string) (time.Time, bool) {
			t, err := db.Task(ctx, id)
			return t.CreatedAt, err == nil && !t.CreatedAt.IsZero()
		}
	}
	out := &candidateOutput{}
	for _, c := range cands {
		name, line, ok := strings.Cut(c, "=")
		if !ok || name == "" {
			return &usageError{Msg: fmt.Sprintf("--candidate %q: want NAME=COMMAND", c), Hint: hint}
		}
		cmd, err := candidateCmd("--candidate "+name, line, hint, out)
		if err != nil {
			return err
		}
		opts.Candidates = append(opts.Candidates, replay.Candidate{Name: name, Command: cmd})
	}
	if err := out.openLog(*candLog); err != nil {
		return err
	}
	live, err := conn.openLive(ctx, m, *logLevel)
	if err != nil {
		return out.close(err)
	}
	defer live.Close()
	rep, err := replay.Redrive(ctx, live, opts)
	err = out.close(err)
	if rep != nil {
		if *jsonOut {
			_ = rep.WriteJSON(m.Stdout)
		} else {
			_ = rep.WriteSummary(m.Stdout)
		}
	}
	if err == nil && rep != nil && rep.Totals.Changed+rep.Totals.Incomplete == 0 && rep.Totals.Missing > 0 {
		// Nothing diverged: some ids have no recorded facts (unknown, or
		// mistyped), which is "not found", not a plugin's divergence.
		return &exitError{Code: ExitNotFound, Err: fmt.Errorf("%d of %d tasks have no recorded facts (unknown ids?)", rep.Totals.Missing, rep.Totals.Runs)}
	}
	return replayExit(rep != nil && rep.Changed(), err, "a re-driven run changed")
}

// taskSelect picks the tasks to re-drive from the projection.
type taskSelect struct {
	db                              string
	status, name, tag, since, until string
	limit                           int
}

func (s *taskSelect) register(fs *flag.FlagSet) {
	fs.StringVar(&s.db, "db", envOr("QTASKS_DB", projections.DefaultPath), "projection database the filters read (QTASKS_DB)")
	fs.StringVar(&s.status, "status", "", "re-drive the recorded tasks with this status (from --db)")
	fs.StringVar(&s.name, "name", "", "re-drive the recorded tasks with this name (from --db)")
	fs.StringVar(&s.tag, "tag", "", "re-drive the recorded tasks with this tag (from --db)")
	fs.StringVar(&s.since, "since", "", "re-drive the tasks created since (RFC 3339 or a duration ago, e.g. 24h)")
	fs.StringVar(&s.until, "until", "", "re-drive the tasks created before (RFC 3339 or a duration ago)")
	fs.IntVar(&s.limit, "limit", 100, "with filters: at most this many tasks, newest first")
}

func (s *taskSelect) any() bool {
	return s.status != "" || s.name != "" || s.tag != "" || s.since != "" || s.until != ""
}

// filter is the task filter of the flags, checked before any database is
// opened so that a bad flag is a usage error whatever the projection.
func (s *taskSelect) filter(now time.Time) (projections.TaskFilter, error) {
	f := projections.TaskFilter{Status: s.status, Name: s.name, Tag: s.tag}
	if s.limit <= 0 {
		return f, &usageError{Msg: "--limit must be positive"}
	}
	var err error
	f.Since, f.Until, err = timeRange(s.since, s.until, now, "--since 24h --until 1h")
	return f, err
}

// ids lists the ids of the projected tasks matching f, newest first, up to
// the limit.
func (s *taskSelect) ids(ctx context.Context, db *projections.DB, f projections.TaskFilter) ([]string, error) {
	var out []string
	for len(out) < s.limit {
		f.Limit = min(s.limit-len(out), projections.MaxLimit)
		page, err := db.Tasks(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, t := range page.Tasks {
			out = append(out, t.ID)
		}
		if page.Next == "" {
			break
		}
		f.Cursor = page.Next
	}
	return out, nil
}

// appendNew appends the ids of more not already in ids.
func appendNew(ids, more []string) []string {
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	for _, id := range more {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// shadow prints how often a shadow plugin disagrees with the live one.
func (m *Main) shadow(ctx context.Context, args []string) error {
	const hint = "qtasks-replay shadow NAME [--max-rate 0.01] | shadow NAME --db PATH --of LIVE"
	var conn connFlags
	var masks listFlag
	fs := newFlagSet("qtasks-replay shadow", m.Stderr, "qtasks-replay shadow NAME [flags]")
	conn.register(fs)
	dbPath := fs.String("db", "", "read the calls from this projection instead of the live log (needs --of; no masks)")
	of := fs.String("of", "", "the live plugin; default: the shadow's registration")
	since := fs.String("since", "", "only facts since (RFC 3339 or a duration ago, e.g. 1h)")
	fs.Var(&masks, "mask", "JSON Pointer masked from the comparison (repeatable)")
	maxRate := fs.Float64("max-rate", -1, fmt.Sprintf("exit %d when the divergence rate is above this rate, from 0 to 1; unset: report only, exit %d", ExitDivergent, ExitOK))
	jsonOut := fs.Bool("json", false, "print the stats as JSON")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "warn"), "debug, info, warn or error")
	pos, err := parse(fs, args, hint)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{Msg: "shadow needs exactly one plugin name", Hint: hint}
	}
	// Without --max-rate shadow reports and exits 0: a look at a shadow
	// is not a gate, and any divergence at all would fail one set at 0.
	gate := flagSet(fs, "max-rate")
	if gate && (*maxRate < 0 || *maxRate > 1) {
		return &usageError{Msg: fmt.Sprintf("--max-rate %v: want a rate from 0 to 1", *maxRate), Hint: hint}
	}
	if !gate {
		*maxRate = math.Inf(1)
	}
	opts := replay.ShadowOptions{Shadow: pos[0], ShadowOf: *of, Mask: masks}
	if *since != "" {
		if opts.Since, err = parseTime(*since, time.Now()); err != nil {
			return &usageError{Msg: "--since: " + err.Error(), Hint: hint}
		}
	}
	if *dbPath != "" {
		return m.shadowFromDB(ctx, *dbPath, opts, *jsonOut, *maxRate, hint)
	}
	live, err := conn.openLive(ctx, m, *logLevel)
	if err != nil {
		return err
	}
	defer live.Close()
	st, err := replay.Shadow(ctx, live, opts)
	if err != nil {
		return err
	}
	if *jsonOut {
		if err := writeJSON(m.Stdout, st); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(m.Stdout, "shadow %s of %s: %d compared, %d identical, %d different, %d errors, %d timeouts, %d unpaired; divergence rate %.4f\n",
			st.Shadow, st.ShadowOf, st.Compared, st.Identical, st.Different, st.Errors, st.Timeouts, st.Unpaired, st.Rate)
	}
	return replayExit(st.Rate > *maxRate, nil, fmt.Sprintf("divergence rate %.4f is above %.4f", st.Rate, *maxRate))
}

// shadowFromDB prints a shadow's divergence rate from the projection: no
// NATS needed.
func (m *Main) shadowFromDB(ctx context.Context, path string, opts replay.ShadowOptions, jsonOut bool, maxRate float64, hint string) error {
	if opts.ShadowOf == "" {
		return &usageError{Msg: "--db needs --of: the projection keeps no registrations", Hint: hint}
	}
	if len(opts.Mask) > 0 {
		return &usageError{Msg: "--mask is not supported with --db", Hint: hint}
	}
	db, err := (&common{db: path}).openRead(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := db.ShadowStats(ctx, opts.Shadow, opts.ShadowOf, opts.Since)
	if err != nil {
		return err
	}
	if jsonOut {
		if err := writeJSON(m.Stdout, st); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(m.Stdout, "shadow %s of %s: %d calls, %d compared, %d identical, %d different, %d errors, %d timeouts, %d unpaired; divergence rate %.4f\n",
			st.Shadow, st.ShadowOf, st.Calls, st.Compared, st.Identical, st.Different, st.Errors, st.Timeouts, st.Unpaired, st.Rate)
	}
	return replayExit(st.Rate > maxRate, nil, fmt.Sprintf("divergence rate %.4f is above %.4f", st.Rate, maxRate))
}

// flagSet reports whether the command line set flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
