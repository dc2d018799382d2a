package bus

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// Sealer defaults.
const (
	// DefaultSealEvery is how many messages a seal covers at most.
	DefaultSealEvery = 1000
	// DefaultSealInterval is how long a message waits for a seal at most
	// (while the sealer runs).
	DefaultSealInterval = 10 * time.Second
)

// SealerConfig configures a Sealer.
type SealerConfig struct {
	// Node names the seal subject (events.SealSubject) and the seals'
	// source. Required; a valid subject token.
	Node string
	// Every seals after this many messages. Defaults to DefaultSealEvery;
	// at most events.MaxSealMessages.
	Every int
	// Interval seals the messages waiting once the oldest has waited this
	// long. Defaults to DefaultSealInterval.
	Interval time.Duration
	// Logger defaults to the bus's.
	Logger *slog.Logger
	// Sealed, when set, is called after each seal this sealer writes, with
	// its stream sequence, on the sealer's goroutine.
	Sealed func(seq uint64, s events.Seal)
	// Anomaly, when set, is called (on the sealer's goroutine) with one of
	// the Anomaly* kinds when the sealer meets a seal chain it did not
	// expect: each is also logged as an error.
	Anomaly func(kind string)
}

// Kinds of anomaly a sealer reports (SealerConfig.Anomaly).
const (
	// AnomalySealGone: a seal of the chain is no longer in the log.
	AnomalySealGone = "seal_gone"
	// AnomalyInvalidSeal: a message on the seal subjects is not a valid seal.
	AnomalyInvalidSeal = "invalid_seal"
	// AnomalyFork: a seal does not continue the chain.
	AnomalyFork = "fork"
	// AnomalyMismatch: another sealer's seal does not match the log as this
	// sealer read it.
	AnomalyMismatch = "mismatch"
)

func (c *SealerConfig) withDefaults(b *Bus) error {
	if c.Every == 0 {
		c.Every = DefaultSealEvery
	}
	if c.Interval == 0 {
		c.Interval = DefaultSealInterval
	}
	if c.Logger == nil {
		c.Logger = b.log
	}
	var errs []error
	if !events.ValidToken(c.Node) {
		errs = append(errs, fmt.Errorf("node %q: must be a valid subject token", c.Node))
	}
	if c.Every < 1 || c.Every > events.MaxSealMessages {
		errs = append(errs, fmt.Errorf("seal every %d messages: want 1 to %d", c.Every, events.MaxSealMessages))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("seal interval %v: must not be negative", c.Interval))
	}
	return errors.Join(errs...)
}

// errWrongLastSeq is JetStream's answer to a publish whose expected last
// sequence is not the stream's: another sealer sealed first.
const errWrongLastSeq = 10071

// Sealer writes the seals of the event log (docs/PROTOCOL.md §17): it reads
// every message of QTASKS_EVENTS in order and, every Every messages or
// Interval, publishes a seal covering those read since the last seal. A
// seal is published only if the last message on events.SealSubjects is the
// seal it continues (Nats-Expected-Last-Subject-Sequence with a subject
// filter), so that several qtasksd write one chain: a sealer that loses the
// race adopts the winner's seal and carries on from it.
type Sealer struct {
	b   *Bus
	cfg SealerConfig
	log *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
	flush  chan chan error
	stop   sync.Once
	// covered is the last sequence the chain covers, as this sealer knows
	// it (Covered).
	covered atomic.Uint64

	// State, owned by the run goroutine.
	tipSeq    uint64   // the seal the next one continues; 0: none
	tipDigest [32]byte // its digest
	tipLast   uint64   // the last sequence it covers
	subjLast  uint64   // the last message on SealSubjects, as expected
	ownLast   uint64   // the last seal this sealer wrote
	first     uint64   // first sequence of the pending range; 0: not known yet
	next      uint64   // the sequence expected next
	pending   []events.SealedMsg
	gaps      int
	sealable  bool // pending holds a message other than a seal
	readTo    uint64
}

// StartSealer starts sealing the event log. Stop it with Stop.
func (b *Bus) StartSealer(ctx context.Context, cfg SealerConfig) (*Sealer, error) {
	if err := cfg.withDefaults(b); err != nil {
		return nil, err
	}
	s := &Sealer{b: b, cfg: cfg, log: cfg.Logger.With("component", "sealer"), done: make(chan struct{}), flush: make(chan chan error)}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	from := s.first
	ocfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		ocfg.DeliverPolicy, ocfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	c, err := b.js.OrderedConsumer(ctx, StreamEvents, ocfg)
	if err != nil {
		return nil, fmt.Errorf("starting the sealer: %w", err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("starting the sealer: %w", err)
	}
	// Logged before the goroutines start: they own s from then on.
	s.log.InfoContext(ctx, "sealing the event log", "node", cfg.Node, "every", cfg.Every, "interval", cfg.Interval.String(),
		"continues_seal", s.tipSeq, "from", s.first)
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	msgs := make(chan jetstream.Msg, 256)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || rctx.Err() != nil {
					return
				}
				s.log.WarnContext(ctx, "reading the log to seal it", "err", err)
				select {
				case <-rctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
			select {
			case msgs <- m:
			case <-rctx.Done():
				return
			}
		}
	}()
	go func() {
		defer close(s.done)
		defer it.Stop()
		s.run(rctx, msgs)
	}()
	return s, nil
}

// load finds the seal the chain continues: the last one on SealSubjects.
func (s *Sealer) load(ctx context.Context) error {
	m, err := s.b.events.GetLastMsgForSubject(ctx, events.SealSubjects)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // a new chain, from the first message the stream holds
	}
	if err != nil {
		return fmt.Errorf("reading the last seal: %w", err)
	}
	s.subjLast = m.Sequence
	seal, err := decodeStoredSeal(m)
	if err != nil {
		// Not something this sealer can continue: a new chain starts
		// after it, which verify reports.
		s.log.ErrorContext(ctx, "the last message on the seal subjects is not a valid seal; starting a new chain after it", "seq", m.Sequence, "err", err)
		s.anomaly(AnomalyInvalidSeal)
		s.first = m.Sequence + 1
		s.next = s.first
		// The reader starts after it: what Flush waits to have read is
		// read up to here (a Flush waited for ever for this message).
		s.readTo = m.Sequence
		return nil
	}
	s.adopt(m.Sequence, seal)
	return nil
}

// decodeStoredSeal reads the seal stored as m, as verify does: not an echo
// of a direct get (events.CheckNotEcho: any plugin can have the server
// write one on the seal subjects), and covering only messages stored
// before it. The seal a sealer adopts decides what it seals next: one whose
// range ended far ahead of the log stopped all sealing, and made Flush
// wait for ever.
func decodeStoredSeal(m *jetstream.RawStreamMsg) (events.Seal, error) {
	if err := events.CheckNotEcho(events.Headers(m.Header)); err != nil {
		return events.Seal{}, err
	}
	seal, err := events.DecodeSeal(m.Data)
	if err == nil && seal.Last >= m.Sequence {
		err = fmt.Errorf("%w: seal %d covers [%d, %d], which does not end before it", events.ErrInvalidEvent, m.Sequence, seal.First, seal.Last)
	}
	return seal, err
}

func (s *Sealer) anomaly(kind string) {
	if s.cfg.Anomaly != nil {
		s.cfg.Anomaly(kind)
	}
}

// Covered is the last stream sequence the seal chain covers, as far as
// this sealer knows: the log after it is not sealed yet. 0 before the
// first seal.
func (s *Sealer) Covered() uint64 { return s.covered.Load() }

// adopt makes seal (at seq) the tip of the chain.
func (s *Sealer) adopt(seq uint64, seal events.Seal) {
	s.covered.Store(seal.Last)
	d, _ := hex.DecodeString(seal.Digest)
	s.tipSeq, s.tipLast = seq, seal.Last
	copy(s.tipDigest[:], d)
	s.first, s.next = seal.Last+1, seal.Last+1
	i := 0
	for i < len(s.pending) && s.pending[i].Seq <= seal.Last {
		i++
	}
	s.pending = append(s.pending[:0], s.pending[i:]...)
	s.gaps, s.sealable = 0, false
	if len(s.pending) > 0 {
		// Recount what remains: the gaps between the messages kept.
		prev := s.first - 1
		for _, p := range s.pending {
			if p.Seq > prev+1 {
				s.gaps++
			}
			prev = p.Seq
		}
		s.sealable = true // conservatively: a seal of what remains is harmless
	}
}

func (s *Sealer) run(ctx context.Context, msgs <-chan jetstream.Msg) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	arm := func() {
		if !armed && s.sealable {
			timer.Reset(s.cfg.Interval)
			armed = true
		}
	}
	var flushes []chan error
	var flushTo uint64
	answer := func(err error) {
		for _, f := range flushes {
			f <- err
		}
		flushes = nil
	}
	for {
		if len(flushes) > 0 && s.readTo >= flushTo {
			answer(s.seal(ctx))
		}
		select {
		case <-ctx.Done():
			answer(context.Cause(ctx))
			return
		case f := <-s.flush:
			// The last message present, not the stream's last sequence:
			// that one may have been deleted, and would never be read.
			// (Asked for ">", the server answers with the message at the
			// last sequence, or not found when it was deleted.)
			last, err := s.b.events.GetLastMsgForSubject(ctx, events.SubjectRoot+".>")
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				f <- nil // an empty log
				continue
			}
			if err != nil {
				f <- fmt.Errorf("reading the log's last message: %w", err)
				continue
			}
			flushes = append(flushes, f)
			flushTo = max(flushTo, last.Sequence)
		case m, ok := <-msgs:
			if !ok {
				answer(errors.New("the sealer's reader stopped"))
				return
			}
			md, err := m.Metadata()
			if err != nil {
				s.log.WarnContext(ctx, "sealing: message without metadata", "err", err)
				continue
			}
			s.add(md.Sequence.Stream, m)
			if len(s.pending) >= s.cfg.Every || s.gaps >= events.MaxSealGaps {
				if err := s.seal(ctx); err != nil {
					s.log.WarnContext(ctx, "sealing", "err", err)
				}
			}
			if armed && !s.sealable {
				timer.Stop()
				armed = false
			}
			arm()
		case <-timer.C:
			armed = false
			if s.sealable {
				if err := s.seal(ctx); err != nil {
					s.log.WarnContext(ctx, "sealing", "err", err)
				}
			}
			arm()
		}
	}
}

// add takes the next message read.
func (s *Sealer) add(seq uint64, m jetstream.Msg) {
	s.readTo = max(s.readTo, seq)
	if seq < s.first {
		return // covered by a seal adopted since it was read
	}
	if s.first == 0 {
		s.first, s.next = seq, seq // a new chain: from the first message
	}
	if seq < s.next {
		return // delivered again (an ordered consumer recreated): already taken
	}
	if seq > s.next {
		s.gaps++
	}
	s.next = seq + 1
	s.pending = append(s.pending, events.SealedMsg{Seq: seq, Hash: events.MsgHash(seq, m.Subject(), events.Headers(m.Headers()), m.Data())})
	if !isSeal(m.Subject()) {
		s.sealable = true
	}
}

func isSeal(subject string) bool {
	return len(subject) > len(events.SubjectSeal)+1 && subject[:len(events.SubjectSeal)+1] == events.SubjectSeal+"."
}

// seal publishes the seal of the pending messages. When another sealer
// sealed first, it continues that seal's chain and tries again with what
// is left.
func (s *Sealer) seal(ctx context.Context) error {
	for range 3 {
		again, err := s.sealOnce(ctx)
		if err != nil || !again {
			return err
		}
	}
	return nil
}

func (s *Sealer) sealOnce(ctx context.Context) (again bool, err error) {
	if len(s.pending) == 0 || !s.sealable {
		return false, nil
	}
	last := s.pending[len(s.pending)-1].Seq
	seal, err := events.NewSeal(s.tipSeq, s.tipDigest, s.first, last, s.pending)
	if err != nil {
		return false, err
	}
	data, err := json.Marshal(seal)
	if err != nil {
		return false, err
	}
	ev := events.Event{
		ID: uuid.NewString(), Source: "qtasks/" + s.cfg.Node, Type: events.TypeSeal, Time: time.Now().UTC(),
		DataContentType: events.ContentTypeJSON, Data: data,
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := s.b.js.PublishMsg(pctx, Message(events.SealSubject(s.cfg.Node), "", &ev),
		jetstream.WithExpectLastSequenceForSubject(s.subjLast, events.SealSubjects))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errWrongLastSeq {
		return true, s.resync(ctx)
	}
	if err != nil {
		return false, fmt.Errorf("publishing a seal: %w", err)
	}
	s.subjLast, s.ownLast = ack.Sequence, ack.Sequence
	s.adopt(ack.Sequence, seal)
	s.log.DebugContext(ctx, "sealed", "seq", ack.Sequence, "first", seal.First, "last", seal.Last, "count", seal.Count)
	if s.cfg.Sealed != nil {
		s.cfg.Sealed(ack.Sequence, seal)
	}
	return false, nil
}

// resync follows the last message on the seal subjects after a publish was
// refused because it is not the one this sealer expected.
func (s *Sealer) resync(ctx context.Context) error {
	m, err := s.b.events.GetLastMsgForSubject(ctx, events.SealSubjects)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Aged out under the stream's limits (an idle log), or deleted:
		// the next seal names the one it continues either way.
		s.log.WarnContext(ctx, "no seal left in the event log; continuing the chain from the last one known", "seal", s.tipSeq)
		s.subjLast = 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the last seal: %w", err)
	}
	s.subjLast = m.Sequence
	seal, derr := decodeStoredSeal(m)
	switch {
	case m.Sequence < s.tipSeq || m.Sequence < s.ownLast:
		// A seal of the chain is gone: the next seal still names it, and
		// verify reports it.
		s.log.ErrorContext(ctx, "a seal is gone from the event log", "seal", max(s.tipSeq, s.ownLast), "last_on_subject", m.Sequence)
		s.anomaly(AnomalySealGone)
	case derr != nil:
		s.log.ErrorContext(ctx, "a message on the seal subjects is not a valid seal; the chain skips it", "seq", m.Sequence, "err", derr)
		s.anomaly(AnomalyInvalidSeal)
	case seal.PrevSeq < s.tipSeq || seal.PrevSeq == s.tipSeq && seal.First != s.first:
		// Not a continuation of this chain: a fork, or a forgery. verify
		// reports it; the chain goes on from its own tip.
		s.log.ErrorContext(ctx, "a seal does not continue the chain; the chain skips it", "seq", m.Sequence, "prev_seq", seal.PrevSeq, "tip", s.tipSeq)
		s.anomaly(AnomalyFork)
	default:
		// Another sealer sealed first: check what can be checked, and
		// carry on from its seal.
		if seal.PrevSeq == s.tipSeq && seal.Last <= s.readTo {
			var hs [][32]byte
			for _, p := range s.pending {
				if p.Seq <= seal.Last {
					hs = append(hs, p.Hash)
				}
			}
			prev := s.tipDigest
			if seal.PrevSeq == 0 {
				prev = [32]byte{}
			}
			if d := events.SealDigest(prev, seal.PrevSeq, seal.First, seal.Last, hs); hex.EncodeToString(d[:]) != seal.Digest {
				s.log.ErrorContext(ctx, "another seal does not match the log as this sealer read it", "seq", m.Sequence)
				s.anomaly(AnomalyMismatch)
			}
		}
		s.log.DebugContext(ctx, "another sealer sealed first; continuing its chain", "seq", m.Sequence, "last", seal.Last)
		s.adopt(m.Sequence, seal)
	}
	return nil
}

// Flush seals every message the log held when Flush was called, waiting
// until the sealer has read them (qtasksd calls it before it stops, so that
// its last facts are sealed).
func (s *Sealer) Flush(ctx context.Context) error {
	f := make(chan error, 1)
	select {
	case s.flush <- f:
	case <-s.done:
		return errors.New("the sealer has stopped")
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	select {
	case err := <-f:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Stop stops the sealer and waits for it. Messages not yet sealed wait for
// the next sealer to run (call Flush first to seal them). It is idempotent.
func (s *Sealer) Stop() {
	s.stop.Do(func() {
		s.cancel()
		<-s.done
	})
}

// LogLimits says what may remove messages from the head of the event log.
type LogLimits struct {
	FirstSeq, LastSeq uint64
	MaxAge            time.Duration
	MaxBytes          int64
	MaxMsgs           int64
}

// HeadMayAge reports whether the stream's limits remove old messages.
func (l LogLimits) HeadMayAge() bool { return l.MaxAge > 0 || l.MaxBytes > 0 || l.MaxMsgs > 0 }

// VerifyLog reads the whole event log and recomputes its seal chain
// (events.Verifier), checking anchor too when it is set. It reads through
// an ordered consumer, as the sealer does, so that both hash the same
// stored messages.
func (b *Bus) VerifyLog(ctx context.Context, anchor events.Anchor) (events.VerifyReport, LogLimits, error) {
	info, err := b.events.Info(ctx)
	if err != nil {
		return events.VerifyReport{}, LogLimits{}, fmt.Errorf("reading event log: %w", err)
	}
	lim := LogLimits{
		FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq,
		MaxAge: info.Config.MaxAge, MaxBytes: info.Config.MaxBytes, MaxMsgs: info.Config.MaxMsgs,
	}
	v := events.Verifier{StreamFirst: lim.FirstSeq, HeadMayAge: lim.HeadMayAge(), Anchor: anchor}
	if info.State.Msgs == 0 {
		return v.Report(), lim, nil
	}
	err = b.readMessages(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}, lim.LastSeq,
		func(seq uint64, m jetstream.Msg) error {
			if seq >= lim.FirstSeq { // else the stream's first moved back: cannot be
				v.Add(seq, m.Subject(), events.Headers(m.Headers()), m.Data())
			}
			return nil
		})
	if err != nil {
		return events.VerifyReport{}, lim, err
	}
	return v.Report(), lim, nil
}
