package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// DefaultLimitLease is Limit.Lease's default.
const DefaultLimitLease = 30 * time.Second

// MaxLimitConcurrency bounds Limit.Concurrency: a waiting task reads every
// slot of its limit each time one frees.
const MaxLimitConcurrency = 1024

// Limit bounds, across every worker of the cluster, how many tasks of a
// task name or of a queue run at once and how often they start. Every app
// that runs such tasks must set the same limit (SetLimit): the limit's
// slots and rate are kept in JetStream KV (bus.BucketLimits), its
// definition is each app's.
//
// A task held back waits inside its run, after its intake triggers and
// before its function is called, in status process, occupying one of its
// worker's Concurrency slots; the wait counts toward its MaxTime. It waits
// on a KV watch of the limit's slots (a freed slot wakes it) or a timer to
// its next rate tick, never polling.
type Limit struct {
	// Task names the task limited; Queue the queue every task of which is
	// limited. Exactly one is set; it must pass events.ValidName.
	Task  string
	Queue string
	// Concurrency is how many may run at once cluster-wide; 0: no bound.
	Concurrency int
	// Rate is how many may start per second cluster-wide; 0: no bound.
	// Burst is how many may start at once after a quiet spell. Defaults
	// to 1.
	Rate  float64
	Burst int
	// Lease is how long a running task's slot stays taken when its worker
	// stops renewing it (a crash): then another task takes it. Renewed
	// every Lease/3. Defaults to DefaultLimitLease; at least 1s. Slots
	// expire by the holders' clocks: keep them within a fraction of Lease.
	Lease time.Duration
}

func (l *Limit) name() string {
	if l.Task != "" {
		return "t-" + l.Task
	}
	return "q-" + l.Queue
}

// ErrNoLimitsBucket is SetLimit's error on a bus without the limits bucket.
var ErrNoLimitsBucket = errors.New("the bus has no limits bucket")

// SetLimit sets (or replaces) the limit of l.Task or l.Queue for the tasks
// this app runs. A limit with neither Concurrency nor Rate removes it.
func (a *App) SetLimit(l Limit) error {
	var errs []error
	if (l.Task == "") == (l.Queue == "") {
		errs = append(errs, errors.New("set exactly one of Task and Queue"))
	}
	if n := l.Task + l.Queue; n != "" && !events.ValidName(n) {
		errs = append(errs, fmt.Errorf("name %q: want letters, digits, - and _, 1 to 64 bytes", n))
	}
	if l.Concurrency < 0 || l.Concurrency > MaxLimitConcurrency {
		errs = append(errs, fmt.Errorf("concurrency %d: want 0 to %d", l.Concurrency, MaxLimitConcurrency))
	}
	if l.Rate < 0 || l.Burst < 0 {
		errs = append(errs, errors.New("rate and burst must not be negative"))
	}
	if l.Burst == 0 {
		l.Burst = 1
	}
	if l.Lease == 0 {
		l.Lease = DefaultLimitLease
	}
	if l.Lease < time.Second {
		errs = append(errs, fmt.Errorf("lease %v: at least 1s", l.Lease))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: limit: %w", ErrInvalidInput, err)
	}
	if a.b.LimitsBucket() == nil {
		return ErrNoLimitsBucket
	}
	a.limits.mu.Lock()
	defer a.limits.mu.Unlock()
	if a.limits.m == nil {
		a.limits.m = map[string]Limit{}
	}
	if l.Concurrency == 0 && l.Rate == 0 {
		delete(a.limits.m, l.name())
	} else {
		a.limits.m[l.name()] = l
	}
	return nil
}

// limits are an app's limits, by Limit.name.
type limits struct {
	mu sync.RWMutex
	m  map[string]Limit
}

// limited wraps run so that it waits for its task's limits first.
func (a *App) limited(run taskFunc) taskFunc {
	return func(ctx context.Context, args, kw json.RawMessage) (json.RawMessage, []json.RawMessage, error) {
		release, err := a.acquireLimits(ctx)
		if err != nil {
			return nil, nil, err
		}
		defer release()
		return run(ctx, args, kw)
	}
}

// acquireLimits waits for the limits of the task running in ctx: a slot of
// each concurrency limit, then a start of each rate limit. release frees
// the slots.
func (a *App) acquireLimits(ctx context.Context) (release func(), err error) {
	tc := TaskFromContext(ctx)
	a.limits.mu.RLock()
	if tc == nil || len(a.limits.m) == 0 {
		a.limits.mu.RUnlock()
		return func() {}, nil
	}
	var ls []Limit
	for _, n := range []string{"t-" + tc.Name, "q-" + tc.Queue} {
		if l, ok := a.limits.m[n]; ok {
			ls = append(ls, l)
		}
	}
	a.limits.mu.RUnlock()
	var held []*slot
	release = func() {
		for _, s := range held {
			s.release()
		}
	}
	holder := tc.ID + "#" + strconv.Itoa(tc.Attempt) + "#" + strconv.Itoa(tc.Run)
	var waits []events.LimitWait
	for _, l := range ls {
		if l.Concurrency == 0 {
			continue
		}
		s, lw, err := a.takeSlot(ctx, l, holder)
		if err != nil {
			release()
			return nil, err
		}
		held = append(held, s)
		if lw != nil {
			waits = append(waits, *lw)
		}
	}
	for _, l := range ls {
		if l.Rate == 0 {
			continue
		}
		lw, err := a.takeStart(ctx, l)
		if err != nil {
			release()
			return nil, err
		}
		if lw != nil {
			waits = append(waits, *lw)
		}
	}
	for _, lw := range waits {
		if err := a.recordLimit(ctx, tc, lw); err != nil {
			release()
			return nil, err
		}
	}
	return release, nil
}

// recordLimit writes the limit event of a run that waited for lw (or took
// over a crashed worker's slot).
func (a *App) recordLimit(ctx context.Context, tc *TaskContext, lw events.LimitWait) error {
	if err := lw.Check(); err != nil {
		return err
	}
	data, err := json.Marshal(lw)
	if err != nil {
		return err
	}
	id := "limit:" + tc.ID + ":" + strconv.Itoa(tc.Attempt) + ":" + strconv.Itoa(tc.Run) + ":" + lw.Limit + ":" + lw.Kind
	ev := events.Event{
		ID: id, Source: a.source, Type: events.TypeLimit, Subject: lw.Limit, Time: a.cfg.Now().UTC(),
		DataContentType: events.ContentTypeJSON, Data: data,
		TaskID: tc.ID, TaskName: tc.Name, Attempt: tc.Attempt, Run: tc.Run,
	}
	if _, err := a.b.Publish(ctx, events.LimitSubject(tc.Queue), "", &ev); err != nil {
		return fmt.Errorf("recording the wait for limit %s: %w", lw.Limit, err)
	}
	return nil
}

// slotValue is a taken slot: who holds it, until when unless renewed.
type slotValue struct {
	Holder  string `json:"holder"`
	Node    string `json:"node"`
	Expires int64  `json:"expires"` // unix nanoseconds
}

// slot is a concurrency slot this app holds.
type slot struct {
	kv   jetstream.KeyValue
	key  string
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	rev  uint64
}

func slotKey(l Limit, i int) string { return "c." + l.name() + "." + strconv.Itoa(i) }

// takeSlot waits for a free (or expired) slot of l and takes it. lw is
// what to record of it: nil when a free slot was taken at once.
func (a *App) takeSlot(ctx context.Context, l Limit, holder string) (s *slot, lw *events.LimitWait, err error) {
	kv := a.b.LimitsBucket()
	begun, waited, tookOver := a.cfg.Now(), false, ""
	// Watch before looking, so that a slot freed in between wakes us.
	w, err := kv.Watch(ctx, "c."+l.name()+".*", jetstream.UpdatesOnly())
	if err != nil {
		return nil, nil, fmt.Errorf("watching the slots of limit %s: %w", l.name(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		now := a.cfg.Now()
		val := func() []byte {
			b, _ := json.Marshal(slotValue{Holder: holder, Node: a.cfg.NodeID, Expires: now.Add(l.Lease).UnixNano()}) //nolint:errchkjson // strings and an integer always encode
			return b
		}
		earliest := time.Time{}
		for i := range l.Concurrency {
			k := slotKey(l, i)
			e, err := a.b.GetLimit(ctx, k)
			var rev uint64
			switch {
			case err != nil:
				return nil, nil, fmt.Errorf("reading slot %s: %w", k, err)
			case e == nil:
				rev, err = kv.Create(ctx, k, val())
			default:
				sv, ok := decodeSlot(e)
				if !ok {
					// No executor wrote it (bus.GetLimit): a lease taken
					// when it was stored, which is no earlier than any
					// lease it replaced could end.
					a.log.WarnContext(ctx, "a limit slot holds no lease an executor wrote", "slot", k, "revision", e.Revision, "refused", e.Refused)
					sv = slotValue{Expires: e.Stored.Add(l.Lease).UnixNano()}
				}
				exp := time.Unix(0, sv.Expires)
				if exp.After(now) {
					if earliest.IsZero() || exp.Before(earliest) {
						earliest = exp
					}
					continue
				}
				// Its holder stopped renewing it: a crashed worker's.
				a.log.WarnContext(ctx, "taking over an expired limit slot", "slot", k, "holder", sv.Holder, "holder_node", sv.Node)
				rev, err = kv.Update(ctx, k, val(), e.Revision)
				if err == nil {
					tookOver = sv.Holder
				}
			}
			if err == nil {
				s := &slot{kv: kv, key: k, rev: rev, stop: make(chan struct{}), done: make(chan struct{})}
				go a.renew(s, l, holder) //nolint:gosec // G118: the lease outlives this call, renewed until the slot is released (renew's contexts are its own)
				if waited || tookOver != "" {
					lw = &events.LimitWait{
						Limit: l.name(), Kind: events.LimitConcurrency, Slot: i,
						WaitedMS: a.cfg.Now().Sub(begun).Milliseconds(), TookOver: tookOver,
					}
				}
				return s, lw, nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSeq(err) {
				return nil, nil, fmt.Errorf("taking slot %s: %w", k, err)
			}
			// Another worker took it first.
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !earliest.IsZero() {
			t = time.NewTimer(earliest.Sub(now) + time.Millisecond)
			timer = t.C
		}
		waited = true
		select {
		case <-w.Updates(): // a slot changed: look again
		case <-timer: // a slot's lease ran out
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil, nil, context.Cause(ctx)
		}
	}
}

func isWrongSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// renew extends s's lease every Lease/3 until it is released.
func (a *App) renew(s *slot, l Limit, holder string) {
	defer close(s.done)
	t := time.NewTicker(l.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		b, _ := json.Marshal(slotValue{Holder: holder, Node: a.cfg.NodeID, Expires: a.cfg.Now().Add(l.Lease).UnixNano()}) //nolint:errchkjson // strings and an integer always encode
		ctx, cancel := context.WithTimeout(context.Background(), l.Lease/3)
		s.mu.Lock()
		rev, err := s.kv.Update(ctx, s.key, b, s.rev)
		if err == nil {
			s.rev = rev
		}
		s.mu.Unlock()
		cancel()
		if err != nil {
			// Taken over (our lease ran out) or unreachable: the limit may
			// be exceeded for the rest of this run.
			a.log.Warn("renewing a limit slot failed", "slot", s.key, "err", err)
		}
	}
}

// release frees s, unless another took it over.
func (s *slot) release() {
	close(s.stop)
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.kv.Delete(ctx, s.key, jetstream.LastRevision(s.rev))
}

// decodeSlot reads a slot's value as an executor writes it: a holder, its
// node and the lease's end; false for anything else.
func decodeSlot(e *bus.LimitEntry) (slotValue, bool) {
	var sv slotValue
	if e.Refused != nil || json.Unmarshal(e.Value, &sv) != nil || sv.Holder == "" || sv.Node == "" || sv.Expires == 0 {
		return slotValue{}, false
	}
	return sv, true
}

// rateCell is a rate limit's state: the theoretical arrival time of the
// next start (GCRA).
type rateCell struct {
	TAT int64 `json:"tat"` // unix nanoseconds
}

// takeStart waits until l's rate allows a start and takes it: the generic
// cell rate algorithm on one KV key, updated by compare-and-set. lw is
// what to record: nil when the start was taken at once.
func (a *App) takeStart(ctx context.Context, l Limit) (lw *events.LimitWait, err error) {
	kv := a.b.LimitsBucket()
	begun, waited := a.cfg.Now(), false
	k := "r." + l.name()
	interval := time.Duration(float64(time.Second) / l.Rate)
	tau := interval * time.Duration(l.Burst-1)
	for {
		now := a.cfg.Now()
		var cell rateCell
		var rev uint64
		e, err := a.b.GetLimit(ctx, k)
		switch {
		case err != nil:
			return nil, fmt.Errorf("reading rate %s: %w", k, err)
		case e == nil:
		default:
			rev = e.Revision
			if e.Refused != nil || json.Unmarshal(e.Value, &cell) != nil || cell.TAT == 0 {
				// No executor wrote it (bus.GetLimit): a cell that took a
				// start when it was stored with the burst spent, no
				// earlier than the one it replaced.
				a.log.WarnContext(ctx, "a rate cell holds no cell an executor wrote", "rate", k, "revision", e.Revision, "refused", e.Refused)
				cell = rateCell{TAT: e.Stored.Add(tau + interval).UnixNano()}
			}
		}
		tat := time.Unix(0, cell.TAT)
		if tat.Before(now) {
			tat = now
		}
		if wait := tat.Sub(now) - tau; wait > 0 {
			waited = true
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return nil, context.Cause(ctx)
			}
		}
		b, _ := json.Marshal(rateCell{TAT: tat.Add(interval).UnixNano()}) //nolint:errchkjson // an integer always encodes
		if rev == 0 {
			_, err = kv.Create(ctx, k, b)
		} else {
			_, err = kv.Update(ctx, k, b, rev)
		}
		if err == nil {
			if waited {
				lw = &events.LimitWait{Limit: l.name(), Kind: events.LimitRate, WaitedMS: a.cfg.Now().Sub(begun).Milliseconds()}
			}
			return lw, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSeq(err) {
			return nil, fmt.Errorf("taking a start of rate %s: %w", k, err)
		}
		// Another start came first: look again.
	}
}
