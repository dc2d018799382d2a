package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/events"
	"github.com/qtasks/qtasks-go/projections"
)

func sealScenario(t *testing.T, b *bus.Bus) {
	t.Helper()
	s, err := b.StartSealer(ctxFor(t), bus.SealerConfig{Node: "test", Every: 40, Interval: time.Hour})
	require.NoError(t, err)
	defer s.Stop()
	require.NoError(t, s.Flush(ctxFor(t)))
}

func verifyJSON(t *testing.T, stdout string) verifyOutput {
	t.Helper()
	var o verifyOutput
	require.NoError(t, json.Unmarshal([]byte(stdout), &o), stdout)
	return o
}

func TestVerify(t *testing.T) {
	t.Parallel()
	b := scenarioBus(t)
	url := b.ClientURL()

	// Not sealed yet: nothing is proven.
	code, stdout, stderr := run(t, "verify", "--nats-url", url, "--json")
	require.Equal(t, ExitUnproven, code, stderr)
	require.False(t, verifyJSON(t, stdout).OK)

	sealScenario(t, b)
	code, stdout, stderr = run(t, "verify", "--nats-url", url, "--json")
	require.Equal(t, ExitOK, code, stderr)
	o := verifyJSON(t, stdout)
	require.True(t, o.OK)
	require.Empty(t, o.Findings)
	require.Equal(t, uint64(1), o.Start)
	require.Positive(t, o.Seals)
	anchor := fmt.Sprintf("%d:%s", o.LastSeal, o.LastSealDigest)

	code, stdout, _ = run(t, "verify", "--nats-url", url)
	require.Equal(t, ExitOK, code)
	require.Contains(t, stdout, "ok: nothing sealed was deleted, altered or inserted")
	require.Contains(t, stdout, "anchor: "+anchor)

	// The projection skips seals: none is rejected, and a rebuild equals
	// a projection built a batch at a time.
	db := build(t, b, 0)
	rej, err := db.RejectedEvents(ctxFor(t), 0, 1000)
	require.NoError(t, err)
	for _, r := range rej {
		require.NotEqual(t, events.TypeSeal, r.Type, "%+v", r)
	}
	path := filepath.Join(t.TempDir(), "live.db")
	live, err := projections.Open(ctxFor(t), path, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = live.Close() })
	var batch []bus.Stored
	require.NoError(t, b.ReadLog(ctxFor(t), 1, nil, func(s bus.Stored) error {
		batch = append(batch, s)
		if len(batch) == 7 {
			_, err := live.Apply(ctxFor(t), batch)
			batch = batch[:0]
			return err
		}
		return nil
	}))
	_, err = live.Apply(ctxFor(t), batch)
	require.NoError(t, err)
	requireEqual(t, db, live)

	// A fact deleted: exit 6, its sequence first.
	st, err := b.JetStream().Stream(ctxFor(t), bus.StreamEvents)
	require.NoError(t, err)
	const victim = 17
	require.NoError(t, st.DeleteMsg(ctxFor(t), victim))
	code, stdout, stderr = run(t, "verify", "--nats-url", url, "--json", "--anchor", anchor)
	require.Equal(t, ExitTampered, code, stderr)
	o = verifyJSON(t, stdout)
	require.False(t, o.OK)
	require.Equal(t, &events.Finding{Seq: victim, Kind: events.FindingDeleted, Seal: o.First.Seal, Detail: "sealed, now absent"}, o.First)
	require.Contains(t, stderr, "first at sequence 17 (deleted)")

	code, stdout, _ = run(t, "verify", "--nats-url", url)
	require.Equal(t, ExitTampered, code)
	require.Contains(t, stdout, "TAMPERED: 1 findings, the first at sequence 17")

	code, _, stderr = run(t, "verify", "--nats-url", url, "--anchor", "12:nothex")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "--anchor")
}
