package projections_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// Seals interleaved with a scenario's events: the live projection skips
// them (none rejected), a rebuild equals it, and a message on a seal
// subject that is not a valid seal is rejected with its reason.
func TestSealsInTheLog(t *testing.T) {
	t.Parallel()
	b := bustest.Open(t, nil)
	path := filepath.Join(t.TempDir(), "live.db")
	p := startProjector(t, b, path, nil)
	sealer, err := b.StartSealer(ctxFor(t), bus.SealerConfig{Node: "n1", Every: 7, Interval: 10 * time.Millisecond, Logger: bustest.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(sealer.Stop)

	s := runScenario(t, b)
	s.stop(t)
	require.NoError(t, sealer.Flush(ctxFor(t)))
	forged := events.Event{ID: "forged", Source: "qtasks/evil", Type: events.TypeSeal, DataContentType: events.ContentTypeJSON, Data: []byte(`{"version":1}`)}
	ack, err := b.Publish(ctxFor(t), events.SealSubject("evil"), "", &forged)
	require.NoError(t, err)
	require.NoError(t, p.CatchUp(ctxFor(t)))
	require.Equal(t, logEnd(t, b), p.LastSeq())

	live := openDB(t, path, true)
	requireEqual(t, live, build(t, b, 0))
	rej, err := live.RejectedEvents(ctxFor(t), 0, 1000)
	require.NoError(t, err)
	require.Len(t, rej, 1, "%+v", rej)
	require.Equal(t, ack.Sequence, rej[0].Seq)
	require.True(t, strings.HasPrefix(rej[0].Reason, "invalid event: seal: range"), rej[0].Reason)

	r, _, err := b.VerifyLog(ctxFor(t), events.Anchor{})
	require.NoError(t, err)
	require.Len(t, r.Findings, 1, "%+v", r.Findings)
	require.Equal(t, ack.Sequence, r.Findings[0].Seq)
	require.Positive(t, r.Seals)
}
