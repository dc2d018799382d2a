package bus

import (
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/qtasks/qtasks-go/events"
)

// TravelsAlone is the one home of the rule that decides, per trigger,
// whether a fact is written alone, in binary mode on its trigger subject
// (qtasks.trigger.<trigger>.<queue>) exactly as in protocol 2, or packed
// with the other facts of its phase in one message on the phase subject
// (events.PhaseSubject; issue #15, design (f), docs/ARCHITECTURE.md "The
// exchange"). A trigger's facts travel alone when:
//
//   - it is a lifecycle trigger (events catalog): what RecordLifecycle
//     keeps, read alone by every reader of protocol 2;
//   - a registered observer named for it, or a global one, does not read
//     batches (Registry.Alone): it sees exactly protocol 2 from its
//     registration on;
//   - it is in Config.AloneTriggers, or a plugin user's grant (Config.Users)
//     lets an observer read it by name: such an observer may not read phase
//     messages, and finds the trigger's whole history alone from the log's
//     start, registered or not.
//
// The writer (the executor) sends two more kinds of fact alone whatever
// this says: the final fact (it is deduplicated, docs/PROTOCOL.md §5) and a
// fact whose encoding a batch refuses (events.BatchWriter.Add). Process
// facts, keyed by node id, have no phase and travel alone too.
func (b *Bus) TravelsAlone(trigger string) bool {
	if t, ok := events.Lookup(trigger); ok && t.Lifecycle {
		return true
	}
	if b.alone[trigger] {
		return true
	}
	return b.reg.Alone(trigger)
}

// GrantedObserverTriggers lists the triggers that users' grants let an
// observer read by name (events.PluginGrant with mode observer and
// triggers), sorted, each once: what an executor must keep alone for them
// (TravelsAlone). A global observer's grant names none: it reads phase
// messages.
func GrantedObserverTriggers(users []User) []string {
	var out []string
	for _, u := range users {
		if g := u.Grant; g != nil && g.Mode == events.ModeObserver {
			out = append(out, g.Triggers...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// aloneSet is the fixed part of TravelsAlone's rule: Config.AloneTriggers
// and the observer grants of Config.Users.
func aloneSet(cfg *Config) map[string]bool {
	m := make(map[string]bool)
	for _, t := range cfg.AloneTriggers {
		m[t] = true
	}
	for _, t := range GrantedObserverTriggers(cfg.Users) {
		m[t] = true
	}
	return m
}

// PublishPhase writes the packed facts of one phase of a task in queue, a
// batch as events.BatchWriter writes it, to the phase subject without
// waiting; the future reports the ack, as PublishAsync's does. The message
// carries Content-Type events.ContentTypeBatch and no Nats-Msg-Id: facts are
// published once (docs/PROTOCOL.md §5), and each fact keeps its own ce-id
// inside the batch. batch is the message's from then on.
func (b *Bus) PublishPhase(phase events.Phase, queue string, batch []byte) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(events.PhaseSubject(phase, queue))
	m.Header[events.HeaderContentType] = []string{events.ContentTypeBatch}
	m.Data = batch
	f, err := b.apub.publish(m)
	if err != nil {
		return nil, err
	}
	// A future of this bus, as PublishAsync's: Acks.Wait sends a phase
	// message again when the server answers that nobody stored it.
	return &future{PubAckFuture: f, b: b}, nil
}
