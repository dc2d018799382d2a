package projections_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/projections"
)

// Task.AppendJSON writes what json.Marshal writes, byte for byte.
func TestTaskAppendJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 17, 4, 5, 123456789, time.UTC)
	strs := []string{"", "plain", `quo"te\back`, "<b>&amp;</b>", "naïve 日本", "ctl\x01\n\t", "bad\xffutf8", "\u2028sep"}
	raws := []json.RawMessage{
		nil, json.RawMessage(`{"a":1,"b":[true,null]}`), json.RawMessage(`"s"`), json.RawMessage(`3`), json.RawMessage(`[]`),
		json.RawMessage(` { "a" : [ 1 , 2 ] ,"b":"x y"} `), json.RawMessage(`{"h":"<b>&</b>"}`), json.RawMessage("\"\u2028\""),
	}
	times := []time.Time{{}, at, at.Truncate(time.Second), at.In(time.FixedZone("x", -5*3600))}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	for i := range 500 {
		task := projections.Task{
			ID: pick(strs), Name: pick(strs), Queue: pick(strs), Priority: rng.IntN(20) - 10, Status: pick(strs),
			Attempt: rng.IntN(3), RetriesLeft: rng.IntN(3),
			ArgsSubmitted: raws[rng.IntN(len(raws))], KwSubmitted: raws[rng.IntN(len(raws))],
			ArgsExecuted: raws[rng.IntN(len(raws))], KwExecuted: raws[rng.IntN(len(raws))],
			Result: raws[rng.IntN(len(raws))], Extra: raws[rng.IntN(len(raws))],
			Error: pick(strs), Reason: pick(strs), RetryParent: pick(strs), RetryChild: pick(strs), Worker: pick(strs),
			IdempotencyKey: pick(strs), Trace: pick(strs),
			CreatedAt: times[rng.IntN(len(times))], QueuedAt: times[rng.IntN(len(times))], StartedAt: times[rng.IntN(len(times))],
			ExecutedAt: times[rng.IntN(len(times))], FinishedAt: times[rng.IntN(len(times))], UpdatedAt: times[rng.IntN(len(times))],
			FirstSeq: rng.Uint64(), LastSeq: rng.Uint64N(1000),
		}
		switch i % 3 {
		case 1:
			task.Tags = []string{pick(strs), pick(strs)}
		case 2:
			task.Attempts = []projections.Attempt{{Attempt: 1, Status: "error", Runs: 1, QueuedAt: at, Result: raws[1]}}
		}
		want, err := json.Marshal(task)
		require.NoError(t, err)
		require.Equal(t, string(want), string(task.AppendJSON(nil)), "task %d", i)
	}
}
