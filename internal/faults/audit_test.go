package faults_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
	"github.com/qtasks/qtasks-go/projections"
)

// outcomeUnknown reports whether a Submit error (or an HTTP answer) says
// that the task may have been queued, and the idempotency key that
// settles it. Any other error must mean that nothing was queued.
func outcomeUnknown(err error) (key string, unknown bool) {
	if he, ok := errors.AsType[*httpError](err); ok {
		var body struct {
			Outcome string `json:"outcome"`
			Key     string `json:"idempotency_key"`
		}
		if he.Code == http.StatusServiceUnavailable && json.Unmarshal([]byte(he.Body), &body) == nil && body.Outcome == "unknown" {
			return body.Key, true
		}
		return "", false
	}
	if ou, ok := errors.AsType[*executor.OutcomeUnknownError](err); ok {
		return ou.IdempotencyKey, true
	}
	return "", errors.Is(err, executor.ErrOutcomeUnknown)
}

// finishLimit bounds how long the acknowledged tasks not final yet may go
// without one of them reaching a final status, once the faults are over: a
// few ack waits (5 s) for the redeliveries. A queue still draining (the
// soak's workers may fall behind its submissions on a loaded machine) is
// not stuck.
const finishLimit = 3 * time.Minute

// orphanLimit bounds how long the audit waits for the janitors to end the
// records submissions left new: they look OrphanAge late, every
// OrphanAge/4.
const orphanLimit = 3 * orphanAge

// report is what the audit counted.
type report struct {
	Acked, Errored, Unknown int
	Events                  int
	Finals                  int
	Resumptions             []time.Time // times of the broker_running_older_tasks facts
}

// finalFact is a final fact's record of one attempt.
type finalFact struct {
	Seq  uint64
	Task events.Task
}

// audit accounts for every submission of subs once the faults are over:
//
//   - no Submit hung;
//   - every acknowledged task reaches a final status, none of them going
//     finishLimit without one doing so, and it is success (the tasks cannot fail; the plugin's policy is
//     ignore): nothing stuck, no spurious failure;
//   - every attempt of every task in the log has exactly one final fact;
//   - no two events of the log share a ce-id;
//   - a submission that got an error was not queued (no task of its n
//     ever ran), unless the error said its outcome was unknown; a keyed
//     submission retried after errors made exactly one task;
//   - no task record stays new or in process;
//   - the live projection at db ("" for none) equals a rebuild from the
//     log, and holds no task in new, nor any task of a submission that
//     got an error not saying its outcome was unknown (bar the janitor's
//     end of its record, never queued).
func audit(t *testing.T, b *bus.Bus, subs []*submission, db string) report {
	t.Helper()
	var r report
	acked := map[string]*submission{}
	for _, s := range subs {
		switch {
		case s.Hung:
			t.Errorf("submission %d (batch %v): Submit or SubmitMany did not return within %v of a %v context: it waits for something without a deadline", s.N, s.Batch, hangLimit, submitTimeout)
		case s.ID != "":
			r.Acked++
			acked[s.ID] = s
		default:
			r.Errored++
		}
		if s.Unknown {
			r.Unknown++
		}
	}

	// Nothing stuck: every acknowledged task finishes.
	pending := map[string]string{} // id → last status seen
	for id := range acked {
		pending[id] = "?"
	}
	deadline := time.Now().Add(finishLimit)
	for len(pending) > 0 && time.Now().Before(deadline) {
		before := len(pending)
		for id := range pending {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rec, err := b.GetTask(ctx, id)
			cancel()
			switch {
			case err != nil:
				pending[id] = err.Error()
			case final(rec.Task.Status):
				delete(pending, id)
			default:
				pending[id] = rec.Task.Status
			}
		}
		if len(pending) < before {
			deadline = time.Now().Add(finishLimit)
		}
		if len(pending) > 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if len(pending) > 0 {
		var ex []string
		for id, st := range pending {
			if len(ex) < 10 {
				ex = append(ex, fmt.Sprintf("%s (n %d, %s)", id, acked[id].N, st))
			}
		}
		t.Errorf("%d of %d acknowledged tasks did not finish: none did for %v: %s", len(pending), len(acked), finishLimit, strings.Join(ex, ", "))
	}

	// No orphan records: every record left in the task bucket is final
	// once the workers' janitors had the time to end those that
	// submissions left new and never queued.
	var orphans []string
	deadline = time.Now().Add(orphanLimit)
	for {
		orphans = unfinishedRecords(t, b)
		if len(orphans) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(orphans) > 0 {
		t.Errorf("%d task records are not final %v after the load stopped (the janitors end orphans after %v), e.g. %s",
			len(orphans), orphanLimit, orphanAge, strings.Join(orphans[:min(len(orphans), 5)], "; "))
	}

	// The log: unique ids, one final fact per attempt.
	// ce-ids by a 64-bit hash: a soak's log holds millions of them.
	seed := maphash.MakeSeed()
	ids := map[uint64]uint64{}
	finals := map[string][]finalFact{} // "id:attempt" → its final facts
	byN := map[int]map[string]bool{}   // kw n → task ids that have a final fact
	var dups []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := b.ReadLog(ctx, 1, nil, func(s bus.Stored) error {
		r.Events++
		if s.Err != nil {
			t.Errorf("seq %d on %s is not a valid event: %v", s.Seq, s.Subject, s.Err)
			return nil //nolint:nilerr // recorded as the test's failure; the audit reads on
		}
		// The ids the executor writes are unique (PROTOCOL.md §5); a patch
		// is the plugin's, and a plugin that answers a redelivered
		// invocation again stores the same answer twice (the first counts).
		h := maphash.String(seed, s.Event.ID)
		first, seen := ids[h]
		switch {
		case strings.HasPrefix(s.Subject, events.SubjectPatch+"."):
		case seen:
			dups = append(dups, fmt.Sprintf("%s (seq %d and %d)", s.Event.ID, first, s.Seq))
		default:
			ids[h] = s.Seq
		}
		if !strings.HasPrefix(s.Subject, events.SubjectTrigger+".") {
			return nil
		}
		switch s.Event.Trigger {
		case events.BrokerRunningOlderTasks:
			r.Resumptions = append(r.Resumptions, s.Event.Time)
		case events.StorageRemoveFinishedTask:
			var fact struct {
				Input struct {
					Model events.Task `json:"model"`
				} `json:"input"`
			}
			if err := json.Unmarshal(s.Event.Data, &fact); err != nil {
				t.Errorf("seq %d: final fact: %v", s.Seq, err)
				return nil
			}
			m := fact.Input.Model
			k := fmt.Sprintf("%s:%d", m.ID, m.Attempt)
			finals[k] = append(finals[k], finalFact{s.Seq, m})
			var kw struct {
				N int `json:"n"`
			}
			// A record the janitor ended was never queued: it did not run.
			if json.Unmarshal(m.Kw, &kw) == nil && kw.N > 0 && m.Reason != executor.OrphanReason {
				if byN[kw.N] == nil {
					byN[kw.N] = map[string]bool{}
				}
				byN[kw.N][m.ID] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the log: %v", err)
	}
	if len(dups) > 0 {
		t.Errorf("%d ce-ids appear twice in the log (PROTOCOL.md §5 promises unique ids for what the executor writes), e.g. %s", len(dups), strings.Join(dups[:min(len(dups), 5)], "; "))
	}
	for k, fs := range finals {
		r.Finals++
		if len(fs) != 1 {
			var sts []string
			for _, f := range fs {
				sts = append(sts, fmt.Sprintf("%s at seq %d", f.Task.Status, f.Seq))
			}
			t.Errorf("attempt %s has %d final facts: %s", k, len(fs), strings.Join(sts, ", "))
		}
	}
	var failed []string
	for id, s := range acked {
		fs := finals[id+":1"]
		if len(fs) == 0 {
			continue // reported above as not finished
		}
		if st := fs[0].Task.Status; st != events.StatusSuccess {
			failed = append(failed, fmt.Sprintf("%s (n %d): %s: %s %s", id, s.N, st, fs[0].Task.Error, fs[0].Task.Reason))
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d acknowledged tasks, which cannot fail, ended otherwise, e.g. %s", len(failed), strings.Join(failed[:min(len(failed), 5)], "; "))
	}

	// HTTP: a 400 says the request was bad; these requests are good, so a
	// 400 is an infrastructure failure passed off as the client's fault.
	var bad []string
	for _, s := range subs {
		for _, e := range s.Errs {
			if strings.HasPrefix(e, "HTTP 400") {
				bad = append(bad, fmt.Sprintf("n %d: %.200s", s.N, e))
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d good HTTP submissions were answered 400 (a 400 must mean the request was bad), e.g. %s", len(bad), strings.Join(bad[:min(len(bad), 3)], "; "))
	}

	// Answers: an error means not queued, unless it said unknown; a keyed
	// retry makes no duplicate; an acknowledged submission, one task.
	var lies, dupTasks []string
	for _, s := range subs {
		ran := byN[s.N]
		switch {
		case s.Hung:
		case s.ID == "" && !s.Unknown && len(ran) > 0:
			lies = append(lies, fmt.Sprintf("n %d: %q, yet task %s ran", s.N, s.Errs[len(s.Errs)-1], firstKey(ran)))
		case len(ran) > 1:
			dupTasks = append(dupTasks, fmt.Sprintf("n %d (key %q, errors %q): tasks %v", s.N, s.Key, s.Errs, keys(ran)))
		case s.ID != "" && len(ran) == 1 && !ran[s.ID]:
			dupTasks = append(dupTasks, fmt.Sprintf("n %d: acknowledged as %s, but %s ran", s.N, s.ID, firstKey(ran)))
		}
	}
	if len(lies) > 0 {
		t.Errorf("%d submissions got an error that did not say the outcome was unknown, yet their task was queued and ran, e.g. %s", len(lies), strings.Join(lies[:min(len(lies), 5)], "; "))
	}
	if len(dupTasks) > 0 {
		t.Errorf("%d submissions made more than one task, e.g. %s", len(dupTasks), strings.Join(dupTasks[:min(len(dupTasks), 5)], "; "))
	}

	if db != "" {
		checkProjection(t, b, db)
		checkNotQueuedUnprojected(t, db, subs)
	}
	logErrors(t, subs)
	t.Logf("audit: %d submissions acknowledged, %d got an error in the end (%d said unknown outcome), %d events, %d attempts with a final fact, %d resumptions",
		r.Acked, r.Errored, r.Unknown, r.Events, r.Finals, len(r.Resumptions))
	return r
}

func final(status string) bool {
	return status == events.StatusSuccess || status == events.StatusError || status == events.StatusCancel
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func firstKey(m map[string]bool) string { return keys(m)[0] }

// unfinishedRecords lists the records of the task bucket that are not
// final: after the load drained, each is a task that will never run or
// never finish.
func unfinishedRecords(t *testing.T, b *bus.Bus) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv, err := b.JetStream().KeyValue(ctx, bus.BucketTasks)
	if err != nil {
		t.Fatalf("task bucket: %v", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatalf("listing task records: %v", err)
	}
	var out []string
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("task record %s: %v", k, err)
		}
		var task events.Task
		if err := json.Unmarshal(e.Value(), &task); err != nil {
			out = append(out, fmt.Sprintf("%s: %v", k, err))
			continue
		}
		if !final(task.Status) {
			out = append(out, fmt.Sprintf("%s %s (%s)", task.ID, task.Status, task.UpdatedAt.Format(time.RFC3339)))
		}
	}
	return out
}

// checkProjection waits for the live projection at path to reach the end
// of the log, then compares it with a projection rebuilt from sequence 1
// to the same point.
func checkProjection(t *testing.T, b *bus.Bus, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	live, err := projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening the live projection: %v", err)
	}
	defer live.Close()
	// The workers still write (process facts, janitors): the live file may
	// move past the sequence a rebuild was made to. Compare only at the
	// same sequence, rebuilding again until the two meet.
	compared := false
	deadline := time.Now().Add(3 * time.Minute)
	for !compared {
		if time.Now().After(deadline) {
			t.Errorf("the live projection never stood at the sequence of a rebuild for long enough to compare them")
			break
		}
		var end uint64
		waitFor(t, 2*time.Minute, "the live projection to reach the end of the log", func() bool {
			info, err := b.EventStream().Info(ctx)
			if err != nil {
				return false
			}
			end = info.State.LastSeq
			seq, err := live.LastSeq(ctx)
			return err == nil && seq == end
		})
		rebuilt := filepath.Join(t.TempDir(), "rebuilt.db")
		if _, err := projections.Build(ctx, b, rebuilt, &projections.BuildConfig{To: end}); err != nil {
			t.Fatalf("rebuilding: %v", err)
		}
		rb, err := projections.Open(ctx, rebuilt, &projections.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if seq, _ := live.LastSeq(ctx); seq == end {
			eq, diff, err := projections.Equal(ctx, live, rb)
			if err != nil {
				t.Fatalf("comparing projections: %v", err)
			}
			// Checked before and after: the sequence only grows, so the
			// live file stood at end while Equal read it.
			if seq, _ := live.LastSeq(ctx); seq == end {
				compared = true
				if !eq {
					t.Errorf("the live projection differs from a rebuild: %q; facts only in the live one: %s; only in the rebuilt one: %s",
						diff, factsOnlyIn(t, path, rebuilt), factsOnlyIn(t, rebuilt, path))
				}
			}
		}
		if err := rb.Close(); err != nil {
			t.Fatalf("closing the rebuilt projection: %v", err)
		}
		if !compared {
			t.Logf("the live projection moved past %d while rebuilding; again", end)
		}
	}
	page, err := live.Tasks(ctx, projections.TaskFilter{Status: events.StatusNew, Limit: projections.MaxLimit})
	if err != nil {
		t.Fatalf("projected tasks: %v", err)
	}
	if len(page.Tasks) > 0 {
		var ex []string
		for _, task := range page.Tasks[:min(len(page.Tasks), 5)] {
			ex = append(ex, task.ID)
		}
		t.Errorf("%d tasks stay new in the projection (submitted, never queued), e.g. %s", len(page.Tasks), strings.Join(ex, ", "))
	}
}

// checkNotQueuedUnprojected fails t on every task of the projection at
// path whose kw n is that of a submission that got an error not saying its
// outcome was unknown: such a submission was not queued, so its facts say
// so (storage_add failed) and it is no task of the projection — unless the
// janitor ended the record it left, with reason executor.OrphanReason.
func checkNotQueuedUnprojected(t *testing.T, path string, subs []*submission) {
	t.Helper()
	notQueued := map[int]*submission{}
	for _, s := range subs {
		if s.ID == "" && !s.Unknown && !s.Hung {
			notQueued[s.N] = s
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := projections.Open(ctx, path, &projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening the live projection: %v", err)
	}
	defer db.Close()
	var bad []string
	tasks := 0
	for f := (projections.TaskFilter{Limit: projections.MaxLimit}); ; {
		page, err := db.Tasks(ctx, f)
		if err != nil {
			t.Fatalf("projected tasks: %v", err)
		}
		for _, task := range page.Tasks {
			tasks++
			var kw struct {
				N int `json:"n"`
			}
			if json.Unmarshal(task.KwSubmitted, &kw) != nil || notQueued[kw.N] == nil || task.Reason == executor.OrphanReason {
				continue
			}
			s := notQueued[kw.N]
			bad = append(bad, fmt.Sprintf("n %d (batch %v): %q, yet task %s is %s in the projection", s.N, s.Batch, s.Errs[len(s.Errs)-1], task.ID, task.Status))
		}
		if page.Next == "" {
			break
		}
		f.Cursor = page.Next
	}
	if len(bad) > 0 {
		t.Errorf("%d submissions got an error that did not say the outcome was unknown, yet the projection holds their task, e.g. %s", len(bad), strings.Join(bad[:min(len(bad), 5)], "; "))
	}
	t.Logf("projection: %d tasks, %d of them of the %d submissions not queued", tasks, len(bad), len(notQueued))
}

// logErrors logs the distinct errors clients got (digits masked, so that
// ids and times do not make every message distinct), most frequent first.
func logErrors(t *testing.T, subs []*submission) {
	t.Helper()
	count := map[string]int{}
	for _, s := range subs {
		for _, e := range s.Errs {
			count[maskDigits(e)]++
		}
	}
	msgs := keys(boolSet(count))
	slices.SortFunc(msgs, func(a, b string) int { return count[b] - count[a] })
	for _, m := range msgs[:min(len(msgs), 8)] {
		t.Logf("  error seen %d times: %.300s", count[m], m)
	}
}

func boolSet(m map[string]int) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

func maskDigits(s string) string {
	s = uuidPattern.ReplaceAllString(s, "<id>")
	if strings.HasPrefix(s, "HTTP ") && len(s) > 8 { // keep the status code
		return s[:8] + maskDigits(s[8:])
	}
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return '#'
		}
		return r
	}, s)
}

// factsOnlyIn lists, as ranges, the stream sequences of the facts table of
// the projection at a that the one at b lacks: where a projector skipped
// or invented events.
func factsOnlyIn(t *testing.T, a, b string) string {
	t.Helper()
	seqs := func(path string) map[int64]bool {
		db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.QueryContext(t.Context(), `SELECT seq FROM facts`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[int64]bool{}
		for rows.Next() {
			var s int64
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out[s] = true
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	inB := seqs(b)
	var only []int64
	for s := range seqs(a) {
		if !inB[s] {
			only = append(only, s)
		}
	}
	slices.Sort(only)
	var ranges []string
	for i := 0; i < len(only); {
		j := i
		for j+1 < len(only) && only[j+1] == only[j]+1 {
			j++
		}
		if i == j {
			ranges = append(ranges, fmt.Sprint(only[i]))
		} else {
			ranges = append(ranges, fmt.Sprintf("%d-%d", only[i], only[j]))
		}
		i = j + 1
	}
	if len(ranges) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d facts, seq %s", len(only), strings.Join(ranges[:min(len(ranges), 20)], ", "))
}
