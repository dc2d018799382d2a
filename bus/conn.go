package bus

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// connStats counts what happened to the bus's connection, for logs and
// metrics (qtasksd's qtasks_nats_*).
type connStats struct {
	disconnects atomic.Uint64
	reconnects  atomic.Uint64
	downSince   atomic.Int64 // unix nanoseconds of the last disconnect; 0 when connected
}

// ConnStats is a snapshot of the connection's history.
type ConnStats struct {
	// Connected reports whether the connection is up now.
	Connected bool
	// Disconnects and Reconnects count since Open.
	Disconnects, Reconnects uint64
}

// ConnStats returns the connection's state and history.
func (b *Bus) ConnStats() ConnStats {
	return ConnStats{
		Connected:   b.nc != nil && b.nc.IsConnected(),
		Disconnects: b.conn.disconnects.Load(),
		Reconnects:  b.conn.reconnects.Load(),
	}
}

// connOptions log every change of the connection and count it.
//
// The reconnect buffer is off (nats.ReconnectBufSize(-1)): a publish while
// the connection is down fails at once (nats.ErrReconnectBufExceeded)
// instead of waiting in a buffer to be sent after the reconnect, maybe long
// after its caller gave up: a KV create sent that way made a task record
// that nobody would ever queue, and a fact of a run already abandoned.
func (b *Bus) connOptions() []nats.Option {
	return []nats.Option{
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() || nc.IsDraining() {
				return // Close, not a fault
			}
			b.conn.disconnects.Add(1)
			b.conn.downSince.Store(time.Now().UnixNano())
			b.log.Warn("NATS connection lost; reconnecting", "url", nc.ConnectedUrl(), "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.conn.reconnects.Add(1)
			down := time.Duration(0)
			if since := b.conn.downSince.Swap(0); since != 0 {
				down = time.Since(time.Unix(0, since))
			}
			b.log.Info("NATS connection back", "url", nc.ConnectedUrl(), "down", down.Round(time.Millisecond).String())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				b.log.Warn("NATS connection closed", "err", err)
			}
		}),
	}
}

// ErrPermissionDenied is Open's error when the server let the user in but
// refused what the bus needs (JetStream's API, a stream, a bucket).
var ErrPermissionDenied = errors.New("permission denied")

// ErrNotReady is the error of Ready when the bus cannot take writes now.
var ErrNotReady = errors.New("bus not ready")

// readyTimeout bounds Ready's questions to JetStream.
const readyTimeout = 2 * time.Second

// Ready reports whether the bus can take a submission now: the connection
// is up and the leaders of the event log, the task queue and the task
// bucket answer (a stream info is answered by its leader; during a leader
// election, or with its replicas out of quorum, it is not). It costs three
// small requests; callers that are polled (/healthz) should cache it.
func (b *Bus) Ready(ctx context.Context) error {
	if b.nc == nil || !b.nc.IsConnected() {
		return fmt.Errorf("%w: not connected to NATS", ErrNotReady)
	}
	if b.events == nil || b.tasks == nil || b.taskKV == nil {
		return nil // a plugin's or read-only bus takes no submissions
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if _, err := b.events.Info(ctx); err != nil {
		return fmt.Errorf("%w: event log %s: %w", ErrNotReady, StreamEvents, err)
	}
	if _, err := b.tasks.Info(ctx); err != nil {
		return fmt.Errorf("%w: task queue %s: %w", ErrNotReady, StreamTasks, err)
	}
	if _, err := b.taskKV.Status(ctx); err != nil {
		return fmt.Errorf("%w: task bucket %s: %w", ErrNotReady, BucketTasks, err)
	}
	return nil
}
