package executor_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// loggedFact is one fact as the log holds it: alone on its trigger subject
// (Index -1), or element Index of the phase message at Seq.
type loggedFact struct {
	Seq     uint64
	Index   int
	Subject string
	Event   events.Event
}

// rawMessages reads the raw messages of the event log under the trigger
// and phase subjects, in stream order, up to its current end.
func rawMessages(t *testing.T, b *bus.Bus) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		if strings.HasPrefix(m.Subject, events.SubjectTrigger+".") || strings.HasPrefix(m.Subject, events.SubjectPhase+".") {
			out = append(out, m)
		}
	}
	return out
}

// logFacts returns every fact of the log (task facts alone and packed, and
// process facts), in stream order and, within a phase message, in firing
// order. Every phase message must decode whole.
func logFacts(t *testing.T, b *bus.Bus) []loggedFact {
	t.Helper()
	var out []loggedFact
	for _, m := range rawMessages(t, b) {
		if _, _, err := events.ParsePhaseSubject(m.Subject); err == nil {
			require.Equal(t, events.ContentTypeBatch, m.Header.Get(events.HeaderContentType), "seq %d", m.Sequence)
			require.Empty(t, m.Header.Get(events.HeaderMsgID), "a phase message has no Nats-Msg-Id")
			evs, err := events.DecodeBatch(m.Data)
			require.NoError(t, err, "phase message %d", m.Sequence)
			for i, ev := range evs {
				out = append(out, loggedFact{Seq: m.Sequence, Index: i, Subject: m.Subject, Event: ev})
			}
			continue
		}
		ev, err := events.Decode(events.Headers(m.Header), m.Data)
		require.NoError(t, err, "seq %d", m.Sequence)
		out = append(out, loggedFact{Seq: m.Sequence, Index: -1, Subject: m.Subject, Event: ev})
	}
	return out
}

// logFactsOf is logFacts of task (or node) id: the events whose subject
// attribute is id.
func logFactsOf(t *testing.T, b *bus.Bus, id string) []loggedFact {
	t.Helper()
	var out []loggedFact
	for _, f := range logFacts(t, b) {
		if f.Event.Subject == id {
			out = append(out, f)
		}
	}
	return out
}
