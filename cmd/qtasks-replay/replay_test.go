package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/projections"
)

// The replay commands end to end: history recorded by the plugin in
// examples/scaleplugin; the same version replays identical (exit 0), a
// changed one diverges (exit 5, for CI to gate a release on); export writes
// every invocation and its patch.
func TestReplayCommands(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	dir := t.TempDir()
	scale := testkit.Build(t, "../../examples/scaleplugin")

	b := bustest.Open(t, nil)
	url := b.ClientURL()
	// Record: the same plugin (x10) in this process, on the live bus.
	r, err := plugins.Start(ctx, b, plugins.Spec{
		Name: "scale", Version: "1", Triggers: []string{events.TaskExecutorRunTask},
		Plugin: plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct{ Result float64 }
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: p.Result * 10})
		}),
	})
	require.NoError(t, err)
	app, err := executor.New(b, nil)
	require.NoError(t, err)
	executor.MustRegister(app, "n", func(_ context.Context, in struct{ N int }) (int, error) { return in.N, nil }, nil)
	require.NoError(t, app.Start(ctx))
	const tasks = 12
	for i := range tasks {
		sub, err := app.Submit(ctx, "n", map[string]int{"N": i}, nil)
		require.NoError(t, err)
		_, err = app.Wait(ctx, sub.ID)
		require.NoError(t, err)
	}
	require.NoError(t, app.Stop(ctx))
	require.NoError(t, r.Stop(ctx))

	before, err := b.EventStream().Info(ctx)
	require.NoError(t, err)

	// With its progress bar: the bar ends at 100% of what was replayed, on
	// a line of its own, and the candidate's logs are in --candidate-log,
	// not mixed into the output (the bar used to end at 0%, and the
	// candidate's JSON lines to go to stderr between its renderings).
	candLog := filepath.Join(dir, "candidate.log")
	code, stdout, stderr := run(t, "plugin", "scale", "--nats-url", url, "--candidate-log", candLog,
		"--candidate-cmd", scale+" --nats-url {nats_url} --factor 10")
	require.Equal(t, ExitOK, code, stderr)
	require.Contains(t, stdout, "identical")
	last := lastRender(stderr)
	require.Contains(t, last, "100%", stderr)
	require.Contains(t, last, "(12/12", stderr)
	require.True(t, strings.HasSuffix(stderr, "\n"), "the bar's line is ended: %q", stderr)
	logged, err := os.ReadFile(candLog)
	require.NoError(t, err)
	require.NotEmpty(t, logged, "the candidate logs its start")
	for l := range strings.Lines(string(logged)) {
		require.NotContains(t, stderr+stdout, strings.TrimSpace(l))
	}

	// A candidate not told the replay server's address is refused before
	// anything runs (it used to start, reach nothing or the wrong server,
	// and fail with a bare "exit status 1").
	const nowhere = "nats://127.0.0.1:1"
	for _, args := range [][]string{
		{"plugin", "scale", "--nats-url", nowhere, "--candidate-cmd", scale + " --factor 10"},
		{"plugin", "scale", "--nats-url", nowhere, "--candidate-cmd", scale + " --nats-url {nats_url}", "--baseline-cmd", scale},
		{"redrive", "x", "--nats-url", nowhere, "--candidate", "scale=" + scale},
	} {
		code, _, stderr = run(t, args...)
		require.Equal(t, ExitUsage, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "no {nats_url}", args)
		require.NotContains(t, stderr, "connecting", args)
	}
	// A candidate that fails says why: its last output is in the error.
	code, _, stderr = run(t, "plugin", "scale", "--nats-url", url, "--no-progress",
		"--candidate-cmd", scale+" --nats-url {nats_url} --factor notanumber")
	require.Equal(t, ExitFailure, code, stderr)
	require.Contains(t, stderr, "the candidate's last output")
	require.Contains(t, stderr, "notanumber")

	code, stdout, stderr = run(t, "plugin", "scale", "--nats-url", url, "--json",
		"--candidate-cmd", scale+" --nats-url {nats_url} --factor 20")
	require.Equal(t, ExitDivergent, code, stderr)
	require.Contains(t, stdout, `"different": 11`, "all but n=0, where 0x10 = 0x20")

	file := filepath.Join(dir, "scale.ndjson")
	code, _, stderr = run(t, "export", "scale", "--nats-url", url, "-o", file)
	require.Equal(t, ExitOK, code, stderr)
	fh, err := os.Open(file)
	require.NoError(t, err)
	defer fh.Close()
	lines := 0
	for sc := bufio.NewScanner(fh); sc.Scan(); {
		require.True(t, strings.HasPrefix(sc.Text(), "{"))
		lines++
	}
	require.Equal(t, 2*tasks, lines, "each invocation and its patch")

	// The export replays to the same verdicts.
	code, _, stderr = run(t, "plugin", "scale", "--file", file, "--no-progress",
		"--candidate-cmd", scale+" --nats-url {nats_url} --factor 20")
	require.Equal(t, ExitDivergent, code, stderr)

	code, _, _ = run(t, "plugin", "scale", "--nats-url", url)
	require.Equal(t, ExitUsage, code, "no candidate is a usage error")

	// Nothing of it touched the live log.
	after, err := b.EventStream().Info(ctx)
	require.NoError(t, err)
	require.Equal(t, before.State.LastSeq, after.State.LastSeq)
	require.Equal(t, before.State.Bytes, after.State.Bytes)
}

// redrive with filters takes its task ids from the projection: exactly the
// tasks named n, newest first, plus any explicit id.
func TestRedriveByFilter(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	b := bustest.Open(t, nil)
	app, err := executor.New(b, nil)
	require.NoError(t, err)
	executor.MustRegister(app, "n", func(_ context.Context, in struct{ N int }) (int, error) { return in.N, nil }, nil)
	executor.MustRegister(app, "m", func(_ context.Context, in struct{ N int }) (int, error) { return -in.N, nil }, nil)
	require.NoError(t, app.Start(ctx))
	var nIDs, mIDs []string
	for i := range 7 {
		name := "n"
		if i%2 == 1 {
			name = "m"
		}
		sub, err := app.Submit(ctx, name, map[string]int{"N": i}, nil)
		require.NoError(t, err)
		_, err = app.Wait(ctx, sub.ID)
		require.NoError(t, err)
		if name == "n" {
			nIDs = append(nIDs, sub.ID)
		} else {
			mIDs = append(mIDs, sub.ID)
		}
	}
	require.NoError(t, app.Stop(ctx))
	info, err := b.EventStream().Info(ctx)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "p.db")
	_, err = projections.Build(ctx, b, path, &projections.BuildConfig{To: info.State.LastSeq})
	require.NoError(t, err)

	redriven := func(args ...string) []string {
		t.Helper()
		code, stdout, stderr := run(t, append([]string{"redrive", "--nats-url", b.ClientURL(), "--db", path, "--json"}, args...)...)
		require.Equal(t, ExitOK, code, stderr)
		var rep replay.RedriveReport
		require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
		require.Equal(t, len(rep.Runs), rep.Totals.Runs)
		var ids []string
		for _, r := range rep.Runs {
			ids = append(ids, r.TaskID)
		}
		return ids
	}
	require.ElementsMatch(t, nIDs, redriven("--name", "n"))
	require.ElementsMatch(t, append([]string{mIDs[0]}, nIDs...), redriven("--name", "n", mIDs[0]))
	// Newest first, up to --limit.
	require.Equal(t, []string{nIDs[len(nIDs)-1]}, redriven("--name", "n", "--status", "success", "--limit", "1"))
	require.Empty(t, redriven("--name", "n", "--until", "2000-01-01T00:00:00Z"))

	code, _, _ := run(t, "redrive", "--nats-url", b.ClientURL())
	require.Equal(t, ExitUsage, code, "no ids and no filters")
	// An id with nothing recorded is not found, not a divergence (the
	// summary used to say "CHANGED: 1 of 1 runs" first).
	code, stdout, stderr := run(t, "redrive", "--nats-url", b.ClientURL(), "--db", path, "no-such-task")
	require.Equal(t, ExitNotFound, code, stderr)
	require.NotContains(t, stdout, "CHANGED")
	require.Contains(t, stdout, "NOT FOUND: 1 of 1 tasks have no recorded facts")
	for _, id := range []string{"no-such-task", "bad id!"} {
		code, stdout, stderr := run(t, "redrive", "--nats-url", b.ClientURL(), "--db", path, "--json", id)
		require.Equal(t, ExitNotFound, code, stderr)
		require.Contains(t, stderr, "no recorded facts")
		var rep replay.RedriveReport
		require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
		require.Equal(t, 1, rep.Totals.Missing)
	}
	code, _, stderr = run(t, "redrive", "--nats-url", b.ClientURL(), "--db", path, "--name", "n", "--since", "1h", "--until", "2h")
	require.Equal(t, ExitUsage, code, stderr)
	require.Contains(t, stderr, "is not before --until")
	// A bad filter is a usage error before the projection is looked at; a
	// missing projection is one only when the filters need it.
	missing := filepath.Join(t.TempDir(), "missing.db")
	code, _, stderr = run(t, "redrive", "--nats-url", b.ClientURL(), "--db", missing, "--name", "n", "--limit", "0")
	require.Equal(t, ExitUsage, code, stderr)
	code, _, stderr = run(t, "redrive", "--nats-url", b.ClientURL(), "--db", missing, "--name", "n")
	require.Equal(t, ExitNoDB, code, stderr)
	code, _, stderr = run(t, "redrive", "--nats-url", b.ClientURL(), "--db", missing, "--json", nIDs[0])
	require.Equal(t, ExitOK, code, stderr)

	// The projection that picked the tasks also dates them: a task whose
	// record has expired is still re-driven, from its recorded facts.
	rec, err := b.GetTask(ctx, nIDs[0])
	require.NoError(t, err)
	require.NoError(t, b.DeleteTask(ctx, nIDs[0], rec.Revision))
	code, stdout, stderr = run(t, "redrive", "--nats-url", b.ClientURL(), "--db", path, "--json", "--name", "n")
	require.Equal(t, ExitOK, code, stderr)
	var rep replay.RedriveReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.Len(t, rep.Runs, len(nIDs))
	for _, r := range rep.Runs {
		require.Empty(t, r.Error, r.TaskID)
		require.Equal(t, events.StatusSuccess, r.Recorded.Status, r.TaskID)
	}
}

// A shadow's divergence as the projection sees it: the same counts as
// replay.Shadow on the log, its patches recorded but never applied.
func TestShadowFromProjection(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	b := bustest.Open(t, nil)
	plus := func(differ func(n int) bool, fail func(n int) bool) plugins.Plugin {
		return plugins.Func(func(_ context.Context, c *plugins.Call) (*plugins.Patch, error) {
			var p struct{ Result float64 }
			if err := c.Decode(&p); err != nil {
				return nil, err
			}
			n := int(p.Result)
			if fail(n) {
				return nil, errors.New("shadow failed")
			}
			add := 1.0
			if differ(n) {
				add = 2
			}
			return plugins.JSONPatch(plugins.Op{Op: "replace", Path: "/result", Value: p.Result + add})
		})
	}
	never := func(int) bool { return false }
	differs := func(n int) bool { return n%3 == 0 && n != 9 }
	fails := func(n int) bool { return n == 9 }
	live, err := plugins.Start(ctx, b, plugins.Spec{
		Name: "live", Version: "1", Triggers: []string{events.TaskExecutorRunTask}, Plugin: plus(never, never),
	})
	require.NoError(t, err)
	shadow, err := plugins.Start(ctx, b, plugins.Spec{
		Name: "cand", Version: "2", Mode: plugins.Shadow, ShadowOf: "live",
		Triggers: []string{events.TaskExecutorRunTask}, Plugin: plus(differs, fails),
	})
	require.NoError(t, err)
	app, err := executor.New(b, nil)
	require.NoError(t, err)
	executor.MustRegister(app, "n", func(_ context.Context, in struct{ N int }) (int, error) { return in.N, nil }, nil)
	require.NoError(t, app.Start(ctx))
	const tasks = 20
	ids := map[string]int{}
	for i := range tasks {
		sub, err := app.Submit(ctx, "n", map[string]int{"N": i}, nil)
		require.NoError(t, err)
		_, err = app.Wait(ctx, sub.ID)
		require.NoError(t, err)
		ids[sub.ID] = i
	}
	require.NoError(t, app.Stop(ctx))
	require.NoError(t, shadow.Stop(ctx))
	require.NoError(t, live.Stop(ctx))

	info, err := b.EventStream().Info(ctx)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "p.db")
	_, err = projections.Build(ctx, b, path, &projections.BuildConfig{To: info.State.LastSeq})
	require.NoError(t, err)
	db := openDB(t, path)

	got, err := db.ShadowStats(ctx, "cand", "live", time.Time{})
	require.NoError(t, err)
	want, err := replay.Shadow(ctx, b, replay.ShadowOptions{Shadow: "cand", ShadowOf: "live"})
	require.NoError(t, err)
	// 0, 3, 6, 12, 15, 18 differ; 9 fails.
	require.Equal(t, tasks, got.Calls)
	require.Equal(t, tasks, got.Compared)
	require.Equal(t, 6, got.Different)
	require.Equal(t, 1, got.Errors)
	require.Equal(t, tasks-7, got.Identical)
	require.Equal(t, []int{want.Compared, want.Identical, want.Different, want.Errors, want.Timeouts, want.Unpaired},
		[]int{got.Compared, got.Identical, got.Different, got.Errors, got.Timeouts, got.Unpaired})
	require.InDelta(t, want.Rate, got.Rate, 1e-12)

	later, err := db.ShadowStats(ctx, "cand", "live", time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Zero(t, later.Calls, "--since after every fact")

	// The shadow's patches are in the projection, and never applied.
	page, err := db.PluginCalls(ctx, projections.CallFilter{Plugin: "cand", Limit: 100})
	require.NoError(t, err)
	require.Len(t, page.Calls, tasks)
	for _, c := range page.Calls {
		require.True(t, c.Shadow)
		if c.Outcome != string(events.OutcomeError) {
			require.NotEmpty(t, c.Patch)
		}
	}
	for id, n := range ids {
		task, err := db.Task(ctx, id)
		require.NoError(t, err)
		require.JSONEq(t, strconv.Itoa(n+1), string(task.Result), "the live plugin's result")
	}

	// A plain look reports and exits 0; --max-rate makes it a gate (it
	// used to default to 0, so that every look at a diverging shadow
	// exited 5).
	code, stdout, stderr := run(t, "shadow", "cand", "--db", path, "--of", "live")
	require.Equal(t, ExitOK, code, stderr)
	require.Contains(t, stdout, "divergence rate 0.3500")
	code, _, stderr = run(t, "shadow", "cand", "--db", path, "--of", "live", "--max-rate", "0.5")
	require.Equal(t, ExitOK, code, stderr)
	code, stdout, stderr = run(t, "shadow", "cand", "--db", path, "--of", "live", "--json", "--max-rate", "0.1")
	require.Equal(t, ExitDivergent, code, stderr)
	require.Contains(t, stderr, "divergence rate 0.3500 is above 0.1000")
	var cli projections.ShadowSummary
	require.NoError(t, json.Unmarshal([]byte(stdout), &cli), stdout)
	require.Equal(t, got, cli)
	code, _, _ = run(t, "shadow", "cand", "--db", path)
	require.Equal(t, ExitUsage, code, "--db needs --of")
}

// lastRender is the progress bar as it was last drawn: the text after the
// last carriage return of its output.
func lastRender(stderr string) string {
	s := strings.TrimRight(stderr, "\n")
	return s[strings.LastIndexByte(s, '\r')+1:]
}
