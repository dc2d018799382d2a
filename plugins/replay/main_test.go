package replay_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins/replay"
	"github.com/qtasks/qtasks-go/plugins/replay/internal/testplugin"
)

// waitLimit bounds every wait of these tests: generous, because a loaded
// two-core machine under -race can be slow, and never reached when all is
// well.
const waitLimit = 60 * time.Second

// historyTasks is how many tasks the shared history records.
const historyTasks = 300

// pluginBin is the candidate program, built by TestMain.
var pluginBin string

func TestMain(m *testing.M) {
	testkit.AfterTests(closeHistory)
	testkit.Main(m, testkit.Bin{Path: &pluginBin, Pkg: "./internal/testplugin/cmd/testplugin"})
}

// candidate is the test plugin as a process candidate.
func candidate(tb testing.TB, args ...string) replay.Candidate {
	tb.Helper()
	return replay.Candidate{
		Command: &replay.Command{
			Path:   pluginBin,
			Args:   append([]string{"--nats-url", "{nats_url}"}, args...),
			Stderr: logWriter(tb),
		},
		StopGrace: 10 * time.Second,
	}
}

// inProcess is the test plugin as an in-process candidate.
func inProcess(p *testplugin.Plugin) replay.Candidate {
	s := testplugin.Spec(p)
	return replay.Candidate{Spec: &s}
}

func logWriter(tb testing.TB) io.Writer {
	tb.Helper()
	if testing.Verbose() {
		return tb.Output()
	}
	return nil
}

func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: level}))
}

func ctxFor(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*waitLimit)
	tb.Cleanup(cancel)
	return ctx
}

// proc is a plugin process on a live bus.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	// url is what a --serve-dir process printed.
	url string
}

// startProc runs the test plugin against url and waits for its "ready".
func startProc(stderr io.Writer, url string, args ...string) (*proc, error) {
	// Not bound to a test's context: the shared history outlives the test
	// that records it; proc.stop ends the process.
	cmd := exec.Command(pluginBin, append([]string{"--nats-url", url}, args...)...) //nolint:gosec,noctx // the test's own build; see above
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "url "); ok {
				p.url = u
			}
			if sc.Text() == "ready" {
				once.Do(func() { close(ready) })
			}
		}
		// Wait only once the pipe is read to its end.
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-ready:
	case <-p.exited:
		return nil, errors.New("the plugin process exited before it was ready")
	case <-time.After(waitLimit):
		_ = cmd.Process.Kill()
		<-p.exited
		return nil, errors.New("the plugin process did not get ready")
	}
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(waitLimit):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// history is a live bus on which testplugin v1 answered historyTasks
// tasks, and what the tests need to know about them.
type history struct {
	// b is the live bus the history was recorded on; ro reads it as
	// qtasks-replay does (bus.Config.ReadOnly).
	b, ro *bus.Bus
	// n maps task id to kw.n.
	n map[string]int
	// name maps task id to task name.
	name map[string]string
	// calls counts task function calls.
	calls atomic.Int64
	err   error
}

var (
	histOnce sync.Once
	hist     *history
)

// sharedHistory records the shared history once: tasks calc and calc-b
// with kw.n from 1 to historyTasks, through testplugin v1 in its own
// process.
func sharedHistory(t *testing.T) *history {
	t.Helper()
	histOnce.Do(func() {
		hist = &history{n: map[string]int{}, name: map[string]string{}}
		hist.err = hist.record()
	})
	require.NoError(t, hist.err, "recording the shared history")
	return hist
}

func closeHistory() {
	if hist != nil && hist.ro != nil {
		hist.ro.Close()
	}
	if hist != nil && hist.b != nil {
		hist.b.Close()
	}
}

func taskName(n int) string {
	if n%3 == 0 {
		return "calc-b"
	}
	return "calc"
}

type calcIn struct {
	N      int    `json:"n"`
	Double int    `json:"double"`
	Stamp  string `json:"stamp"`
}

func (h *history) record() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*waitLimit)
	defer cancel()
	dir, err := os.MkdirTemp("", "qtasks-replay-live-")
	if err != nil {
		return err
	}
	b, err := bus.Open(ctx, bus.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	h.b = b
	var stderr io.Writer
	if testing.Verbose() {
		stderr = os.Stderr
	}
	p, err := startProc(stderr, b.ClientURL(), "--version", "1")
	if err != nil {
		return err
	}
	defer p.stop()
	if err := b.Registry().WaitFor(ctx, testplugin.Name, "1"); err != nil {
		return err
	}
	app, err := executor.New(b, &executor.Config{Concurrency: 16})
	if err != nil {
		return err
	}
	for _, name := range []string{"calc", "calc-b"} {
		if err := executor.Register(app, name, func(_ context.Context, in calcIn) (int, error) {
			h.calls.Add(1)
			return in.Double, nil
		}, nil); err != nil {
			return err
		}
	}
	if err := app.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = app.Stop(context.WithoutCancel(ctx)) }()
	ids := make([]string, 0, historyTasks)
	for n := 1; n <= historyTasks; n++ {
		task, err := app.Submit(ctx, taskName(n), map[string]int{"n": n}, nil)
		if err != nil {
			return err
		}
		h.n[task.ID], h.name[task.ID] = n, taskName(n)
		ids = append(ids, task.ID)
	}
	for _, id := range ids {
		task, err := app.Wait(ctx, id)
		if err != nil {
			return err
		}
		if task.Status != events.StatusSuccess {
			return fmt.Errorf("task %s (n=%d) ended %s: %s %s", id, h.n[id], task.Status, task.Error, task.Reason)
		}
		got, err := executor.Result[int](task)
		if err != nil {
			return err
		}
		if got != 2*h.n[id] {
			return fmt.Errorf("task %s: result %d, want %d", id, got, 2*h.n[id])
		}
	}
	if err := app.Stop(ctx); err != nil {
		return err
	}
	h.ro, err = bus.Open(ctx, bus.Config{URL: b.ClientURL(), ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
	return err
}

// changedIDs are the task ids version 2 answers differently for.
func (h *history) changedIDs() []string {
	var out []string
	for id, n := range h.n {
		if testplugin.Changed(n) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// idsOf returns the task ids of results with status s, sorted.
func idsOf(rs []replay.Result, s replay.Status) []string {
	var out []string
	for _, r := range rs {
		if r.Status == s {
			out = append(out, r.TaskID)
		}
	}
	slices.Sort(out)
	return out
}

// snapshot describes every stream of the server behind b, byte for byte:
// each stream's state and a hash of every stored message (sequence,
// subject, time, headers, data).
func snapshot(t *testing.T, b *bus.Bus) map[string]string {
	t.Helper()
	ctx := ctxFor(t)
	js := b.JetStream()
	out := map[string]string{}
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		st := info.State
		h := sha256.New()
		if st.Msgs > 0 {
			c, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
			require.NoError(t, err)
			it, err := c.Messages()
			require.NoError(t, err)
			for n := uint64(0); n < st.Msgs; n++ {
				m, err := it.Next()
				require.NoError(t, err)
				md, err := m.Metadata()
				require.NoError(t, err)
				_ = binary.Write(h, binary.BigEndian, md.Sequence.Stream)
				_ = binary.Write(h, binary.BigEndian, md.Timestamp.UnixNano())
				h.Write([]byte(m.Subject()))
				hdr := m.Headers()
				for _, k := range slices.Sorted(maps.Keys(hdr)) {
					h.Write([]byte(k))
					for _, v := range hdr[k] {
						h.Write([]byte(v))
					}
				}
				h.Write(m.Data())
			}
			it.Stop()
		}
		out[name] = fmt.Sprintf("msgs=%d bytes=%d first=%d last=%d deleted=%d sha256=%s",
			st.Msgs, st.Bytes, st.FirstSeq, st.LastSeq, st.NumDeleted, hex.EncodeToString(h.Sum(nil)))
	}
	require.NoError(t, names.Err())
	require.Contains(t, out, bus.StreamEvents)
	return out
}

var errNotFound = errors.New("not found")

func indexOfN(h *history, rs []replay.Result, n int) (int, error) {
	for i, r := range rs {
		if h.n[r.TaskID] == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("n=%d: %w", n, errNotFound)
}

func itoa(n int) string { return strconv.Itoa(n) }
