package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// ConsumerConfig describes a durable consumer of the event log.
type ConsumerConfig struct {
	// Durable is the consumer's name; it survives restarts.
	Durable string
	// Subjects filter the log; several are allowed.
	Subjects []string
	// DeliverNew starts a new consumer at the end of the log instead of its
	// beginning. It has no effect on an existing consumer.
	DeliverNew bool
	// AckWait before redelivery. Defaults to 30 s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message; -1 for no bound.
	// Defaults to 5.
	MaxDeliver int
	// MaxAckPending bounds messages in flight. Defaults to 1000.
	MaxAckPending int
}

// Consumer creates or updates a durable consumer of the event log.
func (b *Bus) Consumer(ctx context.Context, cfg ConsumerConfig) (jetstream.Consumer, error) {
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = 5
	}
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = 1000
	}
	cc := jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     cfg.MaxDeliver,
		MaxAckPending:  cfg.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: cfg.Subjects,
	}
	if cfg.DeliverNew {
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if len(cfg.Subjects) == 1 {
		cc.FilterSubject, cc.FilterSubjects = cfg.Subjects[0], nil
	}
	// DeliverPolicy cannot change on an existing consumer; keep what it has.
	if c, err := b.js.Consumer(ctx, StreamEvents, cfg.Durable); err == nil {
		cc.DeliverPolicy = c.CachedInfo().Config.DeliverPolicy
		cc.OptStartSeq = c.CachedInfo().Config.OptStartSeq
	}
	c, err := b.js.CreateOrUpdateConsumer(ctx, StreamEvents, cc)
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", cfg.Durable, err)
	}
	return c, nil
}

// DeadLetter records that a message could not be processed: JetStream has
// no dead-letter queue, so the log gets an event that points at the stream
// sequence and says why. A dead letter is never dead-lettered (dl.Subject
// a dead-letter subject): a consumer of dead letters that never acks would
// otherwise make each one produce another, forever. That case is logged
// and DeadLetter returns nil: the caller drops the message as it would
// have after recording it.
func (b *Bus) DeadLetter(ctx context.Context, plugin, source string, dl events.DeadLetter) error {
	if events.IsDeadSubject(dl.Subject) {
		b.log.WarnContext(ctx, "not dead-lettering a dead letter", "plugin", plugin, "seq", dl.Sequence, "subject", dl.Subject, "reason", dl.Reason)
		return nil
	}
	data, err := jsonMarshal(dl)
	if err != nil {
		return err
	}
	ev := events.Event{
		ID:              fmt.Sprintf("dead:%s:%s:%d", plugin, dl.Stream, dl.Sequence),
		Source:          source,
		Type:            events.TypeDeadLetter,
		Time:            time.Now(),
		DataContentType: events.ContentTypeJSON,
		Data:            data,
		Plugin:          plugin,
	}
	_, err = b.PublishOwn(ctx, source, events.DeadSubject(plugin), ev.ID, &ev)
	return err
}

// EventStream returns the event log stream handle.
func (b *Bus) EventStream() jetstream.Stream { return b.events }

// TaskStream is the work-queue stream of task messages (StreamTasks).
func (b *Bus) TaskStream() jetstream.Stream { return b.tasks }
