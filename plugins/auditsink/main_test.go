package auditsink_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	ce "github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/testkit"
	"github.com/qtasks/qtasks-go/plugins/auditsink"
)

// auditBin is qtasks-audit, built by TestMain.
var auditBin string

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Bin{Path: &auditBin, Pkg: "./cmd/qtasks-audit"})
}

// line is one line of an audit file, checked as a CloudEvent.
type line struct {
	File  string
	Event ce.Event
	ID    string
	Seq   uint64
	Index int // streamindex: 0 for a fact alone
	Raw   []byte
}

// readAudit reads every line of the sink's files in dir, oldest file
// first, and checks each with the CloudEvents SDK: valid JSON event format,
// a valid event, a qtasks fact.
func readAudit(tb testing.TB, dir, pattern string) []line {
	tb.Helper()
	return readLines(tb, dir, pattern, true)
}

// readSoFar is readAudit while the sink may be writing: a line still being
// written at the end of a file is left out.
func readSoFar(tb testing.TB, dir, pattern string) []line {
	tb.Helper()
	return readLines(tb, dir, pattern, false)
}

func readLines(tb testing.TB, dir, pattern string, strict bool) []line {
	tb.Helper()
	if pattern == "" {
		pattern = auditsink.DefaultPattern
	}
	files, err := auditsink.ListFiles(dir, pattern)
	require.NoError(tb, err)
	var out []line
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(tb, err)
		if i := bytes.LastIndexByte(b, '\n'); i < len(b)-1 {
			require.False(tb, strict, "%s ends with a half line: %q", f, b[i+1:])
			b = b[:i+1]
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 8<<20)
		for sc.Scan() {
			raw := bytes.Clone(sc.Bytes())
			var ev ce.Event
			require.NoError(tb, json.Unmarshal(raw, &ev), "%s: %s", f, raw)
			require.NoError(tb, ev.Validate(), "%s: %s", f, raw)
			require.Equal(tb, ce.CloudEventsVersionV1, ev.SpecVersion())
			require.True(tb, strings.HasPrefix(ev.Type(), events.TypeTriggerPrefix), ev.Type())
			require.Equal(tb, events.ContentTypeJSON, ev.DataContentType())
			var fact events.Fact
			require.NoError(tb, json.Unmarshal(ev.Data(), &fact), "data is the fact")
			seqS, ok := ev.Extensions()[auditsink.ExtStreamSeq].(string)
			require.True(tb, ok, "streamseq is a string attribute: %s", raw)
			seq, err := strconv.ParseUint(seqS, 10, 64)
			require.NoError(tb, err)
			idx := 0
			if v, ok := ev.Extensions()[auditsink.ExtStreamIndex]; ok {
				vs, isString := v.(string)
				require.True(tb, isString, "streamindex is a string attribute: %s", raw)
				idx, err = strconv.Atoi(vs)
				require.NoError(tb, err)
				require.Positive(tb, idx, "streamindex is left out for 0")
			}
			out = append(out, line{File: f, Event: ev, ID: ev.ID(), Seq: seq, Index: idx, Raw: raw})
		}
		require.NoError(tb, sc.Err())
	}
	return out
}

// factsInLog returns the facts of the log, by id, with their sequence.
func factsInLog(tb testing.TB, b *bus.Bus, subjects ...string) map[string]bus.Stored {
	tb.Helper()
	if len(subjects) == 0 {
		subjects = []string{events.SubjectTrigger + ".>"}
	}
	out := map[string]bus.Stored{}
	for _, s := range bustest.Events(tb, b, subjects...) {
		if s.Err == nil {
			out[s.Event.ID] = s
		}
	}
	return out
}

// sameIDs reports whether the lines hold exactly the facts of want, once
// each.
func sameIDs(lines []line, want map[string]bus.Stored) bool {
	if len(lines) != len(want) {
		return false
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if _, ok := want[l.ID]; !ok || seen[l.ID] {
			return false
		}
		seen[l.ID] = true
	}
	return true
}

// checkAgainstLog checks that each line carries its fact as the log has it:
// attributes, stream sequence and data.
func checkAgainstLog(tb testing.TB, lines []line, log map[string]bus.Stored) {
	tb.Helper()
	seen := map[string]bool{}
	for _, l := range lines {
		require.False(tb, seen[l.ID], "fact %s written twice", l.ID)
		seen[l.ID] = true
		s, ok := log[l.ID]
		require.True(tb, ok, "line %s is not a fact of the log", l.ID)
		require.Equal(tb, s.Seq, l.Seq, l.ID)
		require.Equal(tb, s.Index, l.Index, l.ID)
		require.Equal(tb, s.Event.Type, l.Event.Type())
		require.Equal(tb, s.Event.Source, l.Event.Source())
		require.Equal(tb, s.Event.Subject, l.Event.Subject())
		require.True(tb, s.Event.Time.Equal(l.Event.Time()), l.ID)
		require.Equal(tb, s.Event.Trigger, l.Event.Extensions()["trigger"])
		if s.Event.TaskID != "" {
			require.Equal(tb, s.Event.TaskID, l.Event.Extensions()["taskid"])
			require.Equal(tb, strconv.Itoa(s.Event.Attempt), l.Event.Extensions()["attempt"])
		}
		require.JSONEq(tb, string(s.Event.Data), string(l.Event.Data()), l.ID)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// waitAudit waits until the audit files in dir hold exactly the facts of
// the log on subjects (all facts when none), once each, and returns them.
// The log is read again only when the files have caught up with what it
// held last time: facts may still be arriving.
func waitAudit(tb testing.TB, b *bus.Bus, dir string, subjects ...string) map[string]bus.Stored {
	tb.Helper()
	want := factsInLog(tb, b, subjects...)
	bustest.WaitFor(tb, 3*testkit.WaitLimit, "every fact in the audit files", func() bool {
		lines := readSoFar(tb, dir, "")
		if len(lines) < len(want) {
			return false
		}
		want = factsInLog(tb, b, subjects...)
		return sameIDs(lines, want)
	})
	return want
}
