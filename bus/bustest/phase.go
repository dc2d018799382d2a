package bustest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
)

// Fact is a valid fact of trigger for task id (attempt 1, run 1), the n-th
// firing of trigger in its run, with input as its data's input.
func Fact(id, trigger string, n int, input string) events.Event {
	data, err := (&events.Fact{Input: json.RawMessage(input)}).AppendJSON(nil)
	if err != nil {
		panic(err)
	}
	return events.Event{
		ID: events.FactMsgID(id, 1, 1, trigger, n), Source: "qtasks/test", Type: events.TypeTriggerPrefix + trigger,
		Time: time.Now().UTC(), DataContentType: events.ContentTypeJSON, Data: data, Trigger: trigger,
		Attempt: 1, Run: 1, Subject: id, TaskID: id, TaskName: "t",
	}
}

// PublishFact writes ev alone on its trigger subject of queue, as protocol
// 2 does, and returns its stream sequence.
func PublishFact(tb testing.TB, b *bus.Bus, queue string, ev events.Event) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := b.Publish(ctx, events.FactSubject(ev.Trigger, queue), "", &ev)
	if err != nil {
		tb.Fatalf("publishing a fact: %v", err)
	}
	return ack.Sequence
}

// PublishPhase writes evs packed in one phase message of queue, as the
// executor does (events.PhaseSubject, events.ContentTypeBatch, no
// Nats-Msg-Id), and returns its stream sequence.
func PublishPhase(tb testing.TB, b *bus.Bus, phase events.Phase, queue string, evs ...events.Event) uint64 {
	tb.Helper()
	data, err := events.EncodeBatch(evs)
	if err != nil {
		tb.Fatalf("encoding a phase message: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := &nats.Msg{Subject: events.PhaseSubject(phase, queue), Header: nats.Header{}, Data: data}
	m.Header.Set("Content-Type", events.ContentTypeBatch)
	ack, err := b.JetStream().PublishMsg(ctx, m)
	if err != nil {
		tb.Fatalf("publishing a phase message: %v", err)
	}
	return ack.Sequence
}
