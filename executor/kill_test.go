package executor_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
)

// helperURLEnv tells a re-executed test binary to be the worker process of
// TestWorkerKilledMidRun, connected to the server at its value.
const helperURLEnv = "QTASKS_TEST_WORKER_URL"

// runSequence is what a successful run fires, in order.
var runSequence = []string{
	events.StorageAddProcess, events.StorageGet, events.BrokerGet, events.BrokerAddWorker, events.WorkerAdd,
	events.WorkerExecuteBefore, events.BrokerUpdate, events.StorageUpdate,
	events.WorkerRunTaskBefore, events.TaskExecutorMiddlewaresExecute, events.TaskExecutorArgsReplace, events.TaskExecutorBeforeExecute,
	events.TaskExecutorRunTask, events.TaskExecutorAfterExecute, events.TaskExecutorAfterExecuteResultReplace,
	events.TaskExecutorMiddlewaresExecute, events.TaskExecutorDecode, events.TaskExecutorTaskClose,
	events.WorkerRemoveFinishedTask, events.BrokerRemoveFinishedTask, events.StorageRemoveFinishedTask, events.WorkerExecuteAfter,
}

// TestHelperWorkerProcess is not a test: it is the worker process that
// TestWorkerKilledMidRun starts and kills.
func TestHelperWorkerProcess(t *testing.T) {
	url := os.Getenv(helperURLEnv)
	if url == "" {
		t.Skip("the worker process of TestWorkerKilledMidRun")
	}
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	app, err := executor.New(b, &executor.Config{Concurrency: 16, AckWait: 2 * time.Second, NodeID: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	executor.MustRegister(app, "add", func(_ context.Context, in addArgs) (int, error) {
		time.Sleep(30 * time.Millisecond) // so that runs are under way when it is killed
		return in.A + in.B, nil
	}, nil)
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {} // until killed
}

// A worker process killed with SIGKILL in the middle of its runs leaves
// every phase message whole (each decodes as a batch) and each run's facts
// a prefix of what a run fires, in firing order; another worker then takes
// every task to exactly one final status (issue #15).
func TestWorkerKilledMidRun(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	client := newApp(t, b, nil)
	const tasks = 60
	var ids []string
	for i := range tasks {
		ids = append(ids, submit(t, client, "add", addArgs{A: i, B: 1}, nil).ID)
	}

	cmd := testkit.Command(os.Args[0], "-test.run=^TestHelperWorkerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperURLEnv+"="+b.ClientURL())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	// Kill it once some runs have ended, while others are under way.
	bustest.WaitFor(t, waitLimit, "the worker process to finish some tasks", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		s, err := b.JetStream().Stream(ctx, bus.StreamEvents)
		require.NoError(t, err)
		final := events.FactSubject(events.StorageRemoveFinishedTask, executor.DefaultQueue)
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(final))
		require.NoError(t, err)
		return info.State.Subjects[final] >= 3
	})
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	killed = true
	if t.Failed() || testing.Verbose() {
		t.Logf("worker process output:\n%s", out.String())
	}

	// What it left: every phase message decodes (logFacts requires it),
	// and each run's facts are a prefix of a run's sequence.
	byRun := map[string][]string{}
	for _, f := range logFacts(t, b) {
		if f.Event.Run > 0 && f.Event.TaskID != "" {
			k := fmt.Sprintf("%s#%d run %d", f.Event.TaskID, f.Event.Attempt, f.Event.Run)
			byRun[k] = append(byRun[k], f.Event.Trigger)
		}
	}
	require.NotEmpty(t, byRun)
	cut := 0
	for run, got := range byRun {
		require.LessOrEqual(t, len(got), len(runSequence), run)
		require.Equal(t, runSequence[:len(got)], got, "run %s: not a prefix of a run's facts", run)
		if len(got) < len(runSequence) {
			cut++
		}
	}
	t.Logf("%d runs in the log when the worker was killed, %d of them cut short", len(byRun), cut)

	// Another worker finishes what the dead one held.
	w := newApp(t, b, &executor.Config{AckWait: 2 * time.Second})
	executor.MustRegister(w, "add", func(_ context.Context, in addArgs) (int, error) { return in.A + in.B, nil }, nil)
	start(t, w)
	for _, id := range ids {
		require.Equal(t, events.StatusSuccess, waitTask(t, client, id).Status)
		require.Len(t, finalModels(t, b, id, 1), 1, "one final fact for task %s", id)
	}
	// A resumed run opens with broker_running_older_tasks, then fires as
	// any run does.
	for _, f := range logFacts(t, b) {
		if f.Event.Trigger == events.BrokerRunningOlderTasks {
			require.Equal(t, -1, f.Index, "a lifecycle fact travels alone")
		}
	}
}
