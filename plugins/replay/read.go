package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/plugins/qtesting"
)

// Filter selects recorded invocations. The zero value selects all but
// those of tasks run under test.
type Filter struct {
	// Since and Until bound the invocations' recorded time (inclusive);
	// zero means unbounded.
	Since, Until time.Time
	// TaskNames, Triggers and TaskIDs keep only invocations for these
	// task names, triggers and task ids; empty keeps all.
	TaskNames []string
	Triggers  []string
	TaskIDs   []string
	// Last keeps only the last Last invocations that match the rest of the
	// filter; 0 keeps all.
	Last int
	// IncludeTesting keeps the invocations of tasks marked as run under
	// test (extra "testing": true, see plugins/qtesting). By default they
	// are left out, so that a replay measures production traffic. A task
	// is judged by the invocation's payload when it carries the task
	// record, else by the task's storage_add fact in the log: without
	// Since and TaskIDs, one pass over the storage_add facts collects the
	// ids of the marked tasks (held in memory), otherwise each task is
	// looked up. Replaying a file (RunFile) judges by the payload alone:
	// export with the filter instead.
	IncludeTesting bool
}

// Record is one recorded invocation of a plugin and the patch that
// answered it.
type Record struct {
	// Seq is the invocation's stream sequence (0 when not known).
	Seq uint64
	// Invocation is the invocation event: its data is the payload the
	// plugin saw.
	Invocation events.Event
	// Patch is the recorded answer; nil when none was recorded (the call
	// timed out, or the plugin never answered).
	Patch *events.Event
	// PatchSeq is the patch's stream sequence (0 when not known).
	PatchSeq uint64
}

// clockSkew is how far the time an executor writes into an event may be
// from the time the server stored it; time filters read this much more of
// the log to be safe.
const clockSkew = time.Minute

// maxFilterSubjects bounds the filter subjects of one consumer; above it
// the filter is applied by the reader instead.
const maxFilterSubjects = 256

// patchScan bounds how many patches on an invocation's patch subject are
// looked at to find the one that answers it: the patches of every task's
// invocations of the plugin on the trigger share the subject, and those in
// flight at the same time interleave.
const patchScan = 1024

// logSource reads recorded invocations of one plugin from the live log.
type logSource struct {
	b      *bus.Bus
	stream jetstream.Stream
	plugin string
	f      Filter

	subjects []string
	names    map[string]bool
	ids      map[string]bool
	triggers map[string]bool
	// underTest caches, per task id looked up, whether the task runs
	// under test.
	underTest map[string]bool
	// lookups counts the reads of the log for tasks not in underTest.
	lookups int
	// scanned is set once the storage_add facts up to scanTo, read from
	// scanStart on, gave markedIDs: the tasks run under test.
	scanned   bool
	scanTo    uint64
	scanStart time.Time
	markedIDs map[string]bool
	now       func() time.Time
}

func newLogSource(b *bus.Bus, plugin string, f Filter) (*logSource, error) {
	if !events.ValidToken(plugin) {
		return nil, fmt.Errorf("plugin name %q: must be a valid NATS subject token", plugin)
	}
	for _, t := range f.Triggers {
		if !events.ValidToken(t) {
			return nil, fmt.Errorf("trigger %q: must be a valid NATS subject token", t)
		}
	}
	for _, id := range f.TaskIDs {
		if !events.ValidToken(id) {
			return nil, fmt.Errorf("task id %q: must be a valid NATS subject token", id)
		}
	}
	if f.Last < 0 {
		return nil, fmt.Errorf("last %d: must not be negative", f.Last)
	}
	s := &logSource{b: b, plugin: plugin, f: f}
	if b != nil {
		s.stream = b.EventStream()
	}
	s.names = set(f.TaskNames)
	s.ids = set(f.TaskIDs)
	s.triggers = set(f.Triggers)
	s.underTest = map[string]bool{}
	s.now = time.Now
	// Subjects carry no task ids: TaskIDs are matched by keep. Logs
	// written before that have the task id as a last token.
	base := events.SubjectInvoke + "." + plugin
	if len(f.Triggers) > 0 && 2*len(f.Triggers) <= maxFilterSubjects {
		for _, t := range f.Triggers {
			s.subjects = append(s.subjects, base+"."+t, base+"."+t+".*")
		}
	} else {
		s.subjects = []string{base + ".>"}
	}
	slices.Sort(s.subjects)
	s.subjects = slices.Compact(s.subjects)
	return s, nil
}

func set(xs []string) map[string]bool {
	if len(xs) == 0 {
		return nil
	}
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// match applies the parts of the filter the subjects could not.
func (s *logSource) match(ev *events.Event) bool {
	if ev.Type != events.TypeInvokePrefix+ev.Trigger || ev.Plugin != s.plugin {
		return false
	}
	if s.names != nil && !s.names[ev.TaskName] {
		return false
	}
	if s.ids != nil && !s.ids[ev.TaskID] {
		return false
	}
	if s.triggers != nil && !s.triggers[ev.Trigger] {
		return false
	}
	if !s.f.Since.IsZero() && ev.Time.Before(s.f.Since) {
		return false
	}
	if !s.f.Until.IsZero() && ev.Time.After(s.f.Until) {
		return false
	}
	return true
}

// maxUnderTest bounds the cache of tasks looked up one by one.
const maxUnderTest = 1 << 16

// keep applies the whole filter: match, then the test mark.
func (s *logSource) keep(ctx context.Context, ev *events.Event, seq uint64) (bool, error) {
	if !s.match(ev) {
		return false, nil
	}
	if s.f.IncludeTesting {
		return true, nil
	}
	marked, err := s.testing(ctx, ev, seq)
	return !marked, err
}

// scanTesting reads, once, the storage_add facts of the whole log (where
// the mark of a task run under test is, see plugins/qtesting) and keeps the
// ids of the marked tasks, so that invocations are judged without a lookup
// each. With Since or TaskIDs set it does nothing: a lookup per task of the
// window is cheaper then.
func (s *logSource) scanTesting(ctx context.Context) error {
	if s.f.IncludeTesting || s.b == nil || s.scanned || !s.f.Since.IsZero() || len(s.f.TaskIDs) > 0 {
		return nil
	}
	return s.scanAll(ctx)
}

// scanAll reads every storage_add fact of the log once and keeps the ids
// of the tasks marked as run under test.
func (s *logSource) scanAll(ctx context.Context) error {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading event log: %w", err)
	}
	s.scanStart = s.now()
	s.scanned, s.scanTo, s.markedIDs = true, info.State.LastSeq, map[string]bool{}
	return s.b.ReadLog(ctx, 1, []string{events.FactSubject(events.StorageAdd, "*")}, func(st bus.Stored) error {
		if st.Err == nil && markedFact(st.Event.Data) {
			s.markedIDs[st.Event.TaskID] = true
		}
		return nil
	})
}

// testing reports whether ev, at stream sequence seq, is for a task marked
// as run under test: by its payload when that carries the task record,
// else by the task's storage_add fact (scanned, or looked up).
func (s *logSource) testing(ctx context.Context, ev *events.Event, seq uint64) (bool, error) {
	if qtesting.MarkedPayload(ev.Trigger, ev.Data) {
		return true, nil
	}
	if s.b == nil || ev.TaskID == "" {
		return false, nil
	}
	// The scan saw every storage_add fact up to scanTo. A task submitted
	// just before the scan ended may have its fact after it: invocations
	// that recent are looked up.
	if s.scanned && seq <= s.scanTo && ev.Time.Before(s.scanStart.Add(-clockSkew)) {
		return s.markedIDs[ev.TaskID], nil
	}
	if m, ok := s.underTest[ev.TaskID]; ok {
		return m, nil
	}
	// The record's creation time bounds where the fact is. Without a
	// record (a finished one expires after bus.Config.FinishedTaskTTL, or
	// another bus), the whole log would be read for each task: read it
	// once for all of them instead.
	var since time.Time
	if rec, err := s.b.GetTask(ctx, ev.TaskID); err == nil {
		since = rec.Task.CreatedAt
	} else if !errors.Is(err, bus.ErrTaskNotFound) {
		return false, err
	} else if !s.scanned {
		if err := s.scanAll(ctx); err != nil {
			return false, err
		}
		return s.testing(ctx, ev, seq)
	}
	// Every task met on the way is noted, not only this one: tasks created
	// together are replayed together, and a lookup each would read the
	// same facts again for every task (2000 tasks submitted within a
	// minute took 50 s to replay, 25 ms a lookup). The read goes on past
	// this task's fact for lookAhead more tasks.
	if len(s.underTest) >= maxUnderTest-lookAhead {
		clear(s.underTest)
	}
	s.lookups++
	found, after := false, 0
	err := s.b.ReadLogSince(ctx, since.Add(-bus.TaskClockSkew), []string{events.FactSubject(events.StorageAdd, "*")}, func(st bus.Stored) error {
		if st.Err != nil || st.Event.TaskID == "" {
			return nil //nolint:nilerr // an event that does not decode is skipped: the read goes on
		}
		if _, seen := s.underTest[st.Event.TaskID]; !seen {
			s.underTest[st.Event.TaskID] = markedFact(st.Event.Data)
			if found {
				after++
			}
		}
		found = found || st.Event.TaskID == ev.TaskID
		if found && after >= lookAhead {
			return errStopRead
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return false, err
	}
	if !found {
		s.underTest[ev.TaskID] = false // no storage_add fact: not under test
	}
	return s.underTest[ev.TaskID], nil
}

// lookAhead is how many tasks past the one looked up a lookup notes.
const lookAhead = 4096

// markedFact reports whether the data of a storage_add fact records a task
// marked as run under test.
func markedFact(data []byte) bool {
	var f events.Fact
	if json.Unmarshal(data, &f) != nil {
		return false
	}
	doc := f.Output
	if len(doc) == 0 {
		doc = f.Input
	}
	return qtesting.MarkedPayload(events.StorageAdd, doc)
}

// errStopRead ends a ReadLog pass early.
var errStopRead = errors.New("stop reading")

// maxPending bounds the invocations held while waiting for their patches:
// past it, the oldest is looked up directly instead.
const maxPending = 4096

// patchSubjects are the patch subjects answering invocations on subjects.
func patchSubjects(subjects []string) []string {
	out := make([]string, len(subjects))
	for i, s := range subjects {
		out[i] = events.SubjectPatch + strings.TrimPrefix(s, events.SubjectInvoke)
	}
	return out
}

// each calls fn for every matching invocation in stream order, with the
// patch that answered it. It reads the plugin's invocations and patches in
// one ordered pass and pairs them as it goes: a patch follows its
// invocation within the invocation's timeout, so only the invocations
// whose answer is still to come are held (at most maxPending; past that
// the oldest one's patch is looked up directly). skipped is called for
// invocations that cannot be decoded.
func (s *logSource) each(ctx context.Context, fn func(Record) error, skipped func(seq uint64, err error)) error {
	from, err := s.start(ctx)
	if err != nil {
		return err
	}
	if err := s.scanTesting(ctx); err != nil {
		return err
	}
	var upTo uint64 // 0: to the end of the log
	if s.f.Last > 0 {
		from, upTo, err = s.lastN(ctx, from)
		if err != nil || from == 0 {
			return err
		}
	}
	type slot struct {
		r      Record
		done   bool
		legacy bool // on a subject with the task id (an older log)
	}
	var queue []*slot
	pending := map[string]*slot{}
	emit := func(all bool) error {
		for len(queue) > 0 {
			h := queue[0]
			if !h.done {
				if !all && len(queue) <= maxPending {
					return nil
				}
				if err := s.resolve(ctx, &h.r, h.legacy); err != nil {
					return err
				}
			}
			queue[0] = nil
			queue = queue[1:]
			if pending[h.r.Invocation.ID] == h {
				delete(pending, h.r.Invocation.ID)
			}
			if err := fn(h.r); err != nil {
				return err
			}
		}
		return nil
	}
	invoking := true // still taking invocations
	subjects := append(slices.Clone(s.subjects), patchSubjects(s.subjects)...)
	err = s.b.ReadLog(ctx, from, subjects, func(st bus.Stored) error {
		if strings.HasPrefix(st.Subject, events.SubjectPatch+".") {
			if st.Err == nil && st.Event.Type == events.TypePatch {
				if p := pending[st.Event.Invocation]; p != nil && !p.done {
					ev := st.Event
					p.r.Patch, p.r.PatchSeq, p.done = &ev, st.Seq, true
				}
			}
		} else if invoking {
			switch {
			case upTo > 0 && st.Seq > upTo:
				invoking = false
			case !s.f.Until.IsZero() && !st.Event.Time.IsZero() && st.Event.Time.After(s.f.Until.Add(clockSkew)):
				invoking = false
			case st.Err != nil:
				if skipped != nil {
					skipped(st.Seq, st.Err)
				}
			default:
				keep, err := s.keep(ctx, &st.Event, st.Seq)
				if err != nil {
					return err
				}
				if keep {
					p := &slot{r: Record{Seq: st.Seq, Invocation: st.Event}, legacy: strings.Count(st.Subject, ".") == 4}
					queue = append(queue, p)
					pending[st.Event.ID] = p
				}
			}
		}
		if err := emit(false); err != nil {
			return err
		}
		if !invoking && len(queue) == 0 {
			return errStopRead
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return err
	}
	// What is left has no patch in what was read; look each up, in case
	// it was stored after the read began.
	return emit(true)
}

// lastN finds where the last Last matching invocations start, in one
// streaming pass that keeps only their sequences.
func (s *logSource) lastN(ctx context.Context, from uint64) (first, last uint64, err error) {
	ring := make([]uint64, s.f.Last)
	n := 0
	err = s.b.ReadLog(ctx, from, s.subjects, func(st bus.Stored) error {
		if !s.f.Until.IsZero() && !st.Event.Time.IsZero() && st.Event.Time.After(s.f.Until.Add(clockSkew)) {
			return errStopRead
		}
		if st.Err != nil {
			return nil //nolint:nilerr // an event that does not decode is skipped: the read goes on
		}
		if keep, err := s.keep(ctx, &st.Event, st.Seq); err != nil || !keep {
			return err
		}
		ring[n%len(ring)] = st.Seq
		n++
		last = st.Seq
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return 0, 0, err
	}
	if n == 0 {
		return 0, 0, nil
	}
	if n < len(ring) {
		return ring[0], last, nil
	}
	return ring[n%len(ring)], last, nil
}

// start is the first stream sequence worth reading: 1, or the first
// invocation stored at Since (less the clock skew allowance), found by a
// binary search over the stream's storage times.
func (s *logSource) start(ctx context.Context) (uint64, error) {
	if s.f.Since.IsZero() {
		return 1, nil
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading event log: %w", err)
	}
	target := s.f.Since.Add(-clockSkew)
	lo, hi := info.State.FirstSeq, info.State.LastSeq+1
	filter := events.SubjectInvoke + "." + s.plugin + ".>"
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := s.stream.GetMsg(ctx, mid, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			hi = mid
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reading event log: %w", err)
		}
		if !m.Time.Before(target) {
			hi = mid
		} else {
			lo = m.Sequence + 1
		}
	}
	return max(lo, 1), nil
}

// resolve finds the patch that answered r's invocation: the first patch on
// its patch subject after it that names it.
func (s *logSource) resolve(ctx context.Context, r *Record, legacy bool) error {
	inv := &r.Invocation
	subj := events.PatchSubject(inv.Plugin, inv.Trigger)
	if legacy {
		subj += ".*" // the invocation's, and so its patch's, subject ends in the task id
	}
	seq := r.Seq + 1
	for range patchScan {
		ss, err := s.b.Message(ctx, seq, subj)
		if errors.Is(err, bus.ErrNoMessage) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the patch of %s: %w", inv.ID, err)
		}
		st := ss[0] // a patch travels alone
		if st.Err == nil && st.Event.Type == events.TypePatch && st.Event.Invocation == inv.ID {
			ev := st.Event
			r.Patch, r.PatchSeq = &ev, st.Seq
			return nil
		}
		seq = st.Seq + 1
	}
	return nil
}

// total is the number of invocations the subjects match from the start,
// exact when the filter has nothing the subjects cannot express, 0 when not
// known. The invocations of tasks under test are counted (they are known
// only as they are read), so when some are left out it is an upper bound.
func (s *logSource) total(ctx context.Context) int {
	if s.f.Last > 0 {
		return s.f.Last
	}
	if s.names != nil || !s.f.Since.IsZero() || !s.f.Until.IsZero() {
		return 0
	}
	c, err := s.b.JetStream().OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: s.subjects})
	if err != nil {
		return 0
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0
	}
	// Ordered consumers linger until their inactivity threshold.
	_ = s.b.JetStream().DeleteConsumer(ctx, bus.StreamEvents, info.Name)
	return int(min(info.NumPending, math.MaxInt))
}

// Read calls fn for every recorded invocation of plugin that f selects, in
// stream order, with the patch that answered it. It streams: it holds a
// bounded number of records at a time, whatever the size of the history.
func Read(ctx context.Context, b *bus.Bus, plugin string, f Filter, fn func(Record) error) error {
	src, err := newLogSource(b, plugin, f)
	if err != nil {
		return err
	}
	return src.each(ctx, fn, nil)
}
