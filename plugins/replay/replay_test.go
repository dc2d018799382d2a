package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/plugins/replay/internal/testplugin"
	"github.com/qtasks/qtasks-go/projections"
)

// v2Report is the process-path replay of v2 with a v1 baseline, shared by
// the tests that compare against it.
var (
	v2Once sync.Once
	v2Rep  *replay.Report
	errV2  error
)

func v2ProcessReport(t *testing.T, h *history) *replay.Report {
	t.Helper()
	v2Once.Do(func() {
		v2Rep, errV2 = replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{}, replay.Options{
			// The candidate connects with a plugin's least rights, as it
			// would in production with its own credentials.
			Candidate: candidate(t, "--version", "2", "--least-rights"),
			Baseline:  new(candidate(t, "--version", "1")),
			Logger:    testLogger(t),
		})
	})
	require.NoError(t, errV2)
	return v2Rep
}

// Test 1: v2 changes its behaviour for kw.n % 7 == 0 and answers with a
// JSON Patch where v1 answered with a merge patch; only the changed subset
// is reported, and the exit code fails.
func TestReplayReportsExactlyTheChangedSubset(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	before := snapshot(t, h.b)
	rep := v2ProcessReport(t, h)

	require.Equal(t, historyTasks, rep.Totals.Invocations)
	want := h.changedIDs()
	require.Equal(t, want, idsOf(rep.Results, replay.Different), "exactly the tasks with n %% 7 == 0")
	require.Equal(t, len(want), rep.Totals.Different)
	require.Equal(t, historyTasks-len(want), rep.Totals.Identical)
	require.Zero(t, rep.Totals.Errors+rep.Totals.Timeouts)
	require.Equal(t, "2", rep.Candidate)
	require.Equal(t, "1", rep.Baseline)
	require.Equal(t, []string{"1"}, rep.Recorded)
	require.Equal(t, historyTasks, rep.Noise["/kw/stamp"], "the stamp is noise in every invocation")
	for _, r := range rep.Results {
		n := h.n[r.TaskID]
		require.Len(t, r.Diff, 1, "task n=%d: %v", n, r.Diff)
		d := r.Diff[0]
		require.Equal(t, replay.OpReplace, d.Op)
		require.Equal(t, "/kw/double", d.Path)
		require.JSONEq(t, itoa(2*n), string(d.Old))
		require.JSONEq(t, itoa(2*n+1), string(d.Value))
		require.Equal(t, events.ContentTypeMergePatch, r.Recorded.ContentType)
		require.Equal(t, events.ContentTypeJSONPatch, r.Candidate.ContentType)
		require.Equal(t, h.name[r.TaskID], r.TaskName)
		require.Equal(t, testplugin.Trigger, r.Trigger)
		require.NotZero(t, r.Seq)
		require.NotZero(t, r.Recorded.Seq)
	}
	require.True(t, rep.Divergent())
	require.True(t, rep.Divergent())

	var sum bytes.Buffer
	require.NoError(t, rep.WriteSummary(&sum))
	require.Contains(t, sum.String(), "DIVERGENT")
	require.Contains(t, sum.String(), "replace /kw/double")
	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back replay.Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, rep.Totals, back.Totals)

	require.Equal(t, before, snapshot(t, h.b), "the live server is unchanged")
}

// Test 1, second half: v1 against itself is identical once the baseline
// masks the timestamps, and is not without it.
func TestReplaySameVersionIsIdenticalWithNoiseMasked(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	rep, err := replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{}, replay.Options{
		Candidate: candidate(t, "--version", "1"),
		Baseline:  new(candidate(t, "--version", "1")),
		Logger:    testLogger(t),
	})
	require.NoError(t, err)
	require.Equal(t, historyTasks, rep.Totals.Invocations)
	require.Equal(t, historyTasks, rep.Totals.Identical, rep.Summary())
	require.Equal(t, historyTasks, rep.Totals.Masked)
	require.False(t, rep.Divergent())
	require.False(t, rep.Divergent())
	require.Empty(t, rep.Results)
	require.Contains(t, rep.Summary(), "OK: no divergence")

	// Without a baseline the stamps differ everywhere: masking matters.
	unmasked, err := replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{Last: 25}, replay.Options{
		Candidate: inProcess(&testplugin.Plugin{Version: "1"}),
	})
	require.NoError(t, err)
	require.Equal(t, 25, unmasked.Totals.Different)
	for _, r := range unmasked.Results {
		require.Len(t, r.Diff, 1)
		require.Equal(t, "/kw/stamp", r.Diff[0].Path)
	}
	// An explicit mask does it too.
	masked, err := replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{Last: 25}, replay.Options{
		Candidate: inProcess(&testplugin.Plugin{Version: "1"}),
		Mask:      []string{"/kw/stamp"},
	})
	require.NoError(t, err)
	require.Equal(t, 25, masked.Totals.Identical)
}

// Test 2: a candidate that crashes mid-replay is reported as an error from
// the invocation that killed it on; the live server is unchanged.
func TestReplayCandidateCrash(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	proj := liveProjection(t, h.b)
	before := snapshot(t, h.b)
	projBefore := proj.dump(t)
	const crashAt = 150
	rep, err := replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{}, replay.Options{
		Candidate:     candidate(t, "--version", "1", "--crash-at", itoa(crashAt)),
		Mask:          []string{"/kw/stamp"},
		Concurrency:   1,
		KeepIdentical: true,
		Logger:        testLogger(t),
	})
	require.NoError(t, err)
	require.Equal(t, historyTasks, rep.Totals.Invocations)
	i, err := indexOfN(h, rep.Results, crashAt)
	require.NoError(t, err)
	for j, r := range rep.Results {
		if j < i {
			require.Equal(t, replay.Identical, r.Status, "n=%d before the crash", h.n[r.TaskID])
			continue
		}
		require.Equal(t, replay.CandidateError, r.Status, "n=%d after the crash", h.n[r.TaskID])
		require.Contains(t, r.Reason, "candidate exited: exit status 3")
	}
	require.Equal(t, historyTasks-i, rep.Totals.Errors)
	require.True(t, rep.Divergent())
	require.Equal(t, before, snapshot(t, h.b), "the live server is unchanged")
	require.Equal(t, projBefore, proj.dump(t), "the live projection is unchanged")
}

// projection is a live projector of a bus into a database file.
type projection struct {
	p    *projections.Projector
	b    *bus.Bus
	path string
}

func liveProjection(t *testing.T, b *bus.Bus) *projection {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qtasks.db")
	p, err := projections.NewProjector(b, projections.ProjectorConfig{Path: path, Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, p.Start(ctxFor(t)))
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return &projection{p: p, b: b, path: path}
}

// dump waits until the projector has applied the whole log, and returns its
// last sequence and the database's canonical dump.
func (p *projection) dump(t *testing.T) string {
	t.Helper()
	ctx := ctxFor(t)
	require.NoError(t, p.p.CatchUp(ctx))
	db, err := projections.Open(ctx, p.path, &projections.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	var out bytes.Buffer
	require.NoError(t, db.Dump(ctx, &out))
	return fmt.Sprintf("last=%d\n%s", p.p.LastSeq(), out.String())
}

// Test 2: a candidate that hangs on some invocations is reported as timing
// out on exactly those.
func TestReplayCandidateHang(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	before := snapshot(t, h.b)
	hang := []int{40, 41, 200}
	c := candidate(t, "--version", "1", "--hang-at", "40,41,200")
	c.Timeout = 5 * time.Second
	rep, err := replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{}, replay.Options{
		Candidate: c,
		Mask:      []string{"/kw/stamp"},
		Logger:    testLogger(t),
	})
	require.NoError(t, err)
	require.Equal(t, historyTasks, rep.Totals.Invocations)
	require.Equal(t, len(hang), rep.Totals.Timeouts, rep.Summary())
	require.Equal(t, historyTasks-len(hang), rep.Totals.Identical)
	var got []int
	for _, r := range rep.Results {
		require.Equal(t, replay.CandidateTimeout, r.Status)
		require.Equal(t, events.OutcomeTimeout, r.Candidate.Outcome)
		got = append(got, h.n[r.TaskID])
	}
	slices.Sort(got)
	require.Equal(t, hang, got)
	require.Equal(t, before, snapshot(t, h.b), "the live server is unchanged")
}

// Test 3: export, then replay the file with plugin values in-process (as
// inside a plugin author's go test): the same verdicts and diffs as the
// process path.
func TestExportThenReplayInProcessMatchesProcessPath(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	before := snapshot(t, h.b)
	var file bytes.Buffer
	n, err := replay.Export(ctxFor(t), h.ro, &file, testplugin.Name, replay.Filter{})
	require.NoError(t, err)
	require.Equal(t, historyTasks, n)
	require.Equal(t, 2*historyTasks, bytes.Count(file.Bytes(), []byte("\n")), "an invocation and a patch per line")

	fileRep, err := replay.RunFile(ctxFor(t), bytes.NewReader(file.Bytes()), replay.Filter{}, replay.Options{
		Candidate: inProcess(&testplugin.Plugin{Version: "2"}),
		Baseline:  new(inProcess(&testplugin.Plugin{Version: "1"})),
	})
	require.NoError(t, err)
	procRep := v2ProcessReport(t, h)

	require.Equal(t, procRep.Totals, fileRep.Totals)
	require.Equal(t, procRep.Noise, fileRep.Noise)
	require.Len(t, fileRep.Results, len(procRep.Results))
	for i := range procRep.Results {
		p, f := procRep.Results[i], fileRep.Results[i]
		require.Equal(t, p.Seq, f.Seq)
		require.Equal(t, p.Invocation, f.Invocation)
		require.Equal(t, p.Status, f.Status)
		require.Equal(t, p.Diff, f.Diff)
		requireSameAnswer(t, p.Recorded, f.Recorded)
		require.Equal(t, p.Candidate.ContentType, f.Candidate.ContentType)
	}
	require.Equal(t, before, snapshot(t, h.b))
}

func TestFilters(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	ctx := ctxFor(t)
	read := func(f replay.Filter) []replay.Record {
		t.Helper()
		var out []replay.Record
		require.NoError(t, replay.Read(ctx, h.ro, testplugin.Name, f, func(r replay.Record) error {
			out = append(out, r)
			return nil
		}))
		return out
	}
	all := read(replay.Filter{})
	require.Len(t, all, historyTasks)
	for i, r := range all {
		require.NotNil(t, r.Patch, "every invocation was answered")
		require.Equal(t, r.Invocation.ID, r.Patch.Invocation)
		require.Greater(t, r.PatchSeq, r.Seq)
		if i > 0 {
			require.Greater(t, r.Seq, all[i-1].Seq, "stream order")
		}
	}

	byName := read(replay.Filter{TaskNames: []string{"calc-b"}})
	require.Len(t, byName, historyTasks/3)
	for _, r := range byName {
		require.Equal(t, 0, h.n[r.Invocation.TaskID]%3)
	}

	ids := []string{all[3].Invocation.TaskID, all[77].Invocation.TaskID, all[200].Invocation.TaskID}
	byID := read(replay.Filter{TaskIDs: ids})
	require.Len(t, byID, 3)
	require.Equal(t, []uint64{all[3].Seq, all[77].Seq, all[200].Seq}, []uint64{byID[0].Seq, byID[1].Seq, byID[2].Seq})

	require.Len(t, read(replay.Filter{Triggers: []string{testplugin.Trigger}}), historyTasks)
	require.Empty(t, read(replay.Filter{Triggers: []string{events.TaskExecutorRunTask}}))

	last := read(replay.Filter{Last: 10})
	require.Len(t, last, 10)
	require.Equal(t, all[historyTasks-10].Seq, last[0].Seq)
	lastB := read(replay.Filter{Last: 4, TaskNames: []string{"calc-b"}})
	require.Equal(t, byName[len(byName)-4:], lastB)

	since := all[100].Invocation.Time
	until := all[199].Invocation.Time
	window := read(replay.Filter{Since: since, Until: until})
	for _, r := range window {
		require.False(t, r.Invocation.Time.Before(since))
		require.False(t, r.Invocation.Time.After(until))
	}
	// Invocations of concurrent tasks are stored in a slightly different
	// order than their times: the window is every invocation whose time is
	// in it, about the hundred stored from all[100] to all[199].
	got := map[uint64]bool{}
	for _, r := range window {
		got[r.Seq] = true
	}
	var inWindow int
	for _, r := range all {
		if !r.Invocation.Time.Before(since) && !r.Invocation.Time.After(until) {
			inWindow++
			require.True(t, got[r.Seq], "invocation %d (%s) is in the window", r.Seq, r.Invocation.Time)
		}
	}
	require.Len(t, window, inWindow)
	require.InDelta(t, 100, inWindow, 20)

	require.Empty(t, read(replay.Filter{Since: time.Now().Add(time.Hour)}))
}

// fakeClock advances only when slept on.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
	return nil
}

// At the original pace, a replay waits as long as the history took,
// divided by the speed.
func TestPace(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	var recs []replay.Record
	require.NoError(t, replay.Read(ctxFor(t), h.ro, testplugin.Name, replay.Filter{Last: 50}, func(r replay.Record) error {
		recs = append(recs, r)
		return nil
	}))
	span := recs[len(recs)-1].Invocation.Time.Sub(recs[0].Invocation.Time)
	require.Positive(t, span)
	for _, speed := range []float64{1, 4} {
		clock := &fakeClock{now: time.Unix(1000, 0)}
		rep, err := replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{Last: 50}, replay.Options{
			Candidate: inProcess(&testplugin.Plugin{Version: "1"}),
			Mask:      []string{"/kw/stamp"},
			Pace:      true,
			Speed:     speed,
			Clock:     clock,
		})
		require.NoError(t, err)
		require.Equal(t, 50, rep.Totals.Identical)
		want := time.Duration(float64(span) / speed)
		require.InDelta(t, float64(want), float64(clock.slept), float64(time.Microsecond), "speed %v", speed)
	}
}

// Progress and OnResult see every invocation in stream order.
func TestProgressAndOnResult(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	var progress []replay.Progress
	var seqs []uint64
	rep, err := replay.Run(ctxFor(t), h.ro, testplugin.Name, replay.Filter{}, replay.Options{
		Candidate:   inProcess(&testplugin.Plugin{Version: "2"}),
		Mask:        []string{"/kw/stamp"},
		Concurrency: 32,
		Progress:    func(p replay.Progress) { progress = append(progress, p) },
		OnResult:    func(r replay.Result) { seqs = append(seqs, r.Seq) },
	})
	require.NoError(t, err)
	require.Len(t, progress, historyTasks)
	require.Equal(t, historyTasks, progress[0].Total)
	require.Equal(t, rep.Totals, progress[len(progress)-1].Totals)
	require.Len(t, seqs, historyTasks)
	require.True(t, slices.IsSorted(seqs))
	require.Equal(t, h.changedIDs(), idsOf(rep.Results, replay.Different))
}

// A replay of an unknown plugin finds nothing and diverges nowhere; bad
// options are rejected before anything starts.
func TestReplayEdges(t *testing.T) {
	t.Parallel()
	h := sharedHistory(t)
	ctx := ctxFor(t)
	rep, err := replay.Run(ctx, h.ro, "nobody", replay.Filter{}, replay.Options{Candidate: inProcess(&testplugin.Plugin{Version: "1"})})
	require.NoError(t, err)
	require.Zero(t, rep.Totals.Invocations)

	_, err = replay.Run(ctx, h.ro, "bad.name", replay.Filter{}, replay.Options{Candidate: inProcess(&testplugin.Plugin{})})
	require.Error(t, err)
	_, err = replay.Run(ctx, h.ro, testplugin.Name, replay.Filter{}, replay.Options{})
	require.ErrorContains(t, err, "set Command or Spec")
	_, err = replay.Run(ctx, h.ro, testplugin.Name, replay.Filter{}, replay.Options{
		Candidate: inProcess(&testplugin.Plugin{}), Mask: []string{"kw"},
	})
	require.ErrorContains(t, err, "JSON Pointer")
	// A candidate program that never registers is reported, not waited on.
	_, err = replay.Run(ctx, h.ro, testplugin.Name, replay.Filter{}, replay.Options{
		Candidate: replay.Candidate{Command: &replay.Command{Path: "/bin/false"}},
	})
	require.ErrorContains(t, err, "candidate exited")
	// A candidate that registers under another name times out on start.
	c := candidate(t, "--version", "1")
	c.StartTimeout = 2 * time.Second
	_, err = replay.Run(ctx, h.ro, testplugin.Name+"-other", replay.Filter{}, replay.Options{Candidate: c})
	require.ErrorContains(t, err, "did not register")
}

var _ = bus.StreamEvents

// requireSameAnswer compares answers as reported (in JSON).
func requireSameAnswer(t *testing.T, want, got replay.Answer) {
	t.Helper()
	w, err := json.Marshal(want)
	require.NoError(t, err)
	g, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(w), string(g))
}
