package main

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// status and plugins only read: pointed at a NATS server that is not
// qtasksd's (a careless --nats-url), they say so and leave it as it was.
// They used to provision qtasks' streams and buckets on it.
func TestReadCommandsProvisionNothing(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(srv.Shutdown)
	require.True(t, srv.ReadyForConnections(waitLimit))
	url := srv.ClientURL()
	dir := t.TempDir()

	for _, args := range [][]string{{"status", "some-task"}, {"plugins"}} {
		code, out := runCmd(t, dir, append(args, "--nats-url", url)...)
		require.Equal(t, exitFailure, code, "%v: %s", args, out)
		require.Contains(t, out, "no qtasks streams", args)
	}

	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	names := js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	require.NoError(t, names.Err())
	require.Empty(t, streams, "nothing was provisioned")
}
