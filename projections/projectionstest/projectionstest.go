// Package projectionstest helps test and benchmark the projection: it
// records event logs to files, publishes them to a fresh JetStream, and
// makes large realistic logs by copying a recorded one under new task ids.
package projectionstest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// Msg is a message of the event log as stored: subject, headers, data.
type Msg struct {
	Subject string              `json:"subject"`
	Header  map[string][]string `json:"header"`
	Data    string              `json:"data"`
}

// NATS returns the message to publish.
func (m Msg) NATS() *nats.Msg {
	return &nats.Msg{Subject: m.Subject, Header: nats.Header(m.Header), Data: []byte(m.Data)}
}

// Stored decodes the message as the projector does, at stream sequence
// seq: its events (bus.Unpack).
func (m Msg) Stored(seq uint64) []bus.Stored {
	return bus.Unpack(seq, m.Subject, m.Header, []byte(m.Data))
}

// Pack rewrites a log as issue #15's design (f) stores it, from message
// from on (the messages before stay as protocol 2 wrote them): runs of
// consecutive facts of one task that are not lifecycle facts go, up to
// four at a time, into phase messages (events.PhaseSubject, in the CloudEvents
// JSON batch format); everything else stays alone, in the same order. It
// returns the log and how many phase messages it holds. The phase named is
// always intake: readers do not depend on it.
func Pack(tb testing.TB, msgs []Msg, from int) ([]Msg, int) {
	tb.Helper()
	var out []Msg
	var run []events.Event
	queue, phases := "", 0
	flush := func() {
		if len(run) == 0 {
			return
		}
		data, err := events.EncodeBatch(run)
		if err != nil {
			tb.Fatalf("packing facts: %v", err)
		}
		out = append(out, Msg{
			Subject: events.PhaseSubject(events.PhaseIntake, queue),
			Header:  map[string][]string{"Content-Type": {events.ContentTypeBatch}}, Data: string(data),
		})
		run, phases = nil, phases+1
	}
	for i, m := range msgs {
		ps, perr := events.ParseSubject(m.Subject)
		ss := m.Stored(uint64(i + 1))
		ev := ss[0].Event
		tr, known := events.Lookup(ev.Trigger)
		if i < from || perr != nil || ps.Kind != "trigger" || len(ss) != 1 || ss[0].Err != nil || ev.TaskID == "" || !known || tr.Lifecycle {
			flush()
			out = append(out, m)
			continue
		}
		if len(run) > 0 && (run[0].TaskID != ev.TaskID || queue != ps.Key || len(run) == 4) {
			flush()
		}
		run, queue = append(run, ev), ps.Key
	}
	flush()
	return out, phases
}

// ScenarioLog is the path of the recorded log of a real run (successes,
// errors, a retry, a trigger error, a cancel, an unknown task, mutators and
// a shadow plugin): projections/testdata/replay/scenario/events.jsonl.
func ScenarioLog() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "replay", "scenario", "events.jsonl")
}

// Capture reads every message of b's event log, raw, in order.
func Capture(tb testing.TB, b *bus.Bus) []Msg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := b.EventStream().Info(ctx)
	if err != nil {
		tb.Fatalf("reading the log's end: %v", err)
	}
	var out []Msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.LastSeq > 0; seq++ {
		m, err := b.EventStream().GetMsg(ctx, seq)
		if err != nil {
			tb.Fatalf("reading sequence %d: %v", seq, err)
		}
		if !utf8.Valid(m.Data) {
			tb.Fatalf("sequence %d: data is not UTF-8", seq)
		}
		out = append(out, Msg{Subject: m.Subject, Header: m.Header, Data: string(m.Data)})
	}
	return out
}

// ReadFile reads a log written by WriteFile (JSON lines).
func ReadFile(tb testing.TB, path string) []Msg {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("reading log: %v", err)
	}
	defer f.Close()
	var out []Msg
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var m Msg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			tb.Fatalf("reading log %s: %v", path, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("reading log %s: %v", path, err)
	}
	return out
}

// WriteFile writes msgs as JSON lines.
func WriteFile(tb testing.TB, path string, msgs []Msg) {
	tb.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, m := range msgs {
		if err := enc.Encode(m); err != nil {
			tb.Fatal(err)
		}
	}
	// A fixture is a file of the checkout (testdata), readable as the rest
	// of it is.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil { //nolint:gosec // G301: see above
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil { //nolint:gosec // G306: see above
		tb.Fatal(err)
	}
}

// Publish appends msgs to b's event log, in order, and checks that they are
// stored one after the other (none deduplicated): on an empty log they get
// stream sequences 1, 2, ... Publishes are asynchronous, a few thousand in
// flight at most. It returns the number published.
func Publish(tb testing.TB, b *bus.Bus, msgs func(yield func(Msg) bool)) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	js := b.JetStream()
	info, err := b.EventStream().Info(ctx)
	if err != nil {
		tb.Fatalf("reading the log's end: %v", err)
	}
	start := info.State.LastSeq
	var n uint64
	futs := make([]jetstream.PubAckFuture, 0, 4096)
	wait := func() {
		base := n - uint64(len(futs))
		for i, f := range futs {
			select {
			case ack := <-f.Ok():
				if want := start + base + uint64(i) + 1; ack.Sequence != want {
					tb.Fatalf("message stored at sequence %d, want %d: the messages must be unique and nobody else publishing", ack.Sequence, want)
				}
			case err := <-f.Err():
				tb.Fatalf("publishing: %v", err)
			case <-ctx.Done():
				tb.Fatalf("publishing: %v", ctx.Err())
			}
		}
		futs = futs[:0]
	}
	for m := range msgs {
		f, err := js.PublishMsgAsync(m.NATS())
		if err != nil {
			tb.Fatalf("publishing: %v", err)
		}
		n++
		futs = append(futs, f)
		if len(futs) == cap(futs) {
			wait()
		}
	}
	wait()
	return n
}

// All yields msgs.
func All(msgs []Msg) func(yield func(Msg) bool) {
	return func(yield func(Msg) bool) {
		for _, m := range msgs {
			if !yield(m) {
				return
			}
		}
	}
}

// Copies yields n copies of the recorded log msgs, copy after copy, each
// under new task ids, node ids and message ids (so that JetStream does not
// deduplicate them), generated as it goes: memory does not grow with n.
// Limit, when positive, stops after that many messages.
func Copies(msgs []Msg, n, limit int) func(yield func(Msg) bool) {
	tasks, nodes := ids(msgs)
	return func(yield func(Msg) bool) {
		count := 0
		for c := range n {
			pairs := make([]string, 0, 2*(len(tasks)+len(nodes)))
			for i, id := range tasks {
				pairs = append(pairs, id, fmt.Sprintf("%08x-0000-4000-8000-%012x", c, i))
			}
			for i, id := range nodes {
				pairs = append(pairs, id, fmt.Sprintf("node-%06d-%d", c, i))
			}
			r := strings.NewReplacer(pairs...)
			for _, m := range msgs {
				if limit > 0 && count >= limit {
					return
				}
				count++
				h := make(map[string][]string, len(m.Header))
				for k, vs := range m.Header {
					nv := make([]string, len(vs))
					for i, v := range vs {
						nv[i] = r.Replace(v)
					}
					h[k] = nv
				}
				if !yield(Msg{Subject: r.Replace(m.Subject), Header: h, Data: r.Replace(m.Data)}) {
					return
				}
			}
		}
	}
}

// ids returns the task ids and node ids a log mentions.
func ids(msgs []Msg) (tasks, nodes []string) {
	for _, m := range msgs {
		if v := m.Header[events.HeaderPrefix+events.ExtTaskID]; len(v) > 0 && !slices.Contains(tasks, v[0]) {
			tasks = append(tasks, v[0])
		}
		if v := m.Header[events.HeaderPrefix+"source"]; len(v) > 0 {
			node, ok := strings.CutPrefix(v[0], "qtasks/")
			if ok && !strings.Contains(node, "/") && !slices.Contains(nodes, node) {
				nodes = append(nodes, node)
			}
		}
	}
	return tasks, nodes
}
