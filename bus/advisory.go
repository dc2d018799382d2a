package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qtasks/qtasks-go/events"
)

// maxDeliveriesSubject is where JetStream announces that a consumer gave up
// on a message after its MaxDeliver attempts.
const maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + StreamEvents + ".>"

// maxDeliveriesType is the type JetStream gives the advisory.
const maxDeliveriesType = "io.nats.jetstream.advisory.v1.max_deliver"

type maxDeliveriesAdvisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// watchMaxDeliveries turns JetStream's max-deliveries advisories for the
// plugins' consumers into dead-letter events: JetStream has no dead-letter
// queue, and a plugin that crashes on a message never gets to write one
// itself. Every executor process watches; the deterministic message id of
// the dead letter makes the copies one.
//
// Any client can have the server write on this subject (as the answer to a
// request whose reply subject it chose, events.CheckNotEcho), and the dead
// letter blames a plugin: an advisory is taken only without an echo's
// header, of JetStream's type, and for the stream and consumer its subject
// names.
func (b *Bus) watchMaxDeliveries() (*nats.Subscription, error) {
	sub, err := b.nc.Subscribe(maxDeliveriesSubject, func(m *nats.Msg) {
		if err := events.CheckNotEcho(events.Headers(m.Header)); err != nil {
			b.log.Warn("ignoring a max-deliveries advisory that JetStream did not send", "subject", m.Subject, "err", err)
			return
		}
		var a maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &a); err != nil {
			b.log.Warn("ignoring a malformed max-deliveries advisory", "err", err)
			return
		}
		if want := strings.TrimSuffix(maxDeliveriesSubject, ">") + a.Consumer; a.Type != maxDeliveriesType || a.Stream != StreamEvents || m.Subject != want {
			b.log.Warn("ignoring a max-deliveries advisory that JetStream did not send", "subject", m.Subject, "type", a.Type, "stream", a.Stream, "consumer", a.Consumer)
			return
		}
		plugin, ok := strings.CutPrefix(a.Consumer, "plugin-")
		if !ok || !events.ValidToken(plugin) {
			return
		}
		dl := events.DeadLetter{
			Stream: a.Stream, Sequence: a.StreamSeq, Consumer: a.Consumer, Deliveries: a.Deliveries,
			Reason: fmt.Sprintf("not acknowledged after %d deliveries", a.Deliveries),
		}
		if s, err := b.events.GetMsg(context.Background(), a.StreamSeq); err == nil {
			dl.Subject = s.Subject
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.DeadLetter(ctx, plugin, "qtasks/bus", dl); err != nil {
			b.log.Error("recording a dead letter", "plugin", plugin, "seq", a.StreamSeq, "err", err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("watching max-deliveries advisories: %w", err)
	}
	return sub, nil
}
