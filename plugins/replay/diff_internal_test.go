package replay

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

func TestDiff(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		a, b string
		want []DiffOp
	}{
		"Equal":          {`{"a":1,"b":[1,2]}`, `{"b":[1,2],"a":1}`, nil},
		"NumbersByValue": {`{"a":1}`, `{"a":1.0}`, nil},
		"Replace":        {`{"a":1}`, `{"a":2}`, []DiffOp{{Op: OpReplace, Path: "/a", Old: []byte("1"), Value: []byte("2")}}},
		"AddRemove": {`{"a":1,"c":true}`, `{"a":1,"b":null}`, []DiffOp{
			{Op: OpRemove, Path: "/c", Old: []byte("true")},
			{Op: OpAdd, Path: "/b", Value: []byte("null")},
		}},
		"Nested": {`{"kw":{"x":{"y":"1"}}}`, `{"kw":{"x":{"y":"2"}}}`, []DiffOp{
			{Op: OpReplace, Path: "/kw/x/y", Old: []byte(`"1"`), Value: []byte(`"2"`)},
		}},
		"ArrayGrowsAndShrinks": {`[1,2,3]`, `[1,5]`, []DiffOp{
			{Op: OpReplace, Path: "/1", Old: []byte("2"), Value: []byte("5")},
			{Op: OpRemove, Path: "/2", Old: []byte("3")},
		}},
		"TypeChange": {`{"a":{"b":1}}`, `{"a":[1]}`, []DiffOp{
			{Op: OpReplace, Path: "/a", Old: []byte(`{"b":1}`), Value: []byte(`[1]`)},
		}},
		"EscapedKeys": {`{"a/b":1,"m~n":1}`, `{"a/b":2,"m~n":1}`, []DiffOp{
			{Op: OpReplace, Path: "/a~1b", Old: []byte("1"), Value: []byte("2")},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Diff([]byte(c.a), []byte(c.b))
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
	_, err := Diff([]byte(`{`), []byte(`{}`))
	require.Error(t, err)
}

func TestMask(t *testing.T) {
	t.Parallel()
	m, err := newMask([]string{"/kw/*/at", "/extra"})
	require.NoError(t, err)
	require.True(t, m.masks(DiffOp{Op: OpReplace, Path: "/kw/a/at"}))
	require.True(t, m.masks(DiffOp{Op: OpAdd, Path: "/kw/b/at/x"}))
	require.True(t, m.masks(DiffOp{Op: OpRemove, Path: "/extra/k"}))
	require.False(t, m.masks(DiffOp{Op: OpReplace, Path: "/kw/at"}))
	require.False(t, m.masks(DiffOp{Op: OpReplace, Path: "/extras"}))

	n := m.withNoise([]DiffOp{{Op: OpReplace, Path: "/kw/stamp"}, {Op: OpAdd, Path: "/kw/id"}})
	require.True(t, n.masks(DiffOp{Op: OpReplace, Path: "/kw/stamp"}))
	require.False(t, n.masks(DiffOp{Op: OpRemove, Path: "/kw/stamp"}), "a noisy value that disappears is a change")
	require.True(t, n.masks(DiffOp{Op: OpAdd, Path: "/kw/id"}))
	require.False(t, n.masks(DiffOp{Op: OpReplace, Path: "/kw/other"}))
	require.False(t, m.masks(DiffOp{Op: OpReplace, Path: "/kw/stamp"}), "noise does not leak into the base mask")

	_, err = newMask([]string{"kw"})
	require.Error(t, err)
}

// Effects are compared, not patch bodies: a JSON Patch and a merge patch
// that do the same are identical.
func TestVerdictComparesEffects(t *testing.T) {
	t.Parallel()
	tr, _ := events.Lookup(events.TaskExecutorArgsReplace)
	payload := []byte(`{"args":[],"kw":{"n":7}}`)
	patch := func(ct, body string) *events.Event {
		return &events.Event{Type: events.TypePatch, DataContentType: ct, Data: []byte(body), PluginVersion: "1"}
	}
	merge := answerOf(tr, payload, patch(events.ContentTypeMergePatch, `{"kw":{"x":1}}`), nil)
	jp := answerOf(tr, payload, patch(events.ContentTypeJSONPatch, `[{"op":"add","path":"/kw/x","value":1}]`), nil)
	none := answerOf(tr, payload, &events.Event{Type: events.TypePatch}, nil)
	rejected := answerOf(tr, payload, patch(events.ContentTypeMergePatch, `{"task_name":"x"}`), nil)
	failed := answerOf(tr, payload, &events.Event{Type: events.TypePatch, PluginError: "boom"}, nil)
	timeout := answerOf(tr, payload, nil, bus.ErrPluginTimeout)
	exited := answerOf(tr, payload, nil, &ExitError{Err: errors.New("exit status 3")})
	missing := answerOf(tr, payload, nil, nil)
	require.Equal(t, events.OutcomeApplied, merge.Outcome)
	require.Equal(t, events.OutcomeNoChange, none.Outcome)
	require.Equal(t, events.OutcomeRejected, rejected.Outcome)
	require.Equal(t, OutcomeMissing, missing.Outcome)
	require.Equal(t, events.OutcomeError, exited.Outcome)

	m, _ := newMask(nil)
	for name, c := range map[string]struct {
		rec, cand Answer
		want      Status
	}{
		"MergeVsJSONPatch":       {merge, jp, Identical},
		"NoChangeVsPatch":        {none, jp, Different},
		"BothRejected":           {rejected, rejected, Identical},
		"CandidateRejected":      {merge, rejected, Different},
		"RecordedRejected":       {rejected, merge, Different},
		"CandidateFails":         {merge, failed, CandidateError},
		"BothFail":               {failed, failed, Identical},
		"CandidateExited":        {merge, exited, CandidateError},
		"CandidateTimesOut":      {merge, timeout, CandidateTimeout},
		"NothingRecorded":        {missing, merge, Different},
		"RecordedFailedNowFixed": {failed, merge, Different},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, reason, _, _, err := judge(c.rec, c.cand, nil, m)
			require.NoError(t, err)
			require.Equal(t, c.want, got, reason)
		})
	}

	// A baseline that differs from the recording where the candidate does
	// masks exactly that.
	stamp := func(s string, n int) Answer {
		return answerOf(tr, payload, patch(events.ContentTypeMergePatch, `{"kw":{"at":"`+s+`","d":`+itoa(n)+`}}`), nil)
	}
	rec, base := stamp("t0", 14), stamp("t1", 14)
	st, _, diff, masked, err := judge(rec, stamp("t2", 14), &base, m)
	require.NoError(t, err)
	require.Equal(t, Identical, st)
	require.Empty(t, diff)
	require.Equal(t, []DiffOp{{Op: OpReplace, Path: "/kw/at", Old: []byte(`"t0"`), Value: []byte(`"t2"`)}}, masked)
	st, _, diff, _, err = judge(rec, stamp("t2", 15), &base, m)
	require.NoError(t, err)
	require.Equal(t, Different, st)
	require.Equal(t, []DiffOp{{Op: OpReplace, Path: "/kw/d", Old: []byte("14"), Value: []byte("15")}}, diff)
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestPipelineKeepsOrderAndStopsOnError(t *testing.T) {
	t.Parallel()
	var got []int
	err := pipeline(context.Background(), 3, func(_ context.Context, submit func(func(context.Context) (int, error)) error) error {
		for i := range 100 {
			if err := submit(func(context.Context) (int, error) { return i, nil }); err != nil {
				return err
			}
		}
		return nil
	}, func(i int) error {
		got = append(got, i)
		return nil
	})
	require.NoError(t, err)
	for i := range 100 {
		require.Equal(t, i, got[i])
	}
	boom := errors.New("boom")
	n := 0
	err = pipeline(context.Background(), 2, func(_ context.Context, submit func(func(context.Context) (int, error)) error) error {
		for i := 0; ; i++ {
			if err := submit(func(context.Context) (int, error) {
				if i == 5 {
					return 0, boom
				}
				return i, nil
			}); err != nil {
				return err
			}
		}
	}, func(int) error { n++; return nil })
	require.ErrorIs(t, err, boom)
	require.Equal(t, 5, n)
}

func TestParseCommand(t *testing.T) {
	t.Parallel()
	c, err := ParseCommand(`./plugin --nats-url {nats_url} --name 'my plugin' --x "a b"`)
	require.NoError(t, err)
	require.Equal(t, "./plugin", c.Path)
	require.Equal(t, []string{"--nats-url", "{nats_url}", "--name", "my plugin", "--x", "a b"}, c.Args)
	_, err = ParseCommand(`a 'b`)
	require.Error(t, err)
	_, err = ParseCommand(`  `)
	require.Error(t, err)
}
