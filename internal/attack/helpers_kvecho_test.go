package attack

import (
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/qtasks/qtasks-go/bus"
	"github.com/qtasks/qtasks-go/bus/bustest"
	"github.com/qtasks/qtasks-go/events"
)

// kvKey is the subject of key in bucket: where a value of the bucket is
// stored.
func kvKey(bucket, key string) string { return "$KV." + bucket + "." + key }

// kvAck has JetStream store, on subject, its publish ack of a patch the
// plugin writes on its own patch subject: a JSON body of the server's
// making ({"stream":...,"seq":...}) and no header. The patch itself is
// stored in the log, as any plugin's junk is.
func kvAck(t *testing.T, nc *nats.Conn, plugin, subject string) {
	t.Helper()
	m := nats.NewMsg(events.SubjectPatch + "." + plugin + ".junk")
	m.Reply = subject
	m.Data = []byte("{}")
	require.NoError(t, nc.PublishMsg(m))
	require.NoError(t, nc.Flush())
}

// kvAPIReply has JetStream store, on subject, its answer to an API request
// the plugin may make: the account's JetStream information, a JSON body.
func kvAPIReply(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	require.NoError(t, nc.PublishRequest("$JS.API.INFO", subject, nil))
	require.NoError(t, nc.Flush())
}

// kvEchoValue has JetStream store, on subject, body as the plugin chose
// it: a direct get's answer to the plugin's read of its own state (echo).
func kvEchoValue(ctx context.Context, t *testing.T, nc *nats.Conn, plugin, subject string, body []byte) {
	t.Helper()
	require.NoError(t, echo(ctx, nc, plugin, "kv", subject, &nats.Msg{Data: body}))
}

// kvLast is the stream sequence of the last message stored on key of
// bucket, 0 when none: the last Nats-Sequence of a direct get's answer
// (an echo stored there has one of its own before it).
func kvLast(ctx context.Context, t *testing.T, b *bus.Bus, bucket, key string) uint64 {
	t.Helper()
	m, err := b.Conn().RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+bucket+"."+kvKey(bucket, key), nil)
	require.NoError(t, err)
	seqs := m.Header.Values(jetstream.SequenceHeader)
	if len(seqs) == 0 {
		return 0
	}
	n, err := strconv.ParseUint(seqs[len(seqs)-1], 10, 64)
	require.NoError(t, err)
	return n
}

// kvForge runs forge, which has the server write on key of bucket, and
// waits until the bucket's stream stored it.
func kvForge(ctx context.Context, t *testing.T, b *bus.Bus, bucket, key string, forge func()) {
	t.Helper()
	before := kvLast(ctx, t, b, bucket, key)
	forge()
	bustest.WaitFor(t, integrityWait, "the forgery stored on "+key, func() bool {
		return kvLast(ctx, t, b, bucket, key) > before
	})
}

// kvCounter is the sum of counter name in reg.
func kvCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
