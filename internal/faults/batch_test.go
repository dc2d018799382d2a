package faults_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

// The batch loads of the CI scenario submit with SubmitMany as each fault
// strikes: a batch of ciDoomedBatchSizes on its way through the node
// killed (two of SubmitMany's chunks, of 250 and 50, on their way at
// once), one of ciBatchSizes during the election that follows. Every
// ciBatchKeyEvery-th submission of a batch has an idempotency key.
var (
	ciBatchSizes       = []int{100}
	ciDoomedBatchSizes = []int{300}
	// TestServerRestart's, one on its way as the server dies.
	ciRestartBatchSizes = []int{300}
)

const ciBatchKeyEvery = 3

// startBatchLoad starts a client that submits a batch with SubmitMany
// when asked to (batchNow), of sizes in turn, every ciSleepEvery-th task
// one that sleeps. A submission with an error whose outcome is unknown is
// submitted again with the key the error names, as a batch of those, until it is queued or keyedRetryLimit
// passes; any other error means not queued, and is not retried, so that
// the audit holds SubmitMany to it.
func startBatchLoad(app *executor.App, next *atomic.Int64, sizes []int) *load {
	l := &load{
		app: app, next: next, sleepEvery: ciSleepEvery, stop: make(chan struct{}),
		interval:   time.Hour, // no batch but those asked for
		batchSizes: sizes, kick: make(chan struct{}, 1),
	}
	l.start(1)
	return l
}

// batchNow makes the batch load submit a batch now, unless one is under
// way, and waits until one is: a fault injected next strikes a batch in
// flight (or, if the batch is quicker than the fault, right behind it).
func (l *load) batchNow(tb testing.TB) {
	tb.Helper()
	if l.inBatch.Load() {
		return
	}
	was := l.started.Load()
	select {
	case l.kick <- struct{}{}:
	default: // one is asked for already
	}
	waitFor(tb, time.Minute, "a SubmitMany call to begin", func() bool { return l.started.Load() > was })
}

// batchQueueing makes the batch load submit a batch, and waits until the
// server has the first of its task messages (seen through nc): a fault
// injected next strikes the batch between its task messages and their
// acks, where an ack lost leaves a submission's outcome unknown.
func (l *load) batchQueueing(tb testing.TB, nc *nats.Conn) {
	tb.Helper()
	was := l.started.Load()
	seen := make(chan struct{}, 1)
	sub, err := nc.Subscribe(events.SubjectRun+".>", func(m *nats.Msg) {
		var task struct {
			Kw struct {
				N int64 `json:"n"`
			} `json:"kw"`
		}
		if l.started.Load() > was && json.Unmarshal(m.Data, &task) == nil &&
			task.Kw.N >= l.batchLo.Load() && task.Kw.N <= l.batchHi.Load() {
			select {
			case seen <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		tb.Fatalf("watching the task messages: %v", err)
	}
	defer func() { _ = sub.Unsubscribe() }() // the suite's own connection: nothing to lose
	if err := nc.Flush(); err != nil {
		tb.Fatalf("watching the task messages: %v", err)
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
	select {
	case <-seen:
	case <-time.After(time.Minute):
		tb.Fatalf("timed out after 1m0s waiting for a task message of the batch")
	}
}

// submitBatch submits the next batch and settles its unknown outcomes.
func (l *load) submitBatch() []*submission {
	size := l.batchSizes[l.batches%len(l.batchSizes)]
	l.batches++
	first := int(l.next.Add(int64(size))) - size + 1
	l.batchLo.Store(int64(first))
	l.batchHi.Store(int64(first + size - 1))
	subs := make([]*submission, size)
	kws := make([]map[string]any, size)
	reqs := make([]executor.SubmitRequest, 0, size)
	start := time.Now()
	for i := range size {
		n := first + i
		s := &submission{N: n, Task: "add", Start: start, Batch: true}
		kw := map[string]any{"n": n, "a": n, "b": 0}
		if l.sleepEvery > 0 && n%l.sleepEvery == 0 {
			s.Task, kw = "sleep", map[string]any{"n": n, "ms": 1000}
		}
		if i%ciBatchKeyEvery == 0 {
			s.Key = fmt.Sprintf("faults-%d", n)
		}
		subs[i], kws[i] = s, kw
	}
	todo := subs
	for len(todo) > 0 {
		reqs = reqs[:0]
		for _, s := range todo {
			reqs = append(reqs, executor.SubmitRequest{Name: s.Task, Input: kws[s.N-first], Options: &executor.SubmitOptions{IdempotencyKey: s.Key}})
		}
		res, hung := l.submitManyOnce(reqs)
		end := time.Now()
		if hung {
			for _, s := range todo {
				s.Hung, s.End = true, end
			}
			break
		}
		var again []*submission
		for i, s := range todo {
			s.End = end
			r := res[i]
			if r.Err == nil {
				s.ID = r.Task.ID
				continue
			}
			s.Errs = append(s.Errs, r.Err.Error())
			key, unknown := outcomeUnknown(r.Err)
			if unknown {
				// The task may be queued: settled with the key the answer
				// names (its own, or the one SubmitMany gave the task).
				s.Unknown = true
				if s.Key == "" {
					s.Key = key
				}
			}
			// Once unknown, any error of a retry leaves it unknown still.
			if s.Unknown && s.Key != "" && time.Since(s.Start) < keyedRetryLimit {
				again = append(again, s)
			}
		}
		todo = again
		if len(todo) > 0 {
			time.Sleep(100 * time.Millisecond) // a client's pause before it retries
		}
	}
	return subs
}

// submitManyOnce calls SubmitMany with its own context (submitTimeout);
// hung reports a call that did not return within hangLimit (it is left
// running). A call whose error disagrees with its results is recorded in
// l.misreports.
func (l *load) submitManyOnce(reqs []executor.SubmitRequest) (res []executor.SubmitResult, hung bool) {
	type result struct {
		res []executor.SubmitResult
		err error
	}
	ch := make(chan result, 1)
	l.inBatch.Store(true)
	l.started.Add(1)
	defer l.inBatch.Store(false)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), submitTimeout)
		defer cancel()
		res, err := l.app.SubmitMany(ctx, reqs)
		ch <- result{res, err}
	}()
	timer := time.NewTimer(hangLimit)
	defer timer.Stop()
	var r result
	select {
	case r = <-ch:
	case <-timer.C:
		return nil, true
	}
	failed := 0
	for _, x := range r.res {
		if x.Err != nil {
			failed++
		}
	}
	var bad string
	switch {
	case len(r.res) != len(reqs):
		bad = fmt.Sprintf("%d results for %d requests (error %v)", len(r.res), len(reqs), r.err)
	case failed == 0 && r.err != nil:
		bad = fmt.Sprintf("no result failed, yet the error %q", r.err)
	case failed > 0 && !errors.Is(r.err, executor.ErrSomeNotQueued):
		bad = fmt.Sprintf("%d results failed, yet the error %v does not wrap ErrSomeNotQueued", failed, r.err)
	}
	if bad != "" {
		l.mu.Lock()
		l.misreports = append(l.misreports, bad)
		l.mu.Unlock()
	}
	if len(r.res) != len(reqs) {
		// Nothing to read the submissions' fate from: each is hung, as
		// far as the audit can tell.
		return nil, true
	}
	return r.res, false
}

// checkBatches fails t on every SubmitMany answer whose error disagreed
// with its results, and logs what each batch load saw.
func checkBatches(t *testing.T, ls []*load) {
	t.Helper()
	for i, l := range ls {
		l.mu.Lock()
		for _, m := range l.misreports[:min(len(l.misreports), 5)] {
			t.Errorf("SubmitMany misreported a batch: %s", m)
		}
		var acked, unknown, failed int
		for _, s := range l.subs {
			switch {
			case s.ID != "":
				acked++
			case !s.Hung:
				failed++
			}
			if s.Unknown {
				unknown++
			}
		}
		t.Logf("batch load %d: %d SubmitMany calls (retries of unknown outcomes included), %d submissions: %d queued, %d not queued, %d had an unknown outcome at first",
			i, l.started.Load(), len(l.subs), acked, failed, unknown)
		l.mu.Unlock()
	}
}

// checkElectionBatches fails t when a submission of a batch of loads
// submitted during an election (after a fault's kill, before the suite saw the
// stream led again) was refused plainly though the stream was led again
// within half the call's context: SubmitMany must ride out an election as
// Submit does (it used to refuse whole chunks, "not queued", where Submit
// asked again and got through). Fault by fault, it logs the batch's
// refusals beside the Submit calls of subs that began in the same window.
// An election in which no batch began fails too: the check would have
// tested nothing there.
func checkElectionBatches(t *testing.T, loads []*load, faults []fault, subs []*submission) {
	t.Helper()
	var batch []*submission
	for _, l := range loads {
		batch = append(batch, l.results()...)
	}
	in := func(s *submission, f fault) bool { return !s.Start.Before(f.At) && !s.Start.After(f.Elected) }
	for _, f := range faults {
		if f.Elected.IsZero() {
			continue
		}
		var batched, refused, unknown, late int
		var sample string
		for _, s := range batch {
			if !in(s, f) {
				continue
			}
			batched++
			switch {
			case s.Unknown:
				unknown++
			case s.ID == "" && !s.Hung:
				refused++
				sample = strings.Join(s.Errs, "; ")
				if f.Elected.Sub(s.Start) < submitTimeout/2 {
					late++
				}
			}
		}
		var one, failed int
		for _, s := range subs {
			if in(s, f) {
				one++
				if len(s.Errs) > 0 {
					failed++
				}
			}
		}
		t.Logf("%s, led again after %v: SubmitMany %d submissions, %d refused, %d with their outcome unknown; Submit %d submissions, %d with an error at first",
			f.What, f.Elected.Sub(f.At).Round(100*time.Millisecond), batched, refused, unknown, one, failed)
		if late > 0 {
			t.Errorf("%s: %d submissions of a batch refused though the stream was led again within %v of their call: %s",
				f.What, late, submitTimeout/2, sample)
		}
		if batched == 0 {
			t.Errorf("%s: no batch was submitted during the election: the check above tested nothing", f.What)
		}
	}
}
