package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// qtasksd seals its log while it runs, and seals what it wrote last when
// it stops: after a clean stop, every fact of the log is proven.
func TestDaemonSealsItsLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, url := startDaemon(t, dir, "--seal-interval", "50ms", "--http", "127.0.0.1:0")
	code, out := runCmd(t, dir, "submit", "add", "--kw", `{"a":1,"b":2}`, "--wait", "--nats-url", url)
	require.Equal(t, exitOK, code, out)

	b, err := bus.Open(context.Background(), bus.Config{URL: url, ReadOnly: true})
	require.NoError(t, err)
	bustest.WaitFor(t, waitLimit, "a seal", func() bool {
		r, _, err := b.VerifyLog(context.Background(), events.Anchor{})
		require.NoError(t, err)
		require.Empty(t, r.Findings)
		return r.Start == 1
	})
	b.Close()

	// The metrics say so.
	addr := regexp.MustCompile(`"msg":"HTTP listening","addr":"([^"]+)"`).FindStringSubmatch(p.Output())
	require.Len(t, addr, 2, p.Output())
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr[1]+"/metrics", http.NoBody)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	require.Regexp(t, `(?m)^qtasks_seals_written_total [1-9][0-9]*$`, string(page))
	require.Regexp(t, `(?m)^qtasks_seal_covered_sequence [1-9][0-9]*$`, string(page))
	require.Regexp(t, `(?m)^qtasks_seal_anomalies_total\{kind="fork"\} 0$`, string(page))

	p.Signal(syscall.SIGTERM)
	require.Equal(t, exitOK, p.Wait(waitLimit), p.Output())
	b = bustest.Open(t, &bus.Config{DataDir: filepath.Join(dir, "data"), ReadOnly: true})
	r, lim, err := b.VerifyLog(context.Background(), events.Anchor{})
	require.NoError(t, err)
	require.Empty(t, r.Findings)
	require.Equal(t, uint64(1), r.Start)
	var unsealedFacts int
	require.NoError(t, b.ReadLog(context.Background(), r.Through+1, nil, func(s bus.Stored) error {
		if s.Event.Type != events.TypeSeal {
			unsealedFacts++
		}
		return nil
	}))
	require.Zero(t, unsealedFacts, "through %d of %d", r.Through, lim.LastSeq)
}
