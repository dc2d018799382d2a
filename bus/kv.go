package bus

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The key-value store's wire format, where the bus writes or reads a
// bucket's messages itself rather than through nats.go's KeyValue: a
// delete is a message on the key's subject with this header, kept as the
// key's latest revision.
const (
	kvOperationHeader = "KV-Operation"
	kvOperationDelete = "DEL"
)

// kvDelete deletes key of bucket as nats.go's KeyValue.Delete does (the
// same message), and returns the revision of the delete marker, which
// Delete does not say. last, when not 0, is the revision key must be at
// (jetstream.LastRevision): another write since fails with an error that
// matches jetstream.ErrKeyExists.
func (b *Bus) kvDelete(ctx context.Context, bucket, key string, last uint64) (uint64, error) {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Header.Set(kvOperationHeader, kvOperationDelete)
	var opts []jetstream.PublishOpt
	if last != 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(last))
	}
	ack, err := b.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}
