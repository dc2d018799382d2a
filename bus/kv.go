package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// The key-value store's wire format, where the bus writes or reads a
// bucket's messages itself rather than through nats.go's KeyValue: a
// delete is a message on the key's subject with this header, kept as the
// key's latest revision.
const (
	kvOperationHeader = "KV-Operation"
	kvOperationDelete = "DEL"
)

// kvDelete deletes key of bucket as nats.go's KeyValue.Delete does (the
// same message), and returns the revision of the delete marker, which
// Delete does not say. last, when not 0, is the revision key must be at
// (jetstream.LastRevision): another write since fails with an error that
// matches jetstream.ErrKeyExists.
func (b *Bus) kvDelete(ctx context.Context, bucket, key string, last uint64) (uint64, error) {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Header.Set(kvOperationHeader, kvOperationDelete)
	var opts []jetstream.PublishOpt
	if last != 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(last))
	}
	ack, err := b.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// A bucket's readers take only what a writer of that bucket wrote. NATS
// checks the subject a client publishes on, never its reply subject, and
// JetStream sends its answers (publish acks, API replies, direct gets) to
// the reply subject the requester chose: a plugin with its least rights can
// have the server write such an answer on any key of any bucket, where the
// bucket's stream stores it (docs/ARCHITECTURE.md, "Integrity of the log").
// A direct get's answer carries the stored message, body of the plugin's
// choosing, and always starts with JetStream's Nats-Stream header, which no
// writer of a bucket sets: kvEcho refuses it. The other answers are JSON
// bodies of the server's making: each bucket's reader refuses a value that
// is not one of that bucket's (a mark without its by and at, a record that
// is not the key's task, a registration that does not check).

// errKVEcho is a bucket value that JetStream wrote as an answer to a direct
// get (kvEcho).
var errKVEcho = errors.New("the value is JetStream's answer to a direct get (a " + events.HeaderEchoStream +
	" header), sent to a reply subject its requester chose, not a value anyone wrote")

// kvEcho refuses a bucket message stored with a Nats-Stream header. h are
// the headers as stored (a watch's delivery, the message-get API) when
// direct is false; as a direct get answers them when direct is true: that
// answer adds a Nats-Stream header after the stored ones, so a second one
// was stored.
func kvEcho(h nats.Header, direct bool) error {
	n := len(h[events.HeaderEchoStream])
	if direct {
		n--
	}
	if n > 0 {
		return errKVEcho
	}
	return nil
}

// kvMsg is one message of a bucket's stream as it was stored: a key's
// value, or a delete or purge marker (Deleted), with its headers.
type kvMsg struct {
	Key      string
	Value    []byte
	Revision uint64
	Deleted  bool
	Header   nats.Header
	// Stored is when the server stored it; zero when a direct get said it
	// in stamp, which storedAt parses (only a limit's reader needs it: a
	// task record's, on every task a worker takes, does not).
	Stored time.Time
	stamp  string
	// direct says Header is a direct get's answer (kvEcho).
	direct bool
}

// storedAt is when the server stored m.
func (m *kvMsg) storedAt() time.Time {
	if m.Stored.IsZero() && m.stamp != "" {
		t, _ := time.Parse(time.RFC3339Nano, m.stamp)
		return t
	}
	return m.Stored
}

// echo refuses m if JetStream wrote it as an answer to a direct get
// (kvEcho).
func (m *kvMsg) echo() error { return kvEcho(m.Header, m.direct) }

// watchKV sends the latest message of each key of bucket that matches keys
// (a key pattern, ">" for all), then every new message, on the channel it
// returns, until ctx ends; a nil marks the end of the messages present at
// the start. It is nats.go's KeyValue watch (an ordered consumer of the
// bucket's stream, last message per subject) with the messages' headers,
// which nats.go's entries leave out and kvEcho needs. The channel is never
// closed: its reader stops on ctx.
func (b *Bus) watchKV(ctx context.Context, bucket, keys string) (<-chan *kvMsg, error) {
	js, err := b.nc.JetStream()
	if err != nil {
		return nil, err
	}
	prefix := "$KV." + bucket + "."
	out := make(chan *kvMsg, 256)
	send := func(m *kvMsg) {
		select {
		case out <- m:
		case <-ctx.Done():
		}
	}
	var (
		mu                  sync.Mutex
		initDone            bool
		received, initCount uint64
	)
	update := func(m *nats.Msg) {
		meta, err := m.Metadata()
		if err != nil || len(m.Subject) <= len(prefix) {
			return
		}
		op := m.Header.Get(kvOperationHeader)
		send(&kvMsg{
			Key: m.Subject[len(prefix):], Value: m.Data, Revision: meta.Sequence.Stream, Stored: meta.Timestamp,
			Deleted: op == kvOperationDelete || op == "PURGE", Header: m.Header,
		})
		mu.Lock()
		defer mu.Unlock()
		if !initDone {
			received++
			if received >= initCount || meta.NumPending == 0 {
				initDone = true
				send(nil)
			}
		}
	}
	// As nats.go's watch: the subscription is made under the lock, so that
	// no delivery reads the initial count before it is set.
	mu.Lock()
	defer mu.Unlock()
	sub, err := js.Subscribe(prefix+keys, update, nats.BindStream("KV_"+bucket), nats.OrderedConsumer(), nats.DeliverLastPerSubject())
	if err != nil {
		return nil, err
	}
	if initCount, err = sub.InitialConsumerPending(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	if initCount == 0 {
		initDone = true
		out <- nil // the channel is empty: this does not block
	}
	go func() {
		<-ctx.Done()
		_ = sub.Unsubscribe()
	}()
	return out, nil
}

// kvGet reads the latest message of key in bucket as stored, headers
// included (nats.go's KeyValue.Get leaves them out, and takes an echo's
// stored Nats-Sequence for the revision): the caller refuses an echo
// (kvMsg.echo) where it reads a value, and may overwrite one. It is nil,
// with no error, when the key has no message. A delete marker is a kvMsg
// with Deleted set.
func (b *Bus) kvGet(ctx context.Context, bucket, key string) (*kvMsg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.PublishTimeout)
		defer cancel()
	}
	subject := "$KV." + bucket + "." + key
	m, err := b.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+bucket+"."+subject, nil)
	var (
		h      nats.Header
		data   []byte
		seq    uint64
		stored time.Time
		stamp  string
		direct = true
	)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		// A bucket that allows no direct gets: the message-get API.
		s, err := b.js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			return nil, err
		}
		raw, err := s.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil //nolint:nilnil // documented: nil when the key has no message
		}
		if err != nil {
			return nil, err
		}
		h, data, seq, stored, direct = raw.Header, raw.Data, raw.Sequence, raw.Time, s.CachedInfo().Config.AllowDirect
	case err != nil:
		return nil, err
	default:
		if len(m.Data) == 0 {
			if st := m.Header.Get("Status"); st == "404" {
				return nil, nil //nolint:nilnil // documented: nil when the key has no message
			} else if st != "" {
				return nil, fmt.Errorf("status %s %s", st, m.Header.Get("Description"))
			}
		}
		// The server's own Nats-Sequence comes last: a stored echo's
		// comes first, and kvEcho refuses it below.
		seqs := m.Header.Values(jetstream.SequenceHeader)
		if len(seqs) == 0 {
			return nil, errors.New("a direct get's answer without its sequence")
		}
		if seq, err = strconv.ParseUint(seqs[len(seqs)-1], 10, 64); err != nil {
			return nil, fmt.Errorf("the sequence of a direct get's answer: %w", err)
		}
		if ts := m.Header.Values(jetstream.TimeStampHeaer); len(ts) > 0 {
			stamp = ts[len(ts)-1]
		}
		h, data = m.Header, m.Data
	}
	op := h.Get(kvOperationHeader)
	return &kvMsg{
		Key: key, Value: data, Revision: seq, Header: h, Stored: stored, stamp: stamp, direct: direct,
		Deleted: op == kvOperationDelete || op == "PURGE" || h.Get(jetstream.MarkerReasonHeader) != "",
	}, nil
}

// LimitEntry is a value of the limits bucket (BucketLimits) as stored.
type LimitEntry struct {
	Value    []byte
	Revision uint64
	// Stored is when the server stored it.
	Stored time.Time
	// Refused is not nil when the value is a direct get's echo (kvEcho):
	// no executor wrote it, whatever it says.
	Refused error
}

// GetLimit reads key of the limits bucket: nil when it has no value. Only
// executors use it (executor's limits), and they read a value that is
// refused, or not one they write, as one written when it was stored: a
// lease or a rate cell no later than any an executor could have written
// then (a plugin can have the server write its answers there, kv.go).
func (b *Bus) GetLimit(ctx context.Context, key string) (*LimitEntry, error) {
	if b.limKV == nil {
		return nil, ErrStateUnavailable
	}
	m, err := b.kvGet(ctx, BucketLimits, key)
	if err != nil {
		return nil, fmt.Errorf("reading limit %s: %w", key, err)
	}
	if m == nil || m.Deleted {
		return nil, nil //nolint:nilnil // documented: nil when the key has no value
	}
	return &LimitEntry{Value: m.Value, Revision: m.Revision, Stored: m.storedAt(), Refused: m.echo()}, nil
}
