package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/projections"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

const waitLimit = 2 * time.Minute

// bin is qtasks-replay built once for the tests that run it as a process.
var bin string

func TestMain(m *testing.M) { testkit.Main(m, testkit.Bin{Path: &bin, Pkg: "."}) }

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// run runs qtasks-replay in process and returns its exit code and output.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := NewMain(&out, &errb).Run(ctxFor(t), args)
	code = ExitCode(err, &errb)
	return code, out.String(), errb.String()
}

// scenarioBus is a JetStream holding the recorded scenario log.
func scenarioBus(t *testing.T) *bus.Bus {
	t.Helper()
	b := bustest.Open(t, nil)
	projectionstest.Publish(t, b, projectionstest.All(projectionstest.ReadFile(t, projectionstest.ScenarioLog())))
	return b
}

func openDB(t *testing.T, path string) *projections.DB {
	t.Helper()
	db, err := projections.Open(ctxFor(t), path, &projections.Options{ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func build(t *testing.T, b *bus.Bus, to uint64) *projections.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rebuilt.db")
	_, err := projections.Build(ctxFor(t), b, path, &projections.BuildConfig{To: to})
	require.NoError(t, err)
	return openDB(t, path)
}

func requireEqual(t *testing.T, a, b *projections.DB) {
	t.Helper()
	eq, diff, err := projections.Equal(ctxFor(t), a, b)
	require.NoError(t, err)
	require.True(t, eq, "projections differ at %s", diff)
}

func TestCommands(t *testing.T) {
	t.Parallel()
	b := scenarioBus(t)
	// Two messages no qtasks component wrote.
	var rogue []uint64
	for _, body := range []string{"not an event", "{}"} {
		ack, err := b.JetStream().Publish(ctxFor(t), events.FactSubject(events.StorageAdd, "default"), []byte(body))
		require.NoError(t, err)
		rogue = append(rogue, ack.Sequence)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "qtasks.db")
	url := b.ClientURL()

	t.Run("NoDatabase", func(t *testing.T) {
		code, _, stderr := run(t, "history", "x", "--db", db)
		require.Equal(t, ExitNoDB, code, stderr)
		require.Contains(t, stderr, "no projection database")
		code, _, _ = run(t, "tasks", "--db", db)
		require.Equal(t, ExitNoDB, code)
	})

	code, stdout, stderr := run(t, "rebuild", "--db", db, "--nats-url", url)
	require.Equal(t, ExitOK, code, stderr)
	require.Contains(t, stdout, "rebuilt "+db)
	require.Contains(t, stdout, "events/s")
	require.Contains(t, stderr, "rebuilding")
	require.Contains(t, stderr, "events/s", "the progress bar shows a rate")
	// The bar's rate is the summary's, over a time that holds the
	// summary's: it used to start its clock at the first batch and show a
	// thousand times the summary's rate.
	barRate, sumRate := rateOf(t, lastRender(stderr)), rateOf(t, stdout)
	require.LessOrEqual(t, barRate, sumRate+1, "bar %q, summary %q", lastRender(stderr), stdout)
	require.Contains(t, lastRender(stderr), "100%")
	// The logs are JSON lines, as qtasksd's (they used to be text).
	code, _, stderr = run(t, "project", "--once", "--db", filepath.Join(dir, "logged.db"), "--nats-url", url)
	require.Equal(t, ExitOK, code, stderr)
	lines := 0
	for l := range strings.Lines(stderr) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), "a log line that is not JSON: %q", l)
		require.Contains(t, rec, "level")
		lines++
	}
	require.NotZero(t, lines, "the projector logs its start and stop")

	byName := map[string][]projections.Task{}
	code, stdout, stderr = run(t, "tasks", "--db", db, "--json", "--limit", "100")
	require.Equal(t, ExitOK, code, stderr)
	var page projections.TaskPage
	require.NoError(t, json.Unmarshal([]byte(stdout), &page))
	require.Len(t, page.Tasks, 8)
	for _, tk := range page.Tasks {
		byName[tk.Name] = append(byName[tk.Name], tk)
	}
	add := byName["add"][0]

	t.Run("History", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := run(t, "history", add.ID, "--db", db)
		require.Equal(t, ExitOK, code, stderr)
		for _, s := range []string{
			"task " + add.ID, "status success", events.TaskExecutorArgsReplace, "scale@1.0  applied",
			"tagger@2.1  applied", "JSON patch", "+ /kw/tagged: true", "~ /kw/B: 1 → 100", "scale-next@1.1  shadow", events.StorageRemoveFinishedTask,
		} {
			require.Contains(t, stdout, s)
		}
		code, stdout, _ = run(t, "history", "--json", "--db", db, add.ID)
		require.Equal(t, ExitOK, code)
		var tl projections.Timeline
		require.NoError(t, json.Unmarshal([]byte(stdout), &tl))
		require.Equal(t, add.ID, tl.Task.ID)
		require.NotEmpty(t, tl.Entries)
		code, stdout, _ = run(t, "history", add.ID, "--db", db, "--payloads")
		require.Equal(t, ExitOK, code)
		require.Contains(t, stdout, "input  {")
	})
	t.Run("Blame", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := run(t, "blame", add.ID, "--db", db)
		require.Equal(t, ExitOK, code, stderr)
		require.Contains(t, stdout, "/kw/B")
		require.Contains(t, stdout, "tagger")
		code, stdout, _ = run(t, "blame", add.ID, "--db", db, "--json")
		require.Equal(t, ExitOK, code)
		var bl []projections.Blame
		require.NoError(t, json.Unmarshal([]byte(stdout), &bl))
		require.NotEmpty(t, bl)
		code, stdout, _ = run(t, "blame", byName["fail"][0].ID, "--db", db)
		require.Equal(t, ExitOK, code)
		require.Contains(t, stdout, "no plugin changed")
	})
	t.Run("Filters", func(t *testing.T) {
		t.Parallel()
		code, stdout, _ := run(t, "tasks", "--db", db, "--status", "error")
		require.Equal(t, ExitOK, code)
		require.Contains(t, stdout, byName["fail"][0].ID)
		require.Contains(t, stdout, byName["nosuchtask"][0].ID)
		require.NotContains(t, stdout, add.ID)
		code, stdout, stderr := run(t, "tasks", "--db", db, "--name", "add", "--limit", "2")
		require.Equal(t, ExitOK, code)
		require.Contains(t, stderr, "more: qtasks-replay tasks --cursor ")
		cursor := strings.Fields(strings.TrimPrefix(stderr, "more: qtasks-replay tasks --cursor "))[0]
		code, stdout2, _ := run(t, "tasks", "--db", db, "--name", "add", "--limit", "2", "--cursor", cursor)
		require.Equal(t, ExitOK, code)
		require.Equal(t, 3, strings.Count(stdout, "add ")+strings.Count(stdout2, "add "), stdout+stdout2)
		code, stdout, _ = run(t, "tasks", "--db", db, "--tag", "flaky", "--since", "2000-01-01", "--until", "2100-01-01")
		require.Equal(t, ExitOK, code)
		require.Contains(t, stdout, byName["flaky"][0].ID)
		code, stdout, _ = run(t, "tasks", "--db", db, "--since", "1m")
		require.Equal(t, ExitOK, code)
		require.NotContains(t, stdout, add.ID, "the recorded tasks are older than a minute")
		code, stdout, _ = run(t, "calls", "--db", db, "--plugin", "tagger", "--outcome", "applied", "--json")
		require.Equal(t, ExitOK, code)
		var calls projections.CallPage
		require.NoError(t, json.Unmarshal([]byte(stdout), &calls))
		require.Len(t, calls.Calls, 3)
	})
	t.Run("Rejected", func(t *testing.T) {
		t.Parallel()
		code, stdout, stderr := run(t, "rejected", "--db", db, "--json")
		require.Equal(t, ExitOK, code, stderr)
		var rej []projections.Rejected
		require.NoError(t, json.Unmarshal([]byte(stdout), &rej))
		var seqs []uint64
		for _, r := range rej {
			seqs = append(seqs, r.Seq)
			require.NotEmpty(t, r.Reason)
		}
		require.Subset(t, seqs, rogue)
		// A page of one says where the next starts; --after starts there.
		code, stdout, stderr = run(t, "rejected", "--db", db, "--limit", "1", "--after", fmt.Sprint(rogue[0]-1))
		require.Equal(t, ExitOK, code, stderr)
		require.Contains(t, stdout, "SEQ")
		require.Contains(t, stdout, fmt.Sprint(rogue[0]))
		require.Contains(t, stderr, fmt.Sprintf("more: qtasks-replay rejected --after %d", rogue[0]))
		code, stdout, _ = run(t, "rejected", "--db", db, "--after", fmt.Sprint(rogue[1]), "--json")
		require.Equal(t, ExitOK, code)
		require.JSONEq(t, "[]", stdout)
		code, _, stderr = run(t, "rejected", "--db", db, "--limit", "-1")
		require.Equal(t, ExitUsage, code, stderr)
	})
	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		// Flags refused before connecting; a server reached by mistake
		// would be another test's or another program's.
		const nowhere = "nats://127.0.0.1:1"
		for _, tc := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"history", "no-such-task", "--db", db}, ExitNotFound, "not found"},
			{[]string{"blame", "no-such-task", "--db", db}, ExitNotFound, "not found"},
			{[]string{"history", "--db", db}, ExitUsage, "history takes one task id"},
			{[]string{"history", "a", "b", "--db", db}, ExitUsage, "history takes one task id"},
			{[]string{"tasks", "--db", db, "--status", "bogus"}, ExitUsage, "--status"},
			{[]string{"tasks", "--db", db, "--cursor", "!!"}, ExitUsage, "cursor"},
			{[]string{"calls", "--db", db, "--cursor", "!!"}, ExitUsage, "cursor"},
			{[]string{"history", "no-such-task", "--db", db, "--json"}, ExitNotFound, "not found"},
			{[]string{"blame", "no-such-task", "--db", db, "--json"}, ExitNotFound, "not found"},
			{[]string{"rejected", "--db", db, "--nope"}, ExitUsage, "flag provided but not defined"},
			{[]string{"tasks", "--db", db, "--limit", "-1"}, ExitUsage, "--limit -1"},
			{[]string{"tasks", "--db", db, "--since", "-2h"}, ExitUsage, "must not be negative"},
			{[]string{"tasks", "--db", db, "--since", "1h", "--until", "2h"}, ExitUsage, "is not before --until"},
			{[]string{"tasks", "--db", db, "--since", "2026-01-02", "--until", "2026-01-01"}, ExitUsage, "is not before --until"},
			{[]string{"export", "x", "--since", "-1h", "--nats-url", nowhere}, ExitUsage, "must not be negative"},
			{[]string{"export", "x", "--last", "-5", "--nats-url", nowhere}, ExitUsage, "--last -5"},
			{[]string{"plugin", "x", "--candidate-cmd", "true", "--pace", "--speed", "-1", "--nats-url", nowhere}, ExitUsage, "--speed -1"},
			{[]string{"plugin", "x", "--candidate-cmd", "true", "--concurrency", "0", "--nats-url", nowhere}, ExitUsage, "--concurrency 0"},
			{[]string{"plugin", "x", "--candidate-cmd", "true", "--timeout", "-1s", "--nats-url", nowhere}, ExitUsage, "--timeout -1s"},
			{[]string{"shadow", "x", "--db", db, "--of", "y", "--max-rate", "-1"}, ExitUsage, "--max-rate -1"},
			{[]string{"project", "--db", filepath.Join(dir, "p.db"), "--batch", "-5", "--nats-url", nowhere}, ExitUsage, "--batch -5"},
			{[]string{"project", "--db", filepath.Join(dir, "p.db"), "--batch-wait", "-1s", "--nats-url", nowhere}, ExitUsage, "--batch-wait -1s"},
			{[]string{"calls", "--db", db, "--limit", "-1"}, ExitUsage, "--limit -1"},
			{[]string{"tasks", "--db", db, "--since", "yesterday"}, ExitUsage, "--since"},
			{[]string{"calls", "--db", db, "--outcome", "great"}, ExitUsage, "--outcome"},
			{[]string{"tasks", "--db", db, "--nope"}, ExitUsage, "flag provided but not defined"},
			{[]string{"frobnicate"}, ExitUsage, "unknown command"},
			{[]string{}, ExitUsage, "no command"},
			{[]string{"rebuild", "--db", filepath.Join(dir, "x.db"), "--nats-url", "nats://127.0.0.1:1", "--quiet"}, ExitFailure, "connecting"},
		} {
			code, _, stderr := run(t, tc.args...)
			require.Equal(t, tc.code, code, "%v: %s", tc.args, stderr)
			require.Contains(t, stderr, tc.msg, tc.args)
			require.LessOrEqual(t, strings.Count(stderr, "connecting to"), 1, "said once: %s", stderr)
		}
		code, stdout, _ := run(t, "help")
		require.Equal(t, ExitOK, code)
		require.Contains(t, stdout, "Exit codes")
		// One home for exit codes: the help says what the code does.
		require.Contains(t, strings.Join(strings.Fields(stdout), " "), fmt.Sprintf("%d a replay, re-drive or shadow check", ExitDivergent))
		code, _, stderr := run(t, "shadow", "-h")
		require.Equal(t, ExitOK, code)
		require.Contains(t, stderr, fmt.Sprintf("exit %d when the divergence rate is above", ExitDivergent))
	})
}

// A --db that names something other than a projection is exit 4 for every
// command and is left as it was: before, a read command wrote a
// projection's tables into another program's SQLite database (or an empty
// file), project did the same, and rebuild replaced any file with a link
// to a new generation, deleting it.
func TestNotAProjection(t *testing.T) {
	t.Parallel()
	b := scenarioBus(t)
	dir := t.TempDir()
	foreign := filepath.Join(dir, "customers.db")
	sdb, err := sql.Open("sqlite3", foreign)
	require.NoError(t, err)
	_, err = sdb.ExecContext(t.Context(), `CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('alice')`)
	require.NoError(t, err)
	require.NoError(t, sdb.Close())
	text := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(text, []byte("precious\n"), 0o600))
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o700))

	snapshot := func() map[string]string {
		out := map[string]string{}
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			if e.IsDir() {
				out[e.Name()] = "dir"
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
			out[e.Name()] = string(data)
		}
		return out
	}
	before := snapshot()
	url := b.ClientURL()
	for _, path := range []string{foreign, text, sub, filepath.Join(text, "x.db")} {
		for _, args := range [][]string{
			{"tasks", "--json"},
			{"history", "x"},
			{"rejected"},
			{"rebuild", "--quiet", "--nats-url", url},
			{"project", "--once", "--nats-url", url},
		} {
			code, stdout, stderr := run(t, append(args, "--db", path)...)
			require.Equal(t, ExitNoDB, code, "%v %s: %s", args, path, stderr)
			require.Contains(t, stderr, "not a qtasks projection")
			require.Empty(t, stdout)
		}
	}
	code, _, stderr := run(t, "tasks", "--db", empty)
	require.Equal(t, ExitNoDB, code, stderr)
	require.Equal(t, before, snapshot(), "nothing was written")

	// An empty file holds nothing to lose: a projection may be built there.
	code, _, stderr = run(t, "rebuild", "--quiet", "--db", empty, "--nats-url", url)
	require.Equal(t, ExitOK, code, stderr)
	code, _, stderr = run(t, "tasks", "--db", empty)
	require.Equal(t, ExitOK, code, stderr)
}

// rebuild and project only read the log: pointed at a NATS server that is
// not qtasksd's they fail and create nothing there. They used to provision
// qtasks' streams on it and project its empty log.
func TestForeignServer(t *testing.T) {
	t.Parallel()
	url, streams := testkit.ForeignJetStream(t)
	dir := t.TempDir()
	for _, args := range [][]string{{"rebuild", "--quiet"}, {"project", "--once"}} {
		code, _, stderr := run(t, append(args, "--nats-url", url, "--db", filepath.Join(dir, args[0]+".db"))...)
		require.Equal(t, ExitFailure, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "no qtasks streams", args)
	}
	require.Empty(t, streams(), "nothing was provisioned")
}

// Rebuilding twice swaps generations: the path stays readable, one
// generation file is left, and a live reader of the old one is undisturbed.
func TestRebuildSwap(t *testing.T) {
	t.Parallel()
	b := scenarioBus(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "qtasks.db")
	code, _, stderr := run(t, "project", "--once", "--db", db, "--nats-url", b.ClientURL(), "--log-level", "warn")
	require.Equal(t, ExitOK, code, stderr)
	old := openDB(t, db)
	for range 2 {
		code, _, stderr = run(t, "rebuild", "--quiet", "--db", db, "--nats-url", b.ClientURL())
		require.Equal(t, ExitOK, code, stderr)
	}
	fi, err := os.Lstat(db)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSymlink, "the path is a link to the current generation")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") {
			names = append(names, e.Name())
		}
	}
	require.Len(t, names, 2, "the link and one generation, no side files: %v", names)
	requireEqual(t, old, openDB(t, db))
	requireEqual(t, openDB(t, db), build(t, b, 0))
}

// Issue test 2: the projector process killed with SIGKILL in the middle of a
// batch leaves the database exactly as a rebuild to the sequence it stored
// (transactions are whole); restarted, it ends equal to a rebuild. The
// processes are the qtasks-replay binary (not built with -race: it must be
// busy applying when it is killed).
func TestProjectorKilled(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	recorded := projectionstest.ReadFile(t, projectionstest.ScenarioLog())
	const events = 12_000
	n := projectionstest.Publish(t, b, projectionstest.Copies(recorded, events/len(recorded)+1, events))
	require.Equal(t, uint64(events), n)
	dir := t.TempDir()
	path := filepath.Join(dir, "live.db")
	url := b.ClientURL()

	p := testkit.StartProc(t, "", bin, "project", "--db", path, "--nats-url", url, "--log-level", "warn", "--batch", "100")
	var stored uint64
	bustest.WaitFor(t, waitLimit, "the projector to be a fifth of the way", func() bool {
		stored = readLastSeq(path)
		return stored >= n/5
	})
	p.Signal(syscall.SIGKILL)
	p.Wait(waitLimit)
	k := readLastSeq(path)
	require.GreaterOrEqual(t, k, stored)
	require.Less(t, k, n, "killed before the end (make the log longer if this machine is that fast)")
	t.Logf("killed at sequence %d of %d", k, n)

	// Whole transactions only: what it stored equals a rebuild to there.
	killed, err := projections.Open(ctxFor(t), path, nil) // recovers the WAL
	require.NoError(t, err)
	upToK := filepath.Join(dir, "upto-k.db")
	runProc(t, "rebuild", "--quiet", "--db", upToK, "--nats-url", url, "--to", fmt.Sprint(k))
	requireEqual(t, killed, openDB(t, upToK))
	require.NoError(t, killed.Close())

	out := runProc(t, "project", "--once", "--db", path, "--nats-url", url, "--log-level", "warn")
	require.Contains(t, out, fmt.Sprintf("up to sequence %d", n))
	all := filepath.Join(dir, "all.db")
	runProc(t, "rebuild", "--quiet", "--db", all, "--nats-url", url)
	requireEqual(t, openDB(t, path), openDB(t, all))
}

// runProc runs qtasks-replay as a process to its end and returns its output;
// it must exit 0.
func runProc(t *testing.T, args ...string) string {
	t.Helper()
	ctx := ctxFor(t)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	require.NoError(t, err, "qtasks-replay %v: %s", args, out)
	return string(out)
}

// readLastSeq reads the stored sequence of a database another process
// writes; 0 until it has one.
func readLastSeq(path string) uint64 {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return 0
	}
	defer db.Close()
	var n uint64
	if err := db.QueryRowContext(context.Background(), `SELECT value FROM meta WHERE key = 'last_seq'`).Scan(&n); err != nil {
		return 0
	}
	return n
}

// SIGINT in the middle of a rebuild leaves the projection the path names as
// it was, removes the half-built generation, and says so.
func TestRebuildInterrupted(t *testing.T) {
	t.Parallel()
	b := scenarioBus(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "qtasks.db")
	runProc(t, "rebuild", "--quiet", "--db", path, "--nats-url", b.ClientURL())
	info, err := b.EventStream().Info(ctxFor(t))
	require.NoError(t, err)
	before := info.State.LastSeq
	recorded := projectionstest.ReadFile(t, projectionstest.ScenarioLog())
	const events = 40_000
	projectionstest.Publish(t, b, projectionstest.Copies(recorded, events/len(recorded)+1, events))

	p := testkit.StartProc(t, "", bin, "rebuild", "--quiet", "--db", path, "--nats-url", b.ClientURL(), "--batch", "100")
	var gen string
	bustest.WaitFor(t, waitLimit, "the rebuild to have applied some events", func() bool {
		matches, _ := filepath.Glob(path + ".gen-*")
		for _, m := range matches {
			if !strings.HasSuffix(m, "-wal") && !strings.HasSuffix(m, "-shm") && m != mustEval(t, path) {
				gen = m
			}
		}
		return gen != "" && readLastSeq(gen) > 0
	})
	p.Signal(os.Interrupt)
	code := p.Wait(waitLimit)
	out := p.Output()
	require.Equal(t, ExitFailure, code, out)
	require.Contains(t, out, "unchanged")
	left, err := filepath.Glob(gen + "*")
	require.NoError(t, err)
	require.Empty(t, left, "the half-built generation is gone")
	requireEqual(t, openDB(t, path), build(t, b, before))
}

func mustEval(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	require.NoError(t, err)
	return p
}

// rateOf reads the last "N events/s" of s.
func rateOf(t *testing.T, s string) float64 {
	t.Helper()
	i := strings.LastIndex(s, " events/s")
	require.Positive(t, i, "no rate in %q", s)
	f := strings.Fields(s[:i])
	r, err := strconv.ParseFloat(strings.TrimLeft(f[len(f)-1], "(,"), 64)
	require.NoError(t, err, s)
	return r
}
