package replay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	ce "github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/plugins/replay/internal/testplugin"
)

func invocation(id string, n int) events.Event {
	return events.Event{
		ID: id, Source: "qtasks/node-1", Type: events.TypeInvokePrefix + testplugin.Trigger, Subject: "T" + id,
		Time: time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC), DataContentType: events.ContentTypeJSON,
		Data:   []byte(`{"args":[],"kw":{"n":` + itoa(n) + `}}`),
		TaskID: "T" + id, TaskName: "calc", Trigger: testplugin.Trigger, Attempt: 1, Run: 1,
		Plugin: testplugin.Name, PluginVersion: "1", TimeoutMS: 5000,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

func patchFor(inv events.Event, ct, body, perr string) *events.Event {
	var data []byte
	if body != "" {
		data = []byte(body)
	}
	return &events.Event{
		ID: inv.ID + ":patch", Source: "qtasks/plugin/" + inv.Plugin, Type: events.TypePatch, Subject: inv.Subject,
		Time: inv.Time.Add(time.Millisecond), DataContentType: ct, Data: data,
		TaskID: inv.TaskID, TaskName: inv.TaskName, Trigger: inv.Trigger, Attempt: 1, Run: 1,
		Plugin: inv.Plugin, PluginVersion: "1", Invocation: inv.ID, PluginError: perr, TraceParent: inv.TraceParent,
	}
}

// The export format round-trips every attribute, and every line is a
// CloudEvent the SDK accepts.
func TestExportFormatRoundTrip(t *testing.T) {
	t.Parallel()
	a, b, c, d := invocation("a", 1), invocation("b", 2), invocation("c", 3), invocation("d", 4)
	recs := []replay.Record{
		{Seq: 10, Invocation: a, Patch: patchFor(a, events.ContentTypeMergePatch, `{"kw":{"x":1}}`, ""), PatchSeq: 12},
		{Seq: 11, Invocation: b}, // never answered
		{Seq: 13, Invocation: c, Patch: patchFor(c, "", "", "boom"), PatchSeq: 14},
		{Seq: 15, Invocation: d, Patch: patchFor(d, events.ContentTypeJSONPatch, `[{"op":"add","path":"/kw/y","value":"\n\"q\""}]`, ""), PatchSeq: 16},
	}
	var buf bytes.Buffer
	enc := replay.NewEncoder(&buf)
	for _, r := range recs {
		require.NoError(t, enc.Encode(r))
	}
	require.NoError(t, enc.Flush())

	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	lines := 0
	for sc.Scan() {
		lines++
		var e ce.Event
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), "line %d", lines)
		require.NoError(t, e.Validate(), "line %d", lines)
		require.Equal(t, "1.0", e.SpecVersion())
		require.Contains(t, e.Extensions(), replay.ExtStreamSeq)
	}
	require.Equal(t, 7, lines)
	first, _, _ := strings.Cut(buf.String(), "\n")
	require.Contains(t, first, `"data":{"args":[],"kw":{"n":1}}`, "JSON data is a JSON value")

	dec := replay.NewDecoder(bytes.NewReader(buf.Bytes()))
	for i, want := range recs {
		got, err := dec.Next()
		require.NoError(t, err, "record %d", i)
		require.Equal(t, want, got, "record %d", i)
	}
	_, err := dec.Next()
	require.ErrorIs(t, err, io.EOF)

	// A patch that does not follow its invocation is an error.
	var bad bytes.Buffer
	enc = replay.NewEncoder(&bad)
	require.NoError(t, enc.Encode(replay.Record{Invocation: b}))
	require.NoError(t, enc.Encode(replay.Record{Invocation: a, Patch: recs[0].Patch}))
	require.NoError(t, enc.Flush())
	lines2 := strings.Split(strings.TrimSpace(bad.String()), "\n")
	dec = replay.NewDecoder(strings.NewReader(lines2[0] + "\n" + lines2[2] + "\n"))
	_, err = dec.Next()
	require.ErrorContains(t, err, "does not follow invocation")
	_, err = replay.NewDecoder(strings.NewReader("{not json\n")).Next()
	require.Error(t, err)
	_, err = replay.NewDecoder(strings.NewReader(`{"specversion":"1.0","id":"x","source":"s","type":"io.qtasks.task"}` + "\n")).Next()
	require.ErrorContains(t, err, "neither an invocation nor a patch")
}

// A plugin author's test: replay an export file against a plugin value and
// fail on divergence.
func TestRunFileAsPluginAuthor(t *testing.T) {
	t.Parallel()
	var file bytes.Buffer
	enc := replay.NewEncoder(&file)
	for n := 1; n <= 30; n++ {
		inv := invocation("i"+itoa(n), n)
		body := `{"kw":{"double":` + itoa(2*n) + `}}`
		require.NoError(t, enc.Encode(replay.Record{Seq: uint64(n), Invocation: inv, Patch: patchFor(inv, events.ContentTypeMergePatch, body, "")}))
	}
	require.NoError(t, enc.Flush())
	fixed := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return fixed }

	rep, err := replay.RunFile(ctxFor(t), bytes.NewReader(file.Bytes()), replay.Filter{}, replay.Options{
		Candidate: inProcess(&testplugin.Plugin{Version: "2", Now: clock}),
		Mask:      []string{"/kw/stamp"},
	})
	require.NoError(t, err)
	require.Equal(t, 30, rep.Totals.Invocations)
	require.Equal(t, []string{"Ti14", "Ti21", "Ti28", "Ti7"}, idsOf(rep.Results, replay.Different))
	// The recorded patches never had a stamp: the candidate adds one.
	// Masked, it does not count.
	require.Equal(t, 30, rep.Noise["/kw/stamp"])

	// Task-name filters work on files; Last does not.
	rep, err = replay.RunFile(ctxFor(t), bytes.NewReader(file.Bytes()), replay.Filter{TaskNames: []string{"other"}}, replay.Options{
		Candidate: inProcess(&testplugin.Plugin{Version: "2"}),
	})
	require.NoError(t, err)
	require.Zero(t, rep.Totals.Invocations)
	_, err = replay.RunFile(ctxFor(t), bytes.NewReader(file.Bytes()), replay.Filter{Last: 1}, replay.Options{
		Candidate: inProcess(&testplugin.Plugin{Version: "2"}),
	})
	require.Error(t, err)

	// A plugin that panics or fails is an error; one that blocks past its
	// timeout is a timeout.
	rep, err = replay.RunFile(ctxFor(t), bytes.NewReader(file.Bytes()), replay.Filter{}, replay.Options{
		Candidate: replay.Candidate{Spec: &pluginsSpecPanics, Timeout: 500 * time.Millisecond},
	})
	require.NoError(t, err)
	require.Equal(t, 10, rep.Totals.Errors, rep.Summary())
	require.Equal(t, 10, rep.Totals.Timeouts)
	require.Equal(t, 10, rep.Totals.Different)
	for _, r := range rep.Results {
		if r.Status == replay.CandidateError {
			require.Contains(t, r.Reason, "panicked")
		}
	}
	require.NotErrorIs(t, err, io.EOF)
}

// pluginsSpecPanics panics on n%3 == 0, blocks until its context ends on
// n%3 == 1, and changes nothing otherwise.
var pluginsSpecPanics = plugins.Spec{Name: testplugin.Name, Version: "x", Plugin: plugins.Func(
	func(ctx context.Context, c *plugins.Call) (*plugins.Patch, error) {
		var in struct {
			Kw struct {
				N int `json:"n"`
			} `json:"kw"`
		}
		if err := c.Decode(&in); err != nil {
			return nil, err
		}
		switch in.Kw.N % 3 {
		case 0:
			panic("boom")
		case 1:
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, nil //nolint:nilnil // no patch: the Plugin contract's "no change"
	})}
