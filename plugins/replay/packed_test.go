package replay_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/projections/projectionstest"
)

// Re-driving reads a task's facts however they are stored: the same runs,
// copied into a log where their facts travel packed in phase messages
// (issue #15, design (f)), re-drive to the same report but for the facts'
// positions.
func TestRedriveOnPackedLog(t *testing.T) {
	t.Parallel()
	const count = 3
	// Every fact alone, as a log written before packing, so that Pack has
	// something to pack.
	var aloneTriggers []string
	for _, tr := range events.Catalog() {
		aloneTriggers = append(aloneTriggers, tr.Name)
	}
	b, ids, _ := recordRunsOn(t, count, &bus.Config{AloneTriggers: aloneTriggers})
	packed, phases := projectionstest.Pack(t, projectionstest.Capture(t, b), 0)
	require.Positive(t, phases)
	pb := bustest.Open(t, nil)
	projectionstest.Publish(t, pb, projectionstest.All(packed))
	var inPhases int
	for _, s := range bustest.Events(t, pb, events.SubjectTrigger+".>") {
		if s.Packed() && s.Event.TaskID == ids[1] {
			inPhases++
		}
	}
	require.Greater(t, inPhases, 5, "the task's facts are mostly packed")

	all := []string{ids[1], ids[2], ids[3]}
	v2 := scale("2", 3)
	opts := replay.RedriveOptions{TaskIDs: all, Only: true, Candidates: []replay.Candidate{{Spec: &v2}}}
	redrive := func(b *bus.Bus) *replay.RedriveReport {
		rep, err := replay.Redrive(ctxFor(t), readOnly(t, b), opts)
		require.NoError(t, err)
		for i := range rep.Runs {
			for j := range rep.Runs[i].Triggers {
				rep.Runs[i].Triggers[j].Seq = 0
			}
		}
		return rep
	}
	alone, pk := redrive(b), redrive(pb)
	require.Equal(t, count, alone.Totals.Changed)
	require.Len(t, pk.Runs, count)
	for i := range alone.Runs {
		require.Equal(t, alone.Runs[i].Triggers, pk.Runs[i].Triggers, "task %d", i+1)
		require.Equal(t, alone.Runs[i].Recorded, pk.Runs[i].Recorded)
		require.Equal(t, alone.Runs[i].Redriven, pk.Runs[i].Redriven)
	}
	require.Equal(t, alone.Totals, pk.Totals)
}
