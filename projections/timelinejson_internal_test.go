package projections

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The timeline's encoders write what json.Marshal writes, byte for byte,
// for strings that need escaping and raw JSON that is not compact or holds
// characters json.Marshal escapes for HTML.
func TestTimelineEncoders(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 17, 4, 5, 123456789, time.UTC)
	strs := []string{"", "plain", `quo"te\back`, "<b>&amp;</b>", "naïve 日本", "ctl\x01\n\t", "bad\xffutf8", "\u2028sep"}
	raws := []json.RawMessage{
		nil, json.RawMessage(`{"a":1,"b":[true,null]}`), json.RawMessage(`"s"`), json.RawMessage(`3`), json.RawMessage(`[]`),
		json.RawMessage(` { "a" : [ 1 , 2 ] ,"b":"x y"} `), json.RawMessage(`{"h":"<b>&</b>","e":"\u003c\"\\"}`),
		json.RawMessage("\"\u2028\u2029\""), json.RawMessage(`null`), json.RawMessage("{\n\t\"k\": \"v\"\r\n}"),
	}
	times := []time.Time{{}, at, at.Truncate(time.Second), at.In(time.FixedZone("x", -5*3600))}
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	raw := func() json.RawMessage { return raws[rng.IntN(len(raws))] }
	tm := func() time.Time { return times[rng.IntN(len(times))] }
	for i := range 500 {
		e := Entry{
			Seq: rng.Uint64(), Index: rng.IntN(3), Time: tm(), Trigger: pick(strs), Component: pick(strs),
			Attempt: rng.IntN(3), Run: rng.IntN(3), EventID: pick(strs), Source: pick(strs), Input: raw(), Output: raw(),
			Failed: pick(strs), Replay: pick(strs),
		}
		for j := range rng.IntN(3) {
			c := Call{
				FactSeq: e.Seq, FactIdx: rng.IntN(2), Idx: j, TaskID: pick(strs), Trigger: pick(strs), Attempt: rng.IntN(3),
				Plugin: pick(strs), Version: pick(strs), Invocation: pick(strs), Outcome: pick(strs), Policy: pick(strs),
				Reason: pick(strs), ContentType: pick(strs), Patch: raw(), LatencyUS: rng.Int64N(1e6) - 10, Shadow: rng.IntN(2) == 0,
				InvokeSeq: rng.Uint64N(3), PatchSeq: rng.Uint64N(3),
			}
			switch rng.IntN(3) {
			case 1:
				c.Changes = []Change{}
			case 2:
				c.Changes = []Change{{Op: "replace", Path: pick(strs), Old: raw(), New: raw()}, {Op: pick(strs), Path: "/a"}}
			}
			e.Calls = append(e.Calls, c)
		}
		want, err := json.Marshal(e)
		require.NoError(t, err)
		require.Equal(t, string(want), string(e.appendJSON(nil)), "entry %d", i)

		a := Attempt{
			Attempt: rng.IntN(3), Status: pick(strs), Worker: pick(strs), Runs: rng.IntN(3), QueuedAt: tm(), StartedAt: tm(),
			ExecutedAt: tm(), FinishedAt: tm(), Result: raw(), Error: pick(strs), Reason: pick(strs), RetryParent: pick(strs),
			RetryChild: pick(strs), FinalSeq: rng.Uint64N(3),
		}
		want, err = json.Marshal(a)
		require.NoError(t, err)
		require.Equal(t, string(want), string(a.appendJSON(nil)), "attempt %d", i)

		ac := Action{
			Seq: rng.Uint64(), Action: pick(strs), TaskID: pick(strs), Attempt: rng.IntN(3), Queue: pick(strs), By: pick(strs),
			Reason: pick(strs), Time: tm(),
		}
		want, err = json.Marshal(ac)
		require.NoError(t, err)
		require.Equal(t, string(want), string(ac.appendJSON(nil)), "action %d", i)
	}
}
