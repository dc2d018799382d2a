package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/internal/testkit"
)

// status and plugins only read: pointed at a NATS server that is not
// qtasksd's (a careless --nats-url), they say so and leave it as it was.
// They used to provision qtasks' streams and buckets on it.
func TestReadCommandsProvisionNothing(t *testing.T) {
	t.Parallel()
	url, streams := testkit.ForeignJetStream(t)
	dir := t.TempDir()
	for _, args := range [][]string{{"status", "some-task"}, {"plugins"}} {
		code, out := runCmd(t, dir, append(args, "--nats-url", url)...)
		require.Equal(t, exitFailure, code, "%v: %s", args, out)
		require.Contains(t, out, "no qtasks streams", args)
	}
	require.Empty(t, streams(), "nothing was provisioned")
}
