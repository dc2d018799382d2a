package plugins_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins"
)

// PROTOCOL.md §13 is a worked example captured from a real run. This test
// runs it again and holds the page to what the log holds: the subject of
// every message from the submission to the end of the run (which facts
// travel alone and which are packed, and in what order), the header names
// of the invocation, the patch, the final fact and the dead letter, and the
// triggers in each phase message shown. Ids and times differ from run to
// run; the shape may not.
func TestWorkedExampleAsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/PROTOCOL.md")
	require.NoError(t, err)
	sec := string(doc)
	sec = sec[strings.Index(sec, "## 13. Worked example"):strings.Index(sec, "## 14. Writing a plugin")]
	// The page's unlabelled code blocks, in order (```json ones left out).
	var blocks []string
	var cur *strings.Builder
	for l := range strings.SplitSeq(sec, "\n") {
		switch {
		case cur == nil && l == "```":
			cur = &strings.Builder{}
		case cur == nil && strings.HasPrefix(l, "```"):
			cur = &strings.Builder{}
			cur.WriteString("\x00") // labelled: not kept
		case cur != nil && l == "```":
			if b := cur.String(); !strings.HasPrefix(b, "\x00") {
				blocks = append(blocks, b)
			}
			cur = nil
		case cur != nil:
			cur.WriteString(l + "\n")
		}
	}
	require.NotEmpty(t, blocks)
	listing := map[uint64]string{}
	for _, m := range regexp.MustCompile(`(?m)^ ?(\d+) (qtasks\.\S+)`).FindAllStringSubmatch(blocks[0], -1) {
		var seq uint64
		_, _ = fmt.Sscan(m[1], &seq)
		listing[seq] = m[2]
	}
	require.NotEmpty(t, listing, "§13's first block lists the messages")
	// The header names of a block shown in full, by its subject line.
	shown := func(subject string) []string {
		for _, b := range blocks {
			if strings.HasPrefix(b, "subject: "+subject+"\n") {
				var names []string
				for _, l := range strings.Split(b, "\n")[2:] {
					if l == "" {
						break
					}
					name, _, _ := strings.Cut(l, ":")
					names = append(names, name)
				}
				return names
			}
		}
		t.Fatalf("§13 shows no message on %s", subject)
		return nil
	}

	b := bustest.Open(t, nil)
	app, err := executor.New(b, &executor.Config{NodeID: "node-1", AckWait: 5 * time.Second, GracePeriod: 5 * time.Second})
	require.NoError(t, err)
	type greetArgs struct {
		Name string `json:"name"`
		X    int    `json:"x,omitempty"`
	}
	executor.MustRegister(app, "greet", func(_ context.Context, a greetArgs) (string, error) {
		return fmt.Sprintf("hello %s, x=%d", a.Name, a.X), nil
	}, nil)
	pb := bustest.Connect(t, b, &bus.Config{Plugin: "addx"})
	testkit.StartPlugin(t, pb, plugins.Spec{
		Name: "addx", Version: "1.0.0", Triggers: []string{events.TaskExecutorArgsReplace}, Timeout: 2 * time.Second,
		Plugin: plugins.Func(func(context.Context, *plugins.Call) (*plugins.Patch, error) {
			return plugins.MergePatch(map[string]any{"kw": map[string]any{"x": 1}})
		}),
	})
	require.NoError(t, app.Start(testkit.Ctx(t)))
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			ctx, cancel := context.WithTimeout(context.Background(), testkit.WaitLimit)
			defer cancel()
			require.NoError(t, app.Stop(ctx))
		}
	}
	t.Cleanup(stop)
	task := testkit.Submit(t, app, "greet", greetArgs{Name: "ada"}, nil)
	final := testkit.Wait(t, app, task.ID)
	require.JSONEq(t, `"hello ada, x=1"`, string(final.Result))

	subjects := func() map[uint64]string {
		out := map[uint64]string{}
		for _, s := range bustest.Events(t, b) {
			if s.Phase != "" {
				out[s.Seq] = s.Phase
			} else {
				out[s.Seq] = s.Subject
			}
		}
		return out
	}
	bustest.WaitFor(t, testkit.WaitLimit, "the end phase message", func() bool {
		return slices.Contains(mapValues(subjects()), events.PhaseSubject(events.PhaseEnd, "default"))
	})
	// The dead-letter example: a message without headers on addx's
	// invocation subject, after the run.
	_, err = b.JetStream().Publish(testkit.Ctx(t), "qtasks.invoke.addx.task_executor_args_replace.bogus", []byte("not an event"))
	require.NoError(t, err)
	bustest.WaitFor(t, testkit.WaitLimit, "the dead letter", func() bool {
		return slices.Contains(mapValues(subjects()), events.DeadSubject("addx"))
	})
	stop()

	got := subjects()
	for seq := uint64(1); seq <= 7; seq++ {
		require.Regexp(t, `^qtasks\.trigger\.[a-z_]+\.node-1$`, got[seq], "§13: sequences 1-7 are the worker's start-up facts")
	}
	var seqs []uint64
	for seq := range listing {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	// The submitting client and the worker write concurrently (§7.3: the
	// storage_add fact may follow the first intake facts): each one's
	// messages are in §13's order, and together they are §13's messages.
	client := []string{
		events.PhaseSubject(events.PhaseSubmit, "default"), events.FactSubject(events.StorageAdd, "default"),
		events.PhaseSubject(events.PhaseQueued, "default"),
	}
	var wantAll, gotAll []string
	var wantClient, gotClient, wantRest, gotRest []string
	for _, seq := range seqs {
		wantAll, gotAll = append(wantAll, listing[seq]), append(gotAll, got[seq])
		if slices.Contains(client, listing[seq]) {
			wantClient = append(wantClient, listing[seq])
		} else {
			wantRest = append(wantRest, listing[seq])
		}
		if slices.Contains(client, got[seq]) {
			gotClient = append(gotClient, got[seq])
		} else {
			gotRest = append(gotRest, got[seq])
		}
	}
	require.ElementsMatch(t, wantAll, gotAll, "§13's list of messages, sequences %d to %d", seqs[0], seqs[len(seqs)-1])
	require.Equal(t, wantClient, gotClient, "§13's order of the submission's messages")
	require.Equal(t, wantRest, gotRest, "§13's order of the run's messages")

	// The messages shown in full carry the headers §13 shows, no more.
	headerNames := func(subject string) []string {
		for seq, s := range got {
			if s != subject {
				continue
			}
			m, err := b.EventStream().GetMsg(testkit.Ctx(t), seq)
			require.NoError(t, err)
			var names []string
			for k := range m.Header {
				names = append(names, k)
			}
			slices.Sort(names)
			return names
		}
		t.Fatalf("no message on %s", subject)
		return nil
	}
	for _, subject := range []string{
		events.InvokeSubject("addx", events.TaskExecutorArgsReplace),
		events.PatchSubject("addx", events.TaskExecutorArgsReplace),
		events.FactSubject(events.StorageRemoveFinishedTask, "default"),
		events.FactSubject(events.StarterStart, "node-1"),
		events.DeadSubject("addx"),
	} {
		want := shown(subject)
		slices.Sort(want)
		require.Equal(t, want, headerNames(subject), "§13's headers of the message on %s", subject)
	}

	// The phase messages hold the triggers §13 says they hold.
	inPhase := map[string][]string{}
	for _, s := range bustest.Events(t, b) {
		if s.Phase != "" && s.Err == nil && s.Event.TaskID == task.ID {
			inPhase[s.Phase] = append(inPhase[s.Phase], s.Event.Trigger)
		}
	}
	for phase, want := range map[events.Phase][]string{
		events.PhaseSubmit:  {events.QTasksAddTaskBeforeBroker, events.BrokerAddBefore},
		events.PhaseQueued:  {events.BrokerAddAfter, events.QTasksAddTaskAfterBroker},
		events.PhaseIntake:  {events.StorageAddProcess, events.StorageGet, events.BrokerGet, events.BrokerAddWorker, events.WorkerAdd, events.WorkerExecuteBefore, events.BrokerUpdate},
		events.PhasePrepare: {events.WorkerRunTaskBefore, events.TaskExecutorMiddlewaresExecute, events.TaskExecutorArgsReplace, events.TaskExecutorBeforeExecute},
		events.PhaseFinish: {
			events.TaskExecutorRunTask, events.TaskExecutorAfterExecute, events.TaskExecutorAfterExecuteResultReplace,
			events.TaskExecutorMiddlewaresExecute, events.TaskExecutorDecode, events.TaskExecutorTaskClose,
			events.WorkerRemoveFinishedTask, events.BrokerRemoveFinishedTask,
		},
		events.PhaseEnd: {events.WorkerExecuteAfter},
	} {
		require.Equal(t, want, inPhase[events.PhaseSubject(phase, "default")], "the %s phase message (§4.4's table, §13)", phase)
	}
}

func mapValues(m map[uint64]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
