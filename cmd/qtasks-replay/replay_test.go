package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
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
	scale := filepath.Join(dir, "scaleplugin")
	out, err := exec.Command("go", "build", "-o", scale, "../../examples/scaleplugin").CombinedOutput()
	require.NoError(t, err, string(out))

	b := bustest.Open(t, nil)
	url := b.ClientURL()
	// Record: the same plugin (x10) in this process, on the live bus.
	r, err := plugins.Start(ctx, b, plugins.Spec{
		Name: "scale", Version: "1", Triggers: []string{events.TaskExecutorRunTask},
		Plugin: plugins.Func(func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
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

	code, stdout, stderr := run(t, "plugin", "scale", "--nats-url", url, "--no-progress",
		"--candidate-cmd", scale+" --nats-url {nats_url} --factor 10")
	require.Equal(t, ExitOK, code, stderr)
	require.Contains(t, stdout, "identical")

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
}
