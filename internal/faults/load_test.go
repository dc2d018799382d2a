package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/executor"
)

const (
	// submitTimeout is the context a client gives each Submit.
	submitTimeout = 20 * time.Second
	// hangLimit is how long past its context a Submit may take before the
	// suite calls it hung (a lost acknowledgement waited for forever).
	hangLimit = submitTimeout + 40*time.Second
	// keyedRetryLimit is how long a client with an idempotency key keeps
	// retrying one submission.
	keyedRetryLimit = 2 * time.Minute
)

// submission is one task a client asked for, and what it was told.
type submission struct {
	N          int    // the task's kw "n": unique in a run
	Key        string // idempotency key; "" for none
	Task       string // add or sleep
	Start, End time.Time
	ID         string   // the task id, once acknowledged
	Errs       []string // the errors Submit returned (a keyed client retries after each)
	Unknown    bool     // some error said the outcome is unknown
	Hung       bool     // a Submit call did not return within hangLimit
	Batch      bool     // submitted in a SubmitMany batch
}

// load is a client submitting tasks at a steady rate from several
// goroutines, as an application would, and recording every answer.
type load struct {
	app        *executor.App
	next       *atomic.Int64
	keyed      bool
	sleepEvery int    // every sleepEvery-th task sleeps 1 s (0: none)
	limit      int    // the last n to submit (0: no limit)
	http       string // submit through this qtasksd's POST /tasks/{name} instead of app
	interval   time.Duration
	stop       chan struct{}
	wg         sync.WaitGroup
	active     atomic.Int32

	// A batch load submits with SubmitMany (batch_test.go).
	batchSizes []int         // the sizes of its batches, in turn
	batches    int           // batches submitted so far (its one goroutine's)
	kick       chan struct{} // a batch now, without waiting for the tick
	inBatch    atomic.Bool   // a SubmitMany call is under way
	started    atomic.Int64  // SubmitMany calls begun
	batchLo    atomic.Int64  // the first n of the batch under way
	batchHi    atomic.Int64  // and its last
	misreports []string      // SubmitMany's error disagreeing with its results

	mu    sync.Mutex
	subs  []*submission
	acked atomic.Int64
}

// startLoad starts the CI scenarios' load: ciSubmitters goroutines
// submitting ciRate tasks a second in all, every ciSleepEvery-th task one
// that sleeps. next numbers the tasks (shared between loads of one run). A keyed
// load gives every task an idempotency key and retries a failed
// submission with it until it is acknowledged; an unkeyed one gives up on
// an error, unless the error says the outcome is unknown: then it retries
// with the key the error names.
func startLoad(app *executor.App, next *atomic.Int64, keyed bool) *load {
	return startLoadUpTo(app, next, ciSubmitters, ciRate, keyed, ciSleepEvery, 0)
}

// startLoadUpTo is startLoad with the load given, stopping once next
// passes limit (0: never).
func startLoadUpTo(app *executor.App, next *atomic.Int64, submitters int, rate float64, keyed bool, sleepEvery, limit int) *load {
	l := newLoad(app, next, submitters, rate, keyed, sleepEvery, limit)
	l.start(submitters)
	return l
}

func newLoad(app *executor.App, next *atomic.Int64, submitters int, rate float64, keyed bool, sleepEvery, limit int) *load {
	return &load{
		app: app, next: next, keyed: keyed, sleepEvery: sleepEvery, limit: limit,
		interval: time.Duration(float64(submitters) / rate * float64(time.Second)), stop: make(chan struct{}),
	}
}

func (l *load) start(submitters int) {
	for range submitters {
		l.wg.Add(1)
		l.active.Add(1)
		go l.run()
	}
}

func (l *load) run() {
	defer l.wg.Done()
	defer l.active.Add(-1)
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		case <-l.kick:
		}
		var ss []*submission
		if l.batchSizes != nil {
			ss = l.submitBatch()
		} else if s := l.submit(); s != nil {
			ss = []*submission{s}
		}
		if len(ss) == 0 {
			return // the run's tasks are all submitted
		}
		l.mu.Lock()
		l.subs = append(l.subs, ss...)
		l.mu.Unlock()
		for _, s := range ss {
			if s.ID != "" {
				l.acked.Add(1)
			}
		}
		if ss[0].Hung {
			return // its call never came back; this client is stuck too
		}
	}
}

func (l *load) submit() *submission {
	n := int(l.next.Add(1))
	if l.limit > 0 && n > l.limit {
		return nil
	}
	s := &submission{N: n, Task: "add", Start: time.Now()}
	kw := map[string]any{"n": n, "a": n, "b": 0}
	if l.sleepEvery > 0 && n%l.sleepEvery == 0 {
		s.Task, kw = "sleep", map[string]any{"n": n, "ms": 1000}
	}
	if l.keyed {
		s.Key = fmt.Sprintf("faults-%d", n)
	}
	for {
		id, hung, err := l.submitOnce(s.Task, kw, s.Key)
		if hung {
			s.Hung = true
			break
		}
		if err == nil {
			s.ID = id
			break
		}
		s.Errs = append(s.Errs, err.Error())
		if key, unknown := outcomeUnknown(err); unknown {
			// The answer says the task may be queued: a careful client
			// settles it with the key the answer names (its own, or the
			// one Submit gave the task).
			s.Unknown = true
			if s.Key == "" {
				s.Key = key
			}
		} else if !l.keyed {
			break // not queued: an unkeyed client gives up
		}
		if s.Key == "" || time.Since(s.Start) > keyedRetryLimit {
			break
		}
		time.Sleep(100 * time.Millisecond) // a client's pause before it retries
	}
	s.End = time.Now()
	return s
}

// submitOnce calls Submit with its own context; hung reports a call that
// did not return within hangLimit (it is left running).
func (l *load) submitOnce(task string, kw map[string]any, key string) (id string, hung bool, err error) {
	if l.http != "" {
		return l.post(task, kw, key)
	}
	type result struct {
		id  string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), submitTimeout)
		defer cancel()
		t, err := l.app.Submit(ctx, task, kw, &executor.SubmitOptions{IdempotencyKey: key})
		ch <- result{t.ID, err}
	}()
	timer := time.NewTimer(hangLimit)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.id, false, r.err
	case <-timer.C:
		return "", true, nil
	}
}

// post submits through qtasksd's HTTP API, with the key as
// Idempotency-Key. An answer other than 201 (the task made) or 200 (the
// key's task existed: a retry whose first try got through) is an error
// "HTTP <code>: body".
func (l *load) post(task string, kw map[string]any, key string) (id string, hung bool, err error) {
	body, err := json.Marshal(kw)
	if err != nil {
		return "", false, err
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://"+l.http+"/tasks/"+task, bytes.NewReader(body))
	if err != nil {
		return "", false, err
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	cl := http.Client{Timeout: hangLimit}
	resp, err := cl.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
			return "", true, nil
		}
		return "", false, err // qtasksd itself unreachable: nothing was sent
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", false, &httpError{resp.StatusCode, strings.TrimSpace(string(b)), resp.Header}
	}
	var t events.Task
	if err := json.Unmarshal(b, &t); err != nil {
		return "", false, fmt.Errorf("HTTP %d with a body that is not a task: %w", resp.StatusCode, err)
	}
	return t.ID, false, nil
}

// httpError is an answer of qtasksd's HTTP API other than 201 or 200.
type httpError struct {
	Code   int
	Body   string
	Header http.Header
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body) }

// halt stops the submitters and waits for those whose Submit returns.
func (l *load) halt() {
	close(l.stop)
	l.wg.Wait()
}

// done reports whether every submitter has stopped (limit reached).
func (l *load) done() bool { return l.active.Load() == 0 }

func (l *load) results() []*submission {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.subs)
}

// waitAcked waits until the load has had n more acknowledged submissions
// than when it was called: the system serves again.
func (l *load) waitAcked(tb testing.TB, n int64, limit time.Duration, what string) {
	tb.Helper()
	want := l.acked.Load() + n
	waitFor(tb, limit, fmt.Sprintf("%d more acknowledged submissions (%s)", n, what), func() bool { return l.acked.Load() >= want })
}

// fault is one fault injected, for the report of what users saw.
type fault struct {
	What string
	At   time.Time // when the fault struck
	Back time.Time // when the suite restored what it broke (zero: nothing to restore)
	// Elected is when the suite saw the stream whose leader it killed led
	// again (zero: no leader killed).
	Elected time.Time
}

// seen is what the clients saw around one fault.
type seen struct {
	Fault       fault
	Submissions int           // submissions that ended between this fault and the next
	Failed      int           // of those, how many got an error at least once
	ErrorsFor   time.Duration // from the fault to the end of the last failed submission
	Slowest     time.Duration // the longest Submit, retries included
	P50         time.Duration
	HealthDown  time.Duration // how long the worker's /healthz did not answer 200
}

// observe sums up, fault by fault, what the clients saw.
func observe(faults []fault, subs []*submission, health []healthSample) []seen {
	sort.Slice(subs, func(i, j int) bool { return subs[i].End.Before(subs[j].End) })
	var out []seen
	for i, f := range faults {
		end := time.Now().Add(time.Hour)
		if i+1 < len(faults) {
			end = faults[i+1].At
		}
		s := seen{Fault: f}
		var lat []time.Duration
		for _, sub := range subs {
			if sub.End.Before(f.At) || !sub.End.Before(end) {
				continue
			}
			s.Submissions++
			d := sub.End.Sub(sub.Start)
			lat = append(lat, d)
			s.Slowest = max(s.Slowest, d)
			if len(sub.Errs) > 0 || sub.Hung {
				s.Failed++
				s.ErrorsFor = max(s.ErrorsFor, sub.End.Sub(f.At))
			}
		}
		for i, h := range health {
			if !h.OK && !h.At.Before(f.At) && h.At.Before(end) && i+1 < len(health) {
				s.HealthDown += health[i+1].At.Sub(h.At)
			}
		}
		if len(lat) > 0 {
			slices.Sort(lat)
			s.P50 = lat[len(lat)/2]
		}
		out = append(out, s)
	}
	return out
}

func logSeen(tb testing.TB, ss []seen) {
	tb.Helper()
	tb.Logf("what clients saw, fault by fault (submissions ending before the next fault):")
	for _, s := range ss {
		back := ""
		if !s.Fault.Back.IsZero() {
			back = fmt.Sprintf(", restored after %v", s.Fault.Back.Sub(s.Fault.At).Round(100*time.Millisecond))
		}
		tb.Logf("  %-40s submissions %5d, failed %4d, errors for %6v, slowest submit %6v, p50 %v, /healthz not 200 for %v%s",
			s.Fault.What, s.Submissions, s.Failed, s.ErrorsFor.Round(100*time.Millisecond),
			s.Slowest.Round(10*time.Millisecond), s.P50.Round(time.Millisecond), s.HealthDown.Round(100*time.Millisecond), back)
	}
}

// healthSample is one poll of a worker's /healthz.
type healthSample struct {
	At time.Time
	OK bool
}

// healthWatch polls a worker's /healthz through a run, to set what it
// answered beside what clients saw.
type healthWatch struct {
	mu   sync.Mutex
	s    []healthSample
	done chan struct{}
	wg   sync.WaitGroup
}

func watchHealth(w *worker) *healthWatch {
	h := &healthWatch{done: make(chan struct{})}
	h.wg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			ok := w.healthy()
			h.mu.Lock()
			h.s = append(h.s, healthSample{time.Now(), ok})
			h.mu.Unlock()
			select {
			case <-h.done:
				return
			case <-tick.C:
			}
		}
	})
	return h
}

func (h *healthWatch) stop() {
	select {
	case <-h.done:
	default:
		close(h.done)
	}
	h.wg.Wait()
}

func (h *healthWatch) samples() []healthSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.s)
}
