package auditsink_test

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins"
	"github.com/qtasks/qtasks-go/plugins/auditsink"
)

func TestNewRefusesMisconfiguration(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	tests := []struct {
		name string
		cfg  auditsink.Config
		want string
	}{
		{"NoDir", auditsink.Config{}, "no directory"},
		{"DirIsAFile", auditsink.Config{Dir: file}, "directory " + file},
		{"DirUnderAFile", auditsink.Config{Dir: filepath.Join(file, "audit")}, "not a directory"},
		{"MaxSizeTooSmall", auditsink.Config{Dir: tmp, MaxSize: 1}, "max size 1: must be at least 4096 bytes"},
		{"MaxSizeNegative", auditsink.Config{Dir: tmp, MaxSize: -5}, "max size -5"},
		{"MaxAgeNegative", auditsink.Config{Dir: tmp, MaxAge: -time.Second}, "max age -1s"},
		{"PatternWithoutCounter", auditsink.Config{Dir: tmp, Pattern: "audit-{time}.jsonl"}, "must contain {n} once"},
		{"PatternTwoCounters", auditsink.Config{Dir: tmp, Pattern: "{n}-{n}.jsonl"}, "must contain {n} once"},
		{"PatternWithPath", auditsink.Config{Dir: tmp, Pattern: "sub/{n}.jsonl"}, "without path separators"},
		{"PatternUnknownPlaceholder", auditsink.Config{Dir: tmp, Pattern: "{date}-{n}.jsonl"}, "unknown placeholder {date}"},
		{"UnknownTrigger", auditsink.Config{Dir: tmp, Triggers: []string{"storage_ad"}}, `unknown trigger "storage_ad"`},
		{"NeverFiredTrigger", auditsink.Config{Dir: tmp, Triggers: []string{events.QTasksGet}}, "trigger qtasks_get is never fired"},
		{"BadName", auditsink.Config{Dir: tmp, Name: "audit sink"}, `name "audit sink"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := auditsink.New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
	if os.Geteuid() != 0 { // root writes anywhere
		t.Run("DirNotWritable", func(t *testing.T) {
			t.Parallel()
			ro := filepath.Join(t.TempDir(), "ro")
			require.NoError(t, os.Mkdir(ro, 0o500))
			_, err := auditsink.New(auditsink.Config{Dir: ro})
			require.ErrorContains(t, err, "is not writable")
		})
	}
	_, err := auditsink.New(auditsink.Config{Dir: filepath.Join(tmp, "new", "dir")})
	require.NoError(t, err, "a missing directory is created")
}

// fact is a synthetic fact event of task id with stream sequence seq.
func fact(id string, seq uint64, trigger string) *plugins.Call {
	ev := events.Event{
		ID: id + ":1:1:" + trigger + ":0", Source: "qtasks/node-1", Type: events.TypeTriggerPrefix + trigger,
		Subject: id, DataContentType: events.ContentTypeJSON,
		Time:   time.Date(2025, 3, 4, 5, 6, 7, int(seq), time.UTC), //nolint:gosec // G115: the tests' seqs are small
		Data:   []byte(`{"input":{"task_id":"` + id + `","pad":"` + strings.Repeat("x", 300) + `"}}`),
		TaskID: id, TaskName: "calc", Trigger: trigger, Attempt: 1, Run: 1,
	}
	return &plugins.Call{Trigger: trigger, TaskID: id, TaskName: "calc", Attempt: 1, Run: 1, Event: ev, Seq: seq, Payload: ev.Data}
}

func write(t *testing.T, s *auditsink.Sink, calls ...*plugins.Call) {
	t.Helper()
	for _, c := range calls {
		p, err := s.Trigger(context.Background(), c)
		require.NoError(t, err)
		require.Nil(t, p)
	}
}

func ids(lines []line) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.ID
	}
	return out
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Files are rotated before they pass MaxSize, and when they are older than
// MaxAge; names follow the pattern; each file holds whole lines.
func TestRotation(t *testing.T) {
	t.Parallel()
	t.Run("BySize", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s, err := auditsink.New(auditsink.Config{Dir: dir, MaxSize: auditsink.MinMaxSize})
		require.NoError(t, err)
		require.NoError(t, s.Start(context.Background()))
		var want []string
		for i := range 40 {
			c := fact("t"+itoa(i), uint64(i+1), events.StorageGet)
			want = append(want, c.Event.ID)
			write(t, s, c)
		}
		require.NoError(t, s.Stop(context.Background()))
		lines := readAudit(t, dir, "")
		require.Equal(t, want, ids(lines), "every fact once, in order")
		files, err := auditsink.ListFiles(dir, auditsink.DefaultPattern)
		require.NoError(t, err)
		require.Greater(t, len(files), 3)
		for i, f := range files {
			fi, err := os.Stat(f)
			require.NoError(t, err)
			require.LessOrEqual(t, fi.Size(), int64(auditsink.MinMaxSize), f)
			require.Regexp(t, `^qtasks-audit-\d{8}T\d{6}Z-`+fmt.Sprintf("%06d", i+1)+`\.jsonl$`, filepath.Base(f))
		}
	})
	t.Run("ByAge", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		clock := &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
		s, err := auditsink.New(auditsink.Config{Dir: dir, MaxAge: time.Hour, Now: clock.Now, Pattern: "audit-{n}-{time}.log"})
		require.NoError(t, err)
		write(t, s, fact("a", 1, events.StorageAdd), fact("b", 2, events.StorageAdd)) // Start is optional
		clock.Add(59 * time.Minute)
		write(t, s, fact("c", 3, events.StorageAdd))
		clock.Add(time.Minute)
		write(t, s, fact("d", 4, events.StorageAdd))
		require.NoError(t, s.Stop(context.Background()))
		files, err := auditsink.ListFiles(dir, "audit-{n}-{time}.log")
		require.NoError(t, err)
		require.Equal(t, []string{"audit-000001-20250102T030405Z.log", "audit-000002-20250102T040405Z.log"},
			[]string{filepath.Base(files[0]), filepath.Base(files[1])})
		lines := readAudit(t, dir, "audit-{n}-{time}.log")
		require.Len(t, lines, 4)
		require.Equal(t, files[1], lines[3].File, "the fact after an hour opened the second file")
	})
	t.Run("LineLargerThanMaxSize", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s, err := auditsink.New(auditsink.Config{Dir: dir, MaxSize: auditsink.MinMaxSize})
		require.NoError(t, err)
		big := fact("big", 2, events.StorageGet)
		big.Event.Data = []byte(`{"input":{"pad":"` + strings.Repeat("y", 2*auditsink.MinMaxSize) + `"}}`)
		write(t, s, fact("small", 1, events.StorageGet), big, fact("after", 3, events.StorageGet))
		require.NoError(t, s.Stop(context.Background()))
		lines := readAudit(t, dir, "")
		require.Len(t, lines, 3)
		require.NotEqual(t, lines[0].File, lines[1].File)
		require.NotEqual(t, lines[1].File, lines[2].File, "a line larger than MaxSize gets a file of its own")
	})
}

// After a crash, the sink cuts off a half-written line and does not write
// again the facts it finds in its last lines; the facts it had not written
// are written, in a new file.
func TestRestartSkipsWhatWasWritten(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := auditsink.New(auditsink.Config{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, first.Start(context.Background()))
	calls := []*plugins.Call{}
	for i := range 6 {
		calls = append(calls, fact("t"+itoa(i), uint64(i+1), events.StorageGet))
	}
	write(t, first, calls[:4]...)
	// The process dies: no Stop; the fifth line was half written.
	files, err := auditsink.ListFiles(dir, auditsink.DefaultPattern)
	require.NoError(t, err)
	require.Len(t, files, 1)
	half, err := auditsink.Encode(&calls[4].Event, calls[4].Seq)
	require.NoError(t, err)
	f, err := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write(half[:len(half)/2])
	require.NoError(t, err)
	require.NoError(t, f.Close())

	second, err := auditsink.New(auditsink.Config{Dir: dir})
	require.NoError(t, err)
	require.NoError(t, second.Start(context.Background()))
	// JetStream delivers again what was not acknowledged (the last two
	// written, the half-written one), then the rest.
	write(t, second, calls[2], calls[3], calls[4], calls[5])
	require.NoError(t, second.Stop(context.Background()))

	lines := readAudit(t, dir, "")
	var want []string
	for _, c := range calls {
		want = append(want, c.Event.ID)
	}
	require.Equal(t, want, ids(lines), "each fact once")
	require.Equal(t, files[0], lines[3].File)
	require.NotEqual(t, files[0], lines[4].File, "a restart opens a new file")

	// A fact delivered twice in one run is written once, too.
	third, err := auditsink.New(auditsink.Config{Dir: dir})
	require.NoError(t, err)
	c := fact("again", 9, events.StorageGet)
	write(t, third, c, c)
	require.NoError(t, third.Stop(context.Background()))
	require.Len(t, readAudit(t, dir, ""), 7)
}

// A write that fails (the directory is gone) fails the call, leaves no
// half line, and the next call writes once the directory is back.
func TestWriteFailure(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "audit")
	s, err := auditsink.New(auditsink.Config{Dir: dir, MaxSize: auditsink.MinMaxSize})
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	write(t, s, fact("a", 1, events.StorageAdd))
	require.NoError(t, s.Stop(context.Background())) // the next fact opens a new file

	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.WriteFile(dir, nil, 0o600)) // not a directory any more
	_, err = s.Trigger(context.Background(), fact("b", 2, events.StorageAdd))
	require.ErrorContains(t, err, "opening audit file")

	require.NoError(t, os.Remove(dir))
	require.NoError(t, os.Mkdir(dir, 0o750))
	write(t, s, fact("b", 2, events.StorageAdd))
	require.NoError(t, s.Stop(context.Background()))
	require.Equal(t, []string{fact("b", 2, "storage_add").Event.ID}, ids(readAudit(t, dir, "")))
}

func TestEncode(t *testing.T) {
	t.Parallel()
	c := fact("t", 7, events.StorageGet)
	c.Event.Data = []byte("{\n  \"input\": {\"a\": 1}\n}")
	b, err := auditsink.Encode(&c.Event, c.Seq)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(b), "\n"), "one line: %s", b)
	require.Contains(t, string(b), `"data":{"input":{"a":1}}`)
	require.Contains(t, string(b), `"streamseq":"7"`)

	c.Event.Data = []byte("not json")
	b, err = auditsink.Encode(&c.Event, c.Seq)
	require.NoError(t, err)
	require.Contains(t, string(b), `"data_base64":"`+base64.StdEncoding.EncodeToString([]byte("not json"))+`"`)

	c.Event.ID = ""
	_, err = auditsink.Encode(&c.Event, c.Seq)
	require.ErrorContains(t, err, "not a valid CloudEvent")
	_, err = auditsink.New(auditsink.Config{Dir: t.TempDir()})
	require.NoError(t, err)
}

// In the executor's process, with plugins.Start or plugins.Local, the sink
// writes every fact of the log once, as the log has it; a task's lines are
// its timeline, entry for entry.
func TestWritesEveryFact(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Start", "Local"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := bustest.Open(t, nil)
			app := testkit.NewApp(t, b, true)
			executor.MustRegister(app, "add", func(_ context.Context, in struct{ A, B int }) (int, error) { return in.A + in.B, nil }, nil)
			// Some history before the sink exists: it starts at the log's
			// beginning.
			early := testkit.Submit(t, app, "add", map[string]int{"A": 1, "B": 2}, nil)
			testkit.Wait(t, app, early.ID)

			dir := t.TempDir()
			s, err := auditsink.New(auditsink.Config{Dir: dir, MaxSize: 16 << 10})
			require.NoError(t, err)
			if how == "Start" {
				testkit.StartPlugin(t, b, s.Spec())
			} else {
				testkit.LocalPlugin(t, b, s.Spec())
			}
			var subs []string
			for i := range 5 {
				sub := testkit.Submit(t, app, "add", map[string]int{"A": i, "B": 1}, nil)
				subs = append(subs, sub.ID)
			}
			for _, id := range append(subs, early.ID) {
				testkit.Wait(t, app, id)
			}
			testkit.WaitQueueEmpty(t, b)
			log := waitAudit(t, b, dir)
			lines := readAudit(t, dir, "")
			checkAgainstLog(t, lines, log)
			files, err := auditsink.ListFiles(dir, auditsink.DefaultPattern)
			require.NoError(t, err)
			require.Greater(t, len(files), 1, "rotated by size")
			require.True(t, slices.IsSortedFunc(lines, func(a, b line) int { return cmp.Compare(a.Seq, b.Seq) }), "stream order")

			// The lines of a task are its timeline.
			db := testkit.Projection(t, b)
			for _, id := range []string{early.ID, subs[2]} {
				tl, err := db.Timeline(testkit.Ctx(t), id)
				require.NoError(t, err)
				var want, got []string
				for _, e := range tl.Entries {
					want = append(want, e.EventID)
				}
				for _, l := range lines {
					if l.Event.Extensions()["taskid"] == id {
						got = append(got, l.ID)
					}
				}
				require.NotEmpty(t, want)
				require.Equal(t, want, got, "task %s", id)
			}
		})
	}
}

// Facts packed in phase messages (issue #15, design (f)) are written as
// facts alone are, each once, with the sequence of their message and their
// index in it, in stream order; with triggers named, only theirs.
func TestWritesPackedFacts(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	bustest.PublishFact(t, b, "default", bustest.Fact("a", events.StorageAdd, 0, `{"uuid":"a"}`))
	bustest.PublishPhase(t, b, events.PhaseIntake, "default", bustest.Fact("a", events.StorageGet, 0, `1`),
		bustest.Fact("a", events.BrokerGet, 0, `2`), bustest.Fact("a", events.StorageGet, 1, `3`))
	bustest.PublishFact(t, b, "default", bustest.Fact("a", events.StorageUpdate, 0, `4`))
	bustest.PublishPhase(t, b, events.PhaseFinish, "q2", bustest.Fact("b", events.WorkerAdd, 0, `5`))

	dir, named := t.TempDir(), t.TempDir()
	s, err := auditsink.New(auditsink.Config{Dir: dir})
	require.NoError(t, err)
	testkit.StartPlugin(t, b, s.Spec())
	sn, err := auditsink.New(auditsink.Config{Dir: named, Name: "gets", Triggers: []string{events.StorageGet}})
	require.NoError(t, err)
	testkit.StartPlugin(t, b, sn.Spec())

	log := waitAudit(t, b, dir)
	require.Len(t, log, 6)
	lines := readAudit(t, dir, "")
	checkAgainstLog(t, lines, log)
	var order []string
	for _, l := range lines {
		order = append(order, fmt.Sprintf("%d/%d", l.Seq, l.Index))
	}
	require.Equal(t, []string{"1/0", "2/0", "2/1", "2/2", "3/0", "4/0"}, order)

	gets := waitAudit(t, b, named, events.FactSubject(events.StorageGet, "*"))
	require.Len(t, gets, 2)
	checkAgainstLog(t, readAudit(t, named, ""), gets)
}

// With triggers named, only their facts are written.
func TestTriggers(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	dir := t.TempDir()
	triggers := []string{events.StorageAdd, events.StorageRemoveFinishedTask}
	s, err := auditsink.New(auditsink.Config{Dir: dir, Triggers: triggers})
	require.NoError(t, err)
	testkit.StartPlugin(t, b, s.Spec())
	app := testkit.NewApp(t, b, true)
	executor.MustRegister(app, "one", func(context.Context, struct{}) (int, error) { return 1, nil }, nil)
	sub := testkit.Submit(t, app, "one", nil, nil)
	testkit.Wait(t, app, sub.ID)
	testkit.WaitQueueEmpty(t, b)
	want := waitAudit(t, b, dir, events.FactSubject(triggers[0], "*"), events.FactSubject(triggers[1], "*"))
	require.Len(t, want, 2)
	lines := readAudit(t, dir, "")
	checkAgainstLog(t, lines, want)
	require.Equal(t, events.TypeTriggerPrefix+events.StorageAdd, lines[0].Event.Type())
	require.Equal(t, events.TypeTriggerPrefix+events.StorageRemoveFinishedTask, lines[1].Event.Type())
}

// A message on a fact subject that is not a valid event is not written:
// it is dead-lettered, pointing at its sequence, and the sink goes on.
func TestInvalidMessageIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	dir := t.TempDir()
	s, err := auditsink.New(auditsink.Config{Dir: dir})
	require.NoError(t, err)
	testkit.StartPlugin(t, b, s.Spec())

	bad := nats.NewMsg(events.FactSubject(events.StorageAdd, "t-bad"))
	bad.Header.Set("ce-specversion", "0.3")
	bad.Header.Set("ce-id", "bad-1")
	bad.Data = []byte(`{"input":{}}`)
	ack, err := b.JetStream().PublishMsg(testkit.Ctx(t), bad)
	require.NoError(t, err)

	app := testkit.NewApp(t, b, true)
	executor.MustRegister(app, "one", func(context.Context, struct{}) (int, error) { return 1, nil }, nil)
	sub := testkit.Submit(t, app, "one", nil, nil)
	testkit.Wait(t, app, sub.ID)
	testkit.WaitQueueEmpty(t, b)

	waitAudit(t, b, dir)
	for _, l := range readAudit(t, dir, "") {
		require.NotEqual(t, ack.Sequence, l.Seq)
	}
	var dead []events.DeadLetter
	bustest.WaitFor(t, testkit.WaitLimit, "the dead letter", func() bool {
		dead = nil
		for _, st := range bustest.Events(t, b, events.DeadSubject(auditsink.DefaultName)) {
			var dl events.DeadLetter
			require.NoError(t, jsonUnmarshal(st.Event.Data, &dl))
			dead = append(dead, dl)
		}
		return len(dead) > 0
	})
	require.Len(t, dead, 1)
	require.Equal(t, ack.Sequence, dead[0].Sequence)
	require.Contains(t, dead[0].Reason, "specversion")
}
