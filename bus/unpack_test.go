package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

type pos struct {
	seq   uint64
	index int
	id    string
}

func positions(ss []bus.Stored) []pos {
	out := make([]pos, 0, len(ss))
	for _, s := range ss {
		out = append(out, pos{s.Seq, s.Index, s.Event.ID})
	}
	return out
}

// The one log reader yields the facts of a log that holds facts alone and
// packed in phase messages, in stream order, each with the sequence of its
// message and its index there, and filters them by the subject they have
// alone: a reader of one trigger's facts finds them however they travelled.
func TestReadLogUnpacksPhaseMessages(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	add := bustest.Fact("a", events.StorageAdd, 0, `{"uuid":"a"}`)
	g1 := bustest.Fact("a", events.StorageGet, 0, `1`)
	bg := bustest.Fact("a", events.BrokerGet, 0, `2`)
	g2 := bustest.Fact("a", events.StorageGet, 1, `3`)
	other := bustest.Fact("b", events.StorageGet, 0, `4`)
	s1 := bustest.PublishFact(t, b, "default", add)
	s2 := bustest.PublishPhase(t, b, events.PhaseIntake, "default", g1, bg, g2)
	s3 := bustest.PublishFact(t, b, "default", other)
	s4 := bustest.PublishPhase(t, b, events.PhaseIntake, "other", bustest.Fact("c", events.StorageGet, 0, `5`))

	all := bustest.Events(t, b)
	require.Equal(t, []pos{{s1, 0, add.ID}, {s2, 0, g1.ID}, {s2, 1, bg.ID}, {s2, 2, g2.ID}, {s3, 0, other.ID}, {s4, 0, "c:1:1:storage_get:0"}}, positions(all))
	for _, s := range all {
		require.NoError(t, s.Err)
	}
	require.Equal(t, events.FactSubject(events.BrokerGet, "default"), all[2].Subject, "a packed fact has the subject it has alone")
	require.Equal(t, events.PhaseSubject(events.PhaseIntake, "default"), all[2].Phase)
	require.True(t, all[2].Packed())
	require.False(t, all[0].Packed())
	require.True(t, all[0].Last() && !all[1].Last() && all[3].Last())
	require.Equal(t, g1.Data, all[1].Event.Data, "decoded as alone")

	gets := bustest.Events(t, b, events.FactSubject(events.StorageGet, "*"))
	require.Equal(t, []pos{{s2, 0, g1.ID}, {s2, 2, g2.ID}, {s3, 0, other.ID}, {s4, 0, "c:1:1:storage_get:0"}}, positions(gets))
	require.Equal(t, []pos{{s2, 0, g1.ID}, {s2, 2, g2.ID}, {s3, 0, other.ID}},
		positions(bustest.Events(t, b, events.FactSubject(events.StorageGet, "default"))))
	// A filter that overlaps the phase subjects only in part is read whole
	// and filtered here (the server refuses overlapping filters).
	require.Equal(t, []pos{{s2, 1, bg.ID}}, positions(bustest.Events(t, b, "qtasks.*.broker_get.default")))
	// Filters that cannot match a fact read no phase message.
	require.Empty(t, bustest.Events(t, b, events.SubjectDead+".>"))
	// A reader of everything sees the same as a reader of qtasks.>.
	require.Equal(t, positions(all), positions(bustest.Events(t, b, "qtasks.>")))

	// From a sequence: the message there and after, whole.
	var from []bus.Stored
	require.NoError(t, b.ReadLog(context.Background(), s2, nil, func(s bus.Stored) error { from = append(from, s); return nil }))
	require.Equal(t, positions(all[1:]), positions(from))

	// A task's events, packed or not.
	var ofA []bus.Stored
	require.NoError(t, b.TaskEvents(context.Background(), "a", time.Time{}, []string{events.FactSubject(events.StorageGet, "*")},
		func(s bus.Stored) error { ofA = append(ofA, s); return nil }))
	require.Equal(t, []pos{{s2, 0, g1.ID}, {s2, 2, g2.ID}}, positions(ofA))

	// By sequence.
	ss, err := b.Message(context.Background(), s2, "")
	require.NoError(t, err)
	require.Equal(t, positions(all[1:4]), positions(ss))
	one, err := b.Event(context.Background(), s1)
	require.NoError(t, err)
	require.Equal(t, add.ID, one.Event.ID)
	packed, err := b.Event(context.Background(), s2)
	require.NoError(t, err)
	require.ErrorIs(t, packed.Err, events.ErrInvalidEvent, "a phase message is not one event")
	_, err = b.Message(context.Background(), s4+1, "")
	require.ErrorIs(t, err, bus.ErrNoMessage)
}

// A phase message that is not a batch of facts is one event in error, read
// whole or not at all.
func TestUnpackBadPhaseMessages(t *testing.T) {
	t.Parallel()
	good, err := events.EncodeBatch([]events.Event{bustest.Fact("a", events.StorageGet, 0, `1`)})
	require.NoError(t, err)
	inv := events.Event{
		ID: "dead:x:1", Source: "qtasks/test", Type: events.TypeDeadLetter, Time: time.Now(),
		DataContentType: events.ContentTypeJSON, Data: []byte(`{}`), Plugin: "x",
	}
	invocation, err := events.EncodeBatch([]events.Event{bustest.Fact("a", events.BrokerGet, 0, `1`), inv})
	require.NoError(t, err)
	subj := events.PhaseSubject(events.PhaseIntake, "default")
	batch := nats.Header{"Content-Type": {events.ContentTypeBatch}}
	for name, c := range map[string]struct {
		subject string
		h       nats.Header
		data    []byte
	}{
		"no content type":              {subj, nats.Header{}, good},
		"another type":                 {subj, nats.Header{"Content-Type": {events.ContentTypeJSON}}, good},
		"not JSON":                     {subj, batch, []byte(`[{`)},
		"not a fact":                   {subj, batch, invocation},
		"not a phase":                  {"qtasks.phase.nophase.default", batch, good},
		"no queue":                     {"qtasks.phase.intake", batch, good},
		"a batch on a trigger subject": {events.FactSubject(events.StorageGet, "default"), batch, good},
	} {
		ss := bus.Unpack(7, c.subject, events.Headers(c.h), c.data)
		require.Len(t, ss, 1, name)
		require.Error(t, ss[0].Err, name)
		require.Equal(t, uint64(7), ss[0].Seq, name)
		require.Equal(t, c.subject, ss[0].Subject, name)
	}
	ss := bus.Unpack(7, subj, events.Headers(batch), good)
	require.Len(t, ss, 1)
	require.NoError(t, ss[0].Err)
	require.ErrorIs(t, bus.Unpack(1, subj, nil, good)[0].Err, events.ErrInvalidEvent)
}
