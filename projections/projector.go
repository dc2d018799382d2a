package projections

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/internal/flock"
)

// Defaults of ProjectorConfig.
const (
	// DefaultBatchSize bounds the events of one transaction.
	DefaultBatchSize = 500
	// DefaultBatchWait bounds how long a batch waits to fill up.
	DefaultBatchWait = 50 * time.Millisecond
	// DefaultSwapCheck is how often an idle projector checks whether a
	// rebuild swapped its database file.
	DefaultSwapCheck = time.Second
	// DefaultAckWait is the consumer's ack wait: a batch not acknowledged
	// this long is delivered again (and skipped, if it was committed).
	DefaultAckWait = 30 * time.Second
	// DefaultInactiveThreshold removes the durable consumer of a projector
	// that has not run for this long; a projector recreates it on start.
	DefaultInactiveThreshold = 72 * time.Hour
)

// ProjectorConfig configures a Projector.
type ProjectorConfig struct {
	// Path of the database. Required.
	Path string
	// Durable is the name of the projector's JetStream consumer. Defaults
	// to DurableName(Path).
	Durable string
	// BatchSize bounds the events applied in one transaction. Defaults to
	// DefaultBatchSize.
	BatchSize int
	// BatchWait bounds how long a batch waits for more events once it has
	// one. Defaults to DefaultBatchWait.
	BatchWait time.Duration
	// SwapCheck is how often an idle projector checks for a swapped
	// database file. Defaults to DefaultSwapCheck.
	SwapCheck time.Duration
	// AckWait of the consumer. Defaults to DefaultAckWait.
	AckWait time.Duration
	// Logger defaults to the bus's logger.
	Logger *slog.Logger
	// OnBatch, when set, is called after each committed batch, on the
	// projector's goroutine.
	OnBatch func(ApplyStats)
}

func (c *ProjectorConfig) withDefaults(b *bus.Bus) error {
	if c.Path == "" {
		return errors.New("projector config: Path is required")
	}
	if c.Durable == "" {
		c.Durable = DurableName(c.Path)
	}
	if !events.ValidToken(c.Durable) {
		return fmt.Errorf("projector config: durable %q is not a valid consumer name", c.Durable)
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchWait <= 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.SwapCheck <= 0 {
		c.SwapCheck = DefaultSwapCheck
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.Logger == nil {
		c.Logger = b.Logger()
	}
	return nil
}

// DurableName is the default consumer name of the projector of the database
// at path on this host: "qtasks-projection-" and a hash of host and absolute
// path. Each projection database has its own consumer, so that several
// daemons on one NATS server each see every event.
func DurableName(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte(host + "\x00" + abs))
	return "qtasks-projection-" + hex.EncodeToString(sum[:6])
}

// Projector keeps a projection database up to date with the event log: a
// durable JetStream consumer whose events it applies in stream order, in
// batched transactions that store the last applied sequence with the rows.
//
// The database, not the consumer, is the truth about the position: on start
// (and after a rebuild swapped the file) the projector recreates its
// consumer to deliver from the stored sequence + 1. One projector writes a
// database at a time (an advisory lock on Path + ".lock").
type Projector struct {
	b   *bus.Bus
	cfg ProjectorConfig
	log *slog.Logger

	mu      sync.Mutex
	started bool
	stopped chan struct{}
	cancel  context.CancelFunc
	err     error

	db      *DB
	lock    *flock.Lock
	applied atomic.Uint64
	notify  atomic.Pointer[chan struct{}]
}

// NewProjector returns a projector of the database cfg.Path fed by b.
func NewProjector(b *bus.Bus, cfg ProjectorConfig) (*Projector, error) {
	if err := cfg.withDefaults(b); err != nil {
		return nil, err
	}
	p := &Projector{b: b, cfg: cfg, log: cfg.Logger.With("component", "projector", "db", cfg.Path), stopped: make(chan struct{})}
	ch := make(chan struct{})
	p.notify.Store(&ch)
	return p, nil
}

// Start opens (creating or migrating) the database, takes its lock and
// starts consuming. It returns once the projector is consuming; ctx bounds
// only the start-up.
func (p *Projector) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("projector already started")
	}
	if err := os.MkdirAll(filepath.Dir(p.cfg.Path), 0o750); err != nil {
		return fmt.Errorf("starting projector: %w", err)
	}
	lock, err := lockFile(p.cfg.Path + ".lock")
	if err != nil {
		return fmt.Errorf("starting projector: %w", err)
	}
	db, err := p.open(ctx)
	if err != nil {
		_ = lock.Release()
		return fmt.Errorf("starting projector: %w", err)
	}
	s, err := p.session(ctx, db)
	if err != nil {
		_ = db.Close()
		_ = lock.Release()
		return fmt.Errorf("starting projector: %w", err)
	}
	p.db, p.lock, p.started = db, lock, true
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.run(runCtx, s)
	p.log.InfoContext(ctx, "projector started", "durable", p.cfg.Durable, "resume_after", p.applied.Load())
	return nil
}

// open opens the database; one that projects another log is rebuilt first:
// one recorded from another stream (another data directory sharing the
// file, or the stream deleted and created anew), or, for a projection that
// records no log identity, one ahead of the log.
func (p *Projector) open(ctx context.Context) (*DB, error) {
	db, err := Open(ctx, p.cfg.Path, &Options{Logger: p.cfg.Logger})
	if err != nil {
		return nil, err
	}
	last, err := db.LastSeq(ctx)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	info, err := p.b.EventStream().Info(ctx)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reading the event log's state: %w", err)
	}
	id, known, err := db.logID(ctx)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	rebuild := func() (*DB, error) {
		if err := db.Close(); err != nil {
			return nil, err
		}
		if _, err := Rebuild(ctx, p.b, p.cfg.Path, &BuildConfig{Logger: p.cfg.Logger}); err != nil {
			return nil, err
		}
		return Open(ctx, p.cfg.Path, &Options{Logger: p.cfg.Logger})
	}
	switch {
	case known && id != logIdentity(info):
		p.log.WarnContext(ctx, "the projection was built from another event log (another data directory's, or a stream created anew); rebuilding it",
			"projected", last, "log_created", info.Created)
		return rebuild()
	case last > info.State.LastSeq:
		p.log.WarnContext(ctx, "the projection is ahead of the event log: it projects another log; rebuilding it",
			"projected", last, "log_last_seq", info.State.LastSeq)
		return rebuild()
	case !known:
		// A new projection, or one from before identities were recorded:
		// it is this log's from now on.
		if err := db.setLogID(ctx, logIdentity(info)); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	if info.State.Msgs > 0 && last+1 < info.State.FirstSeq {
		p.log.WarnContext(ctx, "events the projection has not applied are no longer in the log (limits); it goes on from the first one kept",
			"projected", last, "log_first_seq", info.State.FirstSeq)
	}
	return db, nil
}

// Stop stops consuming, commits the batch in hand, closes the database and
// releases its lock. It is idempotent.
func (p *Projector) Stop(ctx context.Context) error {
	p.mu.Lock()
	if !p.started {
		p.mu.Unlock()
		return nil
	}
	cancel := p.cancel
	p.mu.Unlock()
	cancel()
	select {
	case <-p.stopped:
	case <-ctx.Done():
		return fmt.Errorf("stopping projector: %w", context.Cause(ctx))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stopped is closed when the projector has stopped.
func (p *Projector) Stopped() <-chan struct{} { return p.stopped }

// LastSeq is the stream sequence of the last event applied.
func (p *Projector) LastSeq() uint64 { return p.applied.Load() }

// WaitFor blocks until the projector has applied the event at stream
// sequence seq (or a later one), ctx ends, or the projector stops.
func (p *Projector) WaitFor(ctx context.Context, seq uint64) error {
	for {
		ch := *p.notify.Load()
		if p.applied.Load() >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-p.stopped:
			if p.applied.Load() >= seq {
				return nil
			}
			return errors.New("projector stopped")
		case <-ctx.Done():
			return fmt.Errorf("waiting for the projection to reach sequence %d (at %d): %w", seq, p.applied.Load(), context.Cause(ctx))
		}
	}
}

// CatchUp waits until the projector has applied every event the log holds
// now.
func (p *Projector) CatchUp(ctx context.Context) error {
	info, err := p.b.EventStream().Info(ctx)
	if err != nil {
		return fmt.Errorf("reading the event log's end: %w", err)
	}
	return p.WaitFor(ctx, info.State.LastSeq)
}

func (p *Projector) setApplied(seq uint64) {
	p.applied.Store(seq)
	ch := make(chan struct{})
	old := p.notify.Swap(&ch)
	close(*old)
}

// message is a log message decoded and prepared off the goroutine that
// writes SQLite: its events (the facts of a phase message, or one event
// alone), applied together in one transaction.
type message struct {
	seq uint64
	ps  []Prepared
	d   *bus.Delivery
}

// session is one consumer of the log, from one position in one file.
type session struct {
	it   jetstream.MessagesContext
	ch   chan message
	done chan struct{}
	next uint64 // the stream sequence expected next; owned by loop
}

func (s *session) stop() {
	s.it.Stop()
	for {
		select {
		case <-s.ch: // unblock the reader
		case <-s.done:
			return
		}
	}
}

// session (re)creates the durable consumer to deliver after what db holds.
func (p *Projector) session(ctx context.Context, db *DB) (*session, error) {
	last, err := lastSeq(ctx, db.w)
	if err != nil {
		return nil, err
	}
	js := p.b.JetStream()
	if err := js.DeleteConsumer(ctx, bus.StreamEvents, p.cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("resetting consumer %s: %w", p.cfg.Durable, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:           p.cfg.Durable,
		Description:       "qtasks projection of " + p.cfg.Path,
		AckPolicy:         jetstream.AckAllPolicy,
		AckWait:           p.cfg.AckWait,
		MaxDeliver:        -1,
		MaxAckPending:     max(4*p.cfg.BatchSize, 2000),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: DefaultInactiveThreshold,
	}
	if last > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	}
	cons, err := js.CreateConsumer(ctx, bus.StreamEvents, cc)
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", p.cfg.Durable, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * p.cfg.BatchSize))
	if err != nil {
		return nil, fmt.Errorf("consuming %s: %w", p.cfg.Durable, err)
	}
	s := &session{it: it, ch: make(chan message, 2*p.cfg.BatchSize), done: make(chan struct{}), next: last + 1}
	go p.read(s)
	p.setApplied(last)
	return s, nil
}

// read decodes messages beside the goroutine that writes SQLite.
func (p *Projector) read(s *session) {
	defer close(s.done)
	for {
		m, err := s.it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			p.log.Warn("reading the event log", "err", err)
			continue
		}
		d, err := bus.Deliver(m)
		if err != nil {
			p.log.Error("reading the event log", "err", err)
			continue
		}
		ps := make([]Prepared, len(d.Events))
		for i := range d.Events {
			ps[i] = Prepare(d.Events[i])
		}
		s.ch <- message{seq: d.Seq(), ps: ps, d: d}
	}
}

func (p *Projector) run(ctx context.Context, s *session) {
	defer close(p.stopped)
	err := p.loop(ctx, s)
	p.mu.Lock()
	if p.db != nil {
		err = errors.Join(err, p.db.Close())
		p.db = nil
	}
	if p.lock != nil {
		err = errors.Join(err, p.lock.Release())
		p.lock = nil
	}
	p.err = err
	p.mu.Unlock()
	if err != nil {
		p.log.ErrorContext(ctx, "projector stopped", "err", err)
	} else {
		p.log.InfoContext(ctx, "projector stopped", "last_seq", p.applied.Load())
	}
}

func (p *Projector) loop(ctx context.Context, s *session) error {
	defer func() { s.stop() }()
	batch := make([]Prepared, 0, p.cfg.BatchSize)
	tick := time.NewTicker(p.cfg.SwapCheck)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		batch = batch[:0]
		var last *bus.Delivery
		lost := false // the consumer skipped events the log holds
		// take puts m's events in the batch, or says the session must
		// restart. A message goes whole into one batch.
		take := func(m message) {
			switch seq := m.seq; {
			case seq < s.next: // delivered again: applied or in the batch already
			case seq > s.next && p.skipped(ctx, s.next, seq):
				lost = true
			default:
				batch, last = append(batch, m.ps...), m.d
				s.next = seq + 1
			}
		}
		select {
		case m := <-s.ch:
			take(m)
		case <-tick.C:
			if ns, err := p.reopenIfSwapped(ctx, s); err != nil {
				return err
			} else if ns != nil {
				s = ns
			}
			continue
		case <-ctx.Done():
			return nil
		}
		timer.Reset(p.cfg.BatchWait)
		stopping := false
	fill:
		for len(batch) < p.cfg.BatchSize && !lost {
			select {
			case m := <-s.ch:
				take(m)
			case <-timer.C:
				break fill
			case <-ctx.Done():
				stopping = true
				break fill
			}
		}
		timer.Stop()
		if ns, err := p.reopenIfSwapped(ctx, s); err != nil {
			return err
		} else if ns != nil {
			s = ns // the batch came from the old position; the new session delivers it again
			continue
		}
		if len(batch) > 0 {
			if err := p.commit(ctx, batch); err != nil {
				return err
			}
			_ = last.Ack() // AckAll: acknowledges the whole batch
		}
		if stopping {
			return nil
		}
		if lost {
			// Acknowledging past the hole would lose its events for good:
			// a new consumer delivers from what is committed.
			ns := p.resume(ctx, s)
			if ns == nil {
				return nil
			}
			s = ns
		}
	}
}

// skipped reports whether the events from next up to seq (exclusive) are
// still in the log, so that a consumer delivering seq after next-1 lost
// them: it happens when the consumer's leader changes with messages in
// flight. Events gone from the log (removed by its limits, or deleted) are
// no loss. An error counts as a loss: the session restarts and looks again.
func (p *Projector) skipped(ctx context.Context, next, seq uint64) bool {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st := p.b.EventStream()
	info, err := st.Info(gctx)
	if err != nil {
		return true
	}
	for n := max(next, info.State.FirstSeq); n < seq; n++ {
		_, err := st.GetMsg(gctx, n)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		return true
	}
	return false
}

// resume replaces session s with a new consumer delivering after what the
// database holds, retrying while the cluster is in trouble; nil when ctx
// ends first.
func (p *Projector) resume(ctx context.Context, s *session) *session {
	p.log.WarnContext(ctx, "the event log's consumer skipped events; resuming after the last applied", "last_seq", p.applied.Load(), "next_delivered", s.next)
	s.stop()
	backoff := 100 * time.Millisecond
	for {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ns, err := p.session(sctx, p.db)
		cancel()
		if err == nil {
			return ns
		}
		p.log.ErrorContext(ctx, "resuming the projector's consumer; retrying", "err", err, "backoff", backoff.String())
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// commit applies a batch, retrying while the database fails (a full disk, a
// lock held too long), until ctx ends. On shutdown the batch in hand is
// still committed.
func (p *Projector) commit(ctx context.Context, batch []Prepared) error {
	wctx := context.WithoutCancel(ctx)
	backoff := 100 * time.Millisecond
	for {
		st, err := p.db.ApplyPrepared(wctx, batch)
		if err == nil {
			if st.Applied > 0 {
				p.setApplied(st.LastSeq)
			}
			if st.Rejected > 0 {
				p.log.WarnContext(ctx, "rejected events recorded", "count", st.Rejected, "last_seq", st.LastSeq)
			}
			if p.cfg.OnBatch != nil {
				p.cfg.OnBatch(st)
			}
			return nil
		}
		p.log.ErrorContext(ctx, "applying a batch; retrying", "err", err, "backoff", backoff.String())
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil // not committed: delivered again after a restart
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// reopenIfSwapped switches to the database file that now has the path, when
// a rebuild swapped it, and returns the new session (nil when nothing
// changed).
func (p *Projector) reopenIfSwapped(ctx context.Context, s *session) (*session, error) {
	if !p.db.swapped() {
		return nil, nil //nolint:nilnil // nothing changed, as said
	}
	p.log.InfoContext(ctx, "database file swapped by a rebuild; reopening")
	s.stop()
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	db, err := p.open(octx)
	if err != nil {
		return nil, fmt.Errorf("reopening swapped database: %w", err)
	}
	ns, err := p.session(octx, db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reopening swapped database: %w", err)
	}
	p.mu.Lock()
	old := p.db
	p.db = db
	p.mu.Unlock()
	if err := old.Close(); err != nil {
		p.log.WarnContext(ctx, "closing the old database file", "err", err)
	}
	return ns, nil
}
