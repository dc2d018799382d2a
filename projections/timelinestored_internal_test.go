package projections

import (
	"database/sql"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// appendStoredEntry writes what the decoding path writes (decode,
// factDiffs, call, (*Entry).appendJSON), byte for byte, whenever it
// writes anything: on random facts and diffs as the projector stores them
// and as it would not (keys in other cases or escaped, twice, unknown;
// values null, of the wrong type, escaped, needing escapes, not compact;
// diffs in another order or form, of another length; shadows; calls
// without their sequences). It must take the projector's form itself.
func TestAppendStoredEntry(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(13, 27))
	pick := func(alts ...string) string { return alts[rng.IntN(len(alts))] }
	// member writes "key":value, the key sometimes in another case or
	// escaped, the separators sometimes spaced.
	member := func(key, val string) string {
		switch rng.IntN(60) {
		case 0:
			key = strings.ToUpper(key[:1]) + key[1:]
		case 1:
			key = `\u00` + hex2(key[0]) + key[1:]
		}
		return `"` + key + `"` + pick(":", ":", " : ") + val
	}
	object := func(members []string) string {
		if rng.IntN(16) == 0 && len(members) > 0 { // a member twice
			members = append(members, members[rng.IntN(len(members))])
		}
		rng.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
		return "{" + strings.Join(members, pick(",", ",", " , ")) + "}"
	}
	opt := func(key string, alts ...string) []string {
		v := alts[rng.IntN(len(alts))]
		if v == "-" {
			return nil
		}
		return []string{member(key, v)}
	}
	call := func() string {
		var ms []string
		ms = append(ms, opt("plugin", `"scale"`, `"scale"`, `"scale-next"`, `"sl\u00f6w"`, `"slöw"`, `"a<b"`, `null`, `3`, "-")...)
		ms = append(ms, opt("version", "-", `"1"`, `""`, `null`)...)
		ms = append(ms, opt("invocation", `"i1"`, `"i2"`, `"i\u0031"`, `"x"`, "-")...)
		ms = append(ms, opt("outcome", `"applied"`, `"applied"`, `"shadow"`, `"timeout"`, `"odd"`)...)
		ms = append(ms, opt("policy", "-", "-", `"ignore"`, `null`)...)
		ms = append(ms, opt("reason", "-", "-", `"no patch <&>"`, `"naïve"`, `"quo\"te"`, `"ok"`)...)
		ms = append(ms, opt("content_type", "-", `"application/json-patch+json"`, `"application/json-patch+json"`)...)
		ms = append(ms, opt("patch", "-", `[{"op":"replace","path":"/result","value":30}]`,
			`[{"op":"replace","path":"/result","value":30}]`, `[ {"op":"add"} ]`, `null`, `{"a":"<b>"}`)...)
		ms = append(ms, opt("latency_us", "-", `300`, `300`, `-5`, `null`, `1.5`, `1e3`)...)
		ms = append(ms, opt("shadow", "-", "-", "-", `true`, `false`, `null`, `"yes"`)...)
		ms = append(ms, opt("patch_omitted", "-", "-", `true`, `0`)...)
		ms = append(ms, opt("invoke_seq", "-", `3`, `3`, `0`, `null`, `-1`)...)
		ms = append(ms, opt("patch_seq", "-", `4`, `4`, `0`, `null`)...)
		ms = append(ms, opt("extra", "-", "-", "-", `{"x":[1,2]}`)...)
		return object(ms)
	}
	change := func() string {
		return pick(`null`, `[]`, `[{"op":"replace","path":"/result","old":3,"new":30}]`,
			`[{"op":"replace","path":"/result","old":3,"new":30}]`, `[{"op":"add","path":"/a","new":"\u003cb\u003e"}]`,
			`[{"op":"remove","path":"/a","old":[1,2]},{"op":"add","path":"/b","new":{"c":null}}]`,
			`[{"op":"add","path":"/a","new":"<b>"}]`, `[{"path":"/a","op":"remove"}]`, `[{"op":"remove","path":"/a","x":1}]`,
			`[ {"op":"remove","path":"/a"} ]`, `[{"op":"remove","path":"/\u0061"}]`, `[{"op":"replace","path":"/a","new":1,"old":2}]`,
			`[{"op":"replace","path":"/a","old":1,"old":2}]`, `[{"op":"remove","path":"/a","old":{ "b" : 1 }}]`, `[{"op":"remove"}]`,
			`[{"op":null,"path":"/a"}]`, `[{"op":"remove","path":"/a","new":"naïve"}]`, `[{"path":"/a","old":1}]`,
			`[{"op":"add","new":1}]`, `[{"op":"add","path":"/a\u2028"}]`, `[{"op":"add","path":"/a","new":"\u2028"}]`)
	}
	at := time.Date(2026, 12, 7, 17, 4, 5, 123456789, time.UTC)
	fast, canonical := 0, 0
	const n = 20000
	for i := range n {
		nCalls := rng.IntN(4)
		var calls []string
		for range nCalls {
			calls = append(calls, call())
		}
		var ms []string
		ms = append(ms, opt("input", `{"result":3}`, `{"result":3}`, ` { "a" : "<b>" } `, `null`, "-")...)
		ms = append(ms, opt("output", `{"result":30}`, `{"result":30}`, `{"h":"\u003c"}`, `null`, "-")...)
		callsVal := "[" + strings.Join(calls, pick(",", " , ")) + "]"
		if nCalls == 0 {
			callsVal = pick(`[]`, `null`, `{}`, "-")
		}
		if callsVal != "-" {
			ms = append(ms, member("calls", callsVal))
		}
		ms = append(ms, opt("failed", "-", "-", "-", `"boom"`, `"boom \"x\""`, `null`, `3`, `""`)...)
		ms = append(ms, opt("extra", "-", "-", `[1,{"a":"b"}]`)...)
		data := object(ms)
		if rng.IntN(40) == 0 {
			data = pick(`null`, `[]`, ` {"input":1}`)
		}
		var stored string
		if rng.IntN(4) > 0 {
			nd := nCalls
			if rng.IntN(20) == 0 {
				nd++
			}
			var ds []string
			for range nd {
				ds = append(ds, change())
			}
			stored = "[" + strings.Join(ds, ",") + "]"
			if rng.IntN(20) == 0 {
				stored = " " + stored
			}
		}
		// The time column: as the projector writes it, or none, or as it
		// does not.
		ftime := sql.NullString{String: ts(at.Add(time.Duration(rng.IntN(3)) * time.Second)).(string), Valid: true}
		switch rng.IntN(8) {
		case 0:
			ftime = sql.NullString{}
		case 1:
			ftime.String = pick("2026-11-01T01:00:00.5+01:00", "2026-02-30T00:00:00.000000000Z", "garbage")
		}
		fr := factRow{
			at: ftime,
			e: Entry{
				Seq: rng.Uint64N(1 << 40), Index: rng.IntN(3),
				Trigger: pick("task_executor_run_task", "qtasks_add_task_before_broker", "we<ird"), Component: "task_executor",
				Attempt: rng.IntN(3), Run: 1, EventID: "e", Source: pick("qtasks/n", "naïve"), Replay: pick("", "", "r-1"),
			},
			data: []byte(data), stored: []byte(stored),
		}
		tr := &timelineReader{id: pick("task-1", "t<1>")}
		if rng.IntN(2) == 0 {
			tr.seqs = map[string]uint64{"invoke\x001": 16, "invoke\x00i1": 17, "patch\x00i2": 18}
		}
		var shadowOf func(string) string
		if rng.IntN(2) == 0 {
			shadowOf = func(s string) string { return map[string]string{"scale-next": "scale"}[s] }
		}

		if i < 300 { // cut short, as no projection holds them: no panic
			for cut := range len(data) {
				cf := fr
				cf.data = []byte(data[:cut])
				_, _ = tr.appendStoredEntry(nil, &cf, shadowOf)
			}
			for cut := range len(stored) {
				cf := fr
				cf.stored = []byte(stored[:cut])
				_, _ = tr.appendStoredEntry(nil, &cf, shadowOf)
			}
		}
		got, ok := tr.appendStoredEntry([]byte("prefix"), &fr, shadowOf)
		if !ok {
			require.Equal(t, "prefix", string(got), "fact %d: appended though it failed", i)
			continue
		}
		fast++
		want, err := slowEntry(tr, fr, shadowOf)
		require.NoError(t, err, "fact %d: %s, diffs %s", i, data, stored)
		require.Equal(t, "prefix"+string(want), string(got), "fact %d: %s, diffs %s", i, data, stored)
		var v any
		require.NoError(t, json.Unmarshal(got[len("prefix"):], &v), "fact %d", i)
		if !strings.Contains(data, " ") && !strings.Contains(data, `\`) && !strings.Contains(stored, " ") {
			canonical++
		}
	}
	t.Logf("%d of %d facts written from the stored JSON (%d without spaces or escapes)", fast, n, canonical)
	require.Greater(t, fast, n/10)

	// The projector's form: json.Marshal of the fact, encodeDiffs of its
	// diffs.
	fr := factRow{
		e: Entry{Seq: 9, Trigger: "task_executor_run_task", Attempt: 1, Run: 1, EventID: "e", Source: "s"},
		data: []byte(`{"input":{"result":3},"output":{"result":30},"calls":[{"plugin":"scale","version":"1","invocation":"x",` +
			`"outcome":"applied","content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":30}],` +
			`"latency_us":300},{"plugin":"slow","invocation":"y","outcome":"timeout","policy":"ignore","reason":"no patch","latency_us":5000}]}`),
		stored: encodeDiffs([][]Change{{{Op: "replace", Path: "/result", Old: json.RawMessage(`3`), New: json.RawMessage(`30`)}}, nil}),
	}
	tr := &timelineReader{id: "a"}
	got, ok := tr.appendStoredEntry(nil, &fr, func(string) string { return "" })
	require.True(t, ok)
	want, err := slowEntry(tr, fr, nil)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))

	// A shadow of a live plugin that the firing called: its patch is
	// diffed against what that plugin saw, not as stored.
	fr = factRow{
		e: Entry{Seq: 9, Trigger: "task_executor_run_task", Attempt: 1, Run: 1, EventID: "e", Source: "s"},
		data: []byte(`{"input":{"result":3},"output":{"result":60},"calls":[` +
			`{"plugin":"scale","outcome":"applied","content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":30}],"latency_us":1},` +
			`{"plugin":"double","outcome":"applied","content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":60}],"latency_us":2},` +
			`{"plugin":"scale-next","outcome":"shadow","shadow":true,"content_type":"application/json-patch+json","patch":[{"op":"replace","path":"/result","value":36}],"latency_us":3}]}`),
		stored: []byte(`[[{"op":"replace","path":"/result","old":3,"new":30}],[{"op":"replace","path":"/result","old":30,"new":60}],[{"op":"replace","path":"/result","old":60,"new":36}]]`),
	}
	shadowOf := func(s string) string { return map[string]string{"scale-next": "scale"}[s] }
	want, err = slowEntry(tr, fr, shadowOf)
	require.NoError(t, err)
	require.Contains(t, string(want), `"old":3,"new":36`)
	if got, ok := tr.appendStoredEntry(nil, &fr, shadowOf); ok {
		require.Equal(t, string(want), string(got))
	}
}

// slowEntry is the entry of fr as AppendTimelineJSON writes a fact it
// decodes.
func slowEntry(tr *timelineReader, fr factRow, shadowOf func(string) string) ([]byte, error) {
	if err := fr.decode(); err != nil {
		return nil, err
	}
	diffs, err := factDiffs(fr.e.Trigger, &fr.f, fr.stored, shadowOf)
	if err != nil {
		return nil, err
	}
	for j := range fr.f.Calls {
		fr.e.Calls = append(fr.e.Calls, tr.call(&fr, j, diffs))
	}
	return fr.e.appendJSON(nil), nil
}

// hex2 is the two hex digits of c.
func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&15]})
}
